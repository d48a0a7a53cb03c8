//! A worktree made by worktree-core is what `git worktree add` of the same
//! commit makes, byte for byte (contents, modes, symlinks), and clean, for
//! trees carrying what changes a checkout: eol attributes and settings,
//! `ident`, `working-tree-encoding`, filter drivers (git-lfs included),
//! submodules, sparse-checkout patterns, very deep and long paths.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, Error};

use crate::{open, status};

/// Everything under `dir` but its `.git` file: each path with its kind,
/// executable bit and contents (or link target).
fn snapshot(dir: &Path) -> TestResult<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            let relative = path.strip_prefix(dir)?.to_owned();
            // The link to the repository (also a submodule's) differs.
            if relative.file_name() == Some(std::ffi::OsStr::new(".git")) {
                continue;
            }
            let metadata = std::fs::symlink_metadata(&path)?;
            let value = if metadata.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path)?.display())
            } else if metadata.is_dir() {
                pending.push(path);
                "dir".to_owned()
            } else {
                let exec = metadata.permissions().mode() & 0o111 != 0;
                format!("file exec={exec} {:?}", std::fs::read(&path)?)
            };
            out.insert(relative, value);
        }
    }
    Ok(out)
}

/// Creates worktree `fidelity-<id>` (detached at `HEAD`) and `git worktree
/// add`s the same commit elsewhere; asserts both are identical and that
/// ours is clean to git and to worktree-core. Returns ours.
fn compare_with_git(repo: &GitRepo, id: &str) -> TestResult<PathBuf> {
    let theirs_dir = tempfile::Builder::new()
        .prefix("isolane-git-worktree-")
        .tempdir()?;
    let theirs = theirs_dir.path().join(id);
    test_support::git(
        repo.path(),
        [
            "worktree",
            "add",
            "--quiet",
            "--detach",
            theirs.to_str().ok_or("path")?,
            "HEAD",
        ],
    )?;
    let worktrees = open(repo)?;
    let mut request = CreateRequest::new("fidelity", id);
    request.detach = true;
    let ours = worktrees.create(&request)?;
    let (ours_snapshot, theirs_snapshot) = (snapshot(&ours.path)?, snapshot(&theirs)?);
    assert!(!ours_snapshot.is_empty());
    for (path, value) in &theirs_snapshot {
        assert_eq!(
            ours_snapshot.get(path),
            Some(value),
            "{id}: {} differs from git's checkout",
            path.display()
        );
    }
    assert_eq!(ours_snapshot, theirs_snapshot, "{id}: extra paths");
    assert_eq!(status(&ours.path)?, "", "{id}: git status");
    let info = worktrees
        .list()?
        .into_iter()
        .find(|w| w.path == ours.path)
        .ok_or("not listed")?;
    assert_eq!(
        info.dirty_files,
        Vec::<String>::new(),
        "{id}: worktree-core status"
    );
    test_support::git(
        repo.path(),
        [
            "worktree",
            "remove",
            "--force",
            theirs.to_str().ok_or("path")?,
        ],
    )?;
    Ok(ours.path)
}

/// A repository whose `files` are committed as they are (their blobs keep
/// their bytes), then `attributes` as the root `.gitattributes` alone (so
/// that `git add` does not convert the files again), with `config` set.
fn fixture(
    files: &[(&str, &str)],
    attributes: &str,
    config: &[(&str, &str)],
) -> TestResult<GitRepo> {
    let repo = GitRepo::new()?;
    for (path, content) in files {
        repo.write(path, content)?;
    }
    repo.commit_all("blobs")?;
    repo.write(".gitattributes", attributes)?;
    repo.git(["add", ".gitattributes"])?;
    repo.git(["commit", "--quiet", "-m", "attributes"])?;
    for (key, value) in config {
        repo.git(["config", key, value])?;
    }
    Ok(repo)
}

const ROT13: [(&str, &str); 2] = [
    ("filter.rot13.smudge", "tr a-zA-Z n-za-mN-ZA-M"),
    ("filter.rot13.clean", "tr a-zA-Z n-za-mN-ZA-M"),
];

/// Text with LF, CRLF and mixed line ends, binary data, `$Id$` keywords.
fn write_samples(repo: &GitRepo, dir: &str) -> TestResult {
    let samples: [(&str, &[u8]); 9] = [
        ("lf.txt", b"one\ntwo\nthree\n"),
        ("crlf.txt", b"one\r\ntwo\r\n"),
        ("mixed.txt", b"one\r\ntwo\nthree\n"),
        ("lone-cr.txt", b"one\rtwo\n"),
        ("nul.dat", b"bin\0ary\nmore\n"),
        ("run.bat", b"@echo off\necho hi\n"),
        ("run.sh", b"#!/bin/sh\necho hi\n"),
        ("doc.md", b"# Title\n\ntext\n"),
        ("noeol.txt", b"no newline at the end"),
    ];
    for (name, content) in samples {
        repo.write(format!("{dir}/{name}"), content)?;
    }
    Ok(())
}

#[test]
fn eol_attributes_and_settings_match_git() -> TestResult {
    let repo = GitRepo::new()?;
    write_samples(&repo, "top")?;
    write_samples(&repo, "top/nested")?;
    write_samples(&repo, "plain")?;
    repo.write("top/legacy.c", "int main;\n")?;
    std::fs::set_permissions(
        repo.path().join("top/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::os::unix::fs::symlink("lf.txt", repo.path().join("top/link.txt"))?;
    // The blobs keep their line ends: the attributes come afterwards.
    repo.commit_all("samples")?;
    repo.write(
        ".gitattributes",
        "# comment\n[attr]crlftext text eol=crlf\n*.txt text=auto\n*.bat crlftext\n\
         *.sh text eol=lf\n*.dat binary\n/top/*.md text\nplain/** -text\n*.c crlf\n",
    )?;
    repo.write(
        "top/nested/.gitattributes",
        "*.md -text\nlf.txt text eol=crlf\n\"noeol.txt\" text\n",
    )?;
    repo.commit_all("attributes")?;
    compare_with_git(&repo, "eol-default")?;
    for (n, (key, value)) in [
        ("core.autocrlf", "true"),
        ("core.autocrlf", "input"),
        ("core.eol", "crlf"),
    ]
    .into_iter()
    .enumerate()
    {
        repo.git(["config", key, value])?;
        compare_with_git(&repo, &format!("eol-{n}"))?;
        repo.git(["config", "--unset", key])?;
    }
    // autocrlf alone, without any attributes file.
    repo.git(["rm", "-q", ".gitattributes", "top/nested/.gitattributes"])?;
    repo.commit_all("no attributes")?;
    repo.git(["config", "core.autocrlf", "true"])?;
    compare_with_git(&repo, "eol-autocrlf-only")?;
    Ok(())
}

#[test]
fn ident_matches_git() -> TestResult {
    let repo = fixture(
        &[
            ("src/a.c", "/* $Id$ */\nint a;\n"),
            (
                "src/b.c",
                "/* $Id: stale expansion $ */\n/* $Id: a b c $ */\n",
            ),
            ("src/c.h", "/* $Id$ untouched: no attribute */\n"),
        ],
        "*.c ident\n*.c text eol=crlf\n",
        &[],
    )?;
    // Stored collapsed, as `git add` stores them (an expanded id in a blob
    // leaves even git's own checkout modified).
    repo.git(["add", "--renormalize", "."])?;
    repo.git(["commit", "--quiet", "-m", "renormalised"])?;
    compare_with_git(&repo, "ident")?;
    Ok(())
}

#[test]
fn working_tree_encoding_matches_git() -> TestResult {
    let text = "h\u{e9}llo w\u{f6}rld \u{20ac}\nsecond line\n";
    let files = ["a.u16", "a.u16le", "a.u16bom", "a.u32", "a.utf8"].map(|name| (name, text));
    let repo = fixture(
        &[files.as_slice(), &[("a.lat", "h\u{e9}llo\n")]].concat(),
        "*.u16 working-tree-encoding=UTF-16\n*.u16le working-tree-encoding=utf-16le\n\
         *.u16bom text eol=crlf working-tree-encoding=UTF-16LE-BOM\n\
         *.u32 working-tree-encoding=UTF-32BE\n*.utf8 working-tree-encoding=UTF-8\n\
         *.lat working-tree-encoding=ISO-8859-1\n",
        &[],
    )?;
    compare_with_git(&repo, "encoding")?;
    Ok(())
}

#[test]
fn smudge_filters_match_git() -> TestResult {
    let repo = fixture(
        &[
            ("secret.rot", "Hello, World!\n"),
            ("dir/named.tag", "content\n"),
            ("dir/flaky.fl", "kept as stored\n"),
            ("dir/unset.nf", "no such driver\n"),
        ],
        "*.rot filter=rot13\n*.tag filter=tag\n*.fl filter=flaky\n*.nf filter=nothing\n",
        &[
            ROT13[0],
            ROT13[1],
            ("filter.tag.smudge", "cat && echo %f"),
            ("filter.tag.clean", "sed '$d'"),
            // Not required: its failure leaves the file as stored, in git
            // and here.
            ("filter.flaky.smudge", "cat >/dev/null; exit 3"),
            ("filter.flaky.clean", "cat"),
        ],
    )?;
    let ours = compare_with_git(&repo, "smudge")?;
    assert_eq!(std::fs::read(ours.join("secret.rot"))?, b"Uryyb, Jbeyq!\n");
    assert_eq!(
        std::fs::read(ours.join("dir/named.tag"))?,
        b"content\ndir/named.tag\n"
    );
    Ok(())
}

#[test]
fn a_required_filter_that_fails_fails_the_create() -> TestResult {
    let repo = fixture(
        &[("a.req", "data\n")],
        "*.req filter=strict\n",
        &[
            ("filter.strict.smudge", "cat >/dev/null; exit 1"),
            ("filter.strict.required", "true"),
        ],
    )?;
    let git_dir = tempfile::tempdir()?;
    let refused = test_support::git(
        repo.path(),
        [
            "worktree",
            "add",
            "--detach",
            git_dir.path().join("wt").to_str().ok_or("path")?,
        ],
    );
    assert!(refused.is_err(), "git itself refuses it");
    let worktrees = open(&repo)?;
    let mut request = CreateRequest::new("fidelity", "required");
    request.detach = true;
    let error = worktrees
        .create(&request)
        .expect_err("a required filter failed");
    let Error::CreateFailed { source, path, .. } = &error else {
        panic!("unexpected error {error:?}");
    };
    assert!(
        matches!(&**source, Error::Filter { driver, path, .. } if driver == "strict" && path == "a.req"),
        "{source:?}"
    );
    assert!(!path.exists(), "rolled back");
    Ok(())
}

#[test]
fn git_lfs_files_match_git() -> TestResult {
    let repo = GitRepo::new()?;
    repo.git(["lfs", "install", "--local"])?;
    repo.git(["lfs", "track", "*.bin", "assets/**"])?;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    repo.write("model.bin", &big)?;
    repo.write("assets/logo.svg", "<svg/>\n")?;
    repo.write("assets/deep/more.bin", b"\0\x01\x02 lfs object\n")?;
    repo.write("plain.txt", "not in lfs\n")?;
    repo.commit_all("lfs objects")?;
    // The objects are stored locally (no remote), as LFS keeps them.
    assert!(repo.path().join(".git/lfs/objects").is_dir());
    let pointer = repo.git(["cat-file", "-p", "HEAD:model.bin"])?;
    assert!(pointer.starts_with("version https://git-lfs"), "{pointer}");
    let ours = compare_with_git(&repo, "lfs")?;
    assert_eq!(std::fs::read(ours.join("model.bin"))?, big);
    Ok(())
}

#[test]
fn submodules_are_left_uninitialised_like_git() -> TestResult {
    let sub = GitRepo::new()?;
    sub.write("lib.txt", "library\n")?;
    let sub_head = sub.commit_all("library")?;
    let repo = GitRepo::new()?;
    repo.git([
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "--quiet",
        sub.path().to_str().ok_or("path")?,
        "vendor/lib",
    ])?;
    repo.commit_all("submodule")?;
    let ours = compare_with_git(&repo, "submodule")?;
    assert!(ours.join("vendor/lib").is_dir());
    assert_eq!(std::fs::read_dir(ours.join("vendor/lib"))?.count(), 0);
    let tree = repo.git(["ls-tree", "HEAD", "vendor/lib"])?;
    assert!(tree.contains(&sub_head), "{tree}");
    Ok(())
}

#[test]
fn very_deep_and_long_paths_match_git() -> TestResult {
    let repo = GitRepo::new()?;
    let deep: String = (0..120).map(|i| format!("d{i}/")).collect();
    repo.write(format!("{deep}leaf.txt"), "deep\n")?;
    repo.write(format!("{deep}more/other.txt"), "deeper\n")?;
    let long_name = "n".repeat(250);
    repo.write(format!("long/{long_name}"), "long name\n")?;
    let long_dir = format!("{}/{}/", "a".repeat(200), "b".repeat(200));
    repo.write(format!("{long_dir}{long_name}.txt"), "long path\n")?;
    repo.write(".gitattributes", "*.txt text eol=crlf\n")?;
    repo.commit_all("deep")?;
    let ours = compare_with_git(&repo, "deep")?;
    assert_eq!(
        std::fs::read(ours.join(format!("{deep}leaf.txt")))?,
        b"deep\r\n"
    );
    Ok(())
}

#[test]
fn sparse_checkout_of_the_main_worktree_is_inherited_like_git() -> TestResult {
    let repo = GitRepo::new()?;
    for dir in ["app/src", "app/docs", "lib", "lib/inner", "other/deep"] {
        repo.write(format!("{dir}/file.txt"), format!("{dir}\n"))?;
    }
    repo.write("top.txt", "top\n")?;
    repo.commit_all("tree")?;
    for (id, args) in [
        ("sparse-cone", vec!["set", "app/src", "lib"]),
        (
            "sparse-plain",
            vec!["set", "--no-cone", "/*", "!/*/", "/lib/", "src/", "!inner/"],
        ),
    ] {
        repo.git(["sparse-checkout"].into_iter().chain(args))?;
        let ours = compare_with_git(&repo, id)?;
        let skipped = test_support::git(&ours, ["ls-files", "-t"])?;
        assert!(skipped.contains("S other/deep/file.txt"), "{skipped}");
        assert!(!ours.join("other").exists());
        assert_eq!(
            test_support::git(&ours, ["sparse-checkout", "list"])?,
            repo.git(["sparse-checkout", "list"])?
        );
    }
    Ok(())
}

/// Initialised submodules (nested ones too) are what `git submodule update
/// --init --recursive` makes. Runs in a child process whose environment
/// allows the local clones (`protocol.file.allow`, off for submodules).
#[test]
fn submodules_are_initialised_when_asked() -> TestResult {
    if test_support::child::args().is_none() {
        let mut command =
            test_support::child::command("fidelity::submodules_are_initialised_when_asked", &[])?;
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "protocol.file.allow")
            .env("GIT_CONFIG_VALUE_0", "always")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        test_support::child::wait_success(command.spawn()?)?;
        return Ok(());
    }
    let inner = GitRepo::new()?;
    inner.write("inner.txt", "inner\n")?;
    inner.commit_all("inner")?;
    let sub = GitRepo::new()?;
    sub.write("lib.txt", "library\n")?;
    sub.git([
        "submodule",
        "add",
        "--quiet",
        inner.path().to_str().ok_or("path")?,
        "nested",
    ])?;
    sub.commit_all("library")?;
    let repo = GitRepo::new()?;
    repo.git([
        "submodule",
        "add",
        "--quiet",
        sub.path().to_str().ok_or("path")?,
        "vendor/lib",
    ])?;
    repo.commit_all("submodule")?;

    let theirs_dir = tempfile::tempdir()?;
    let theirs = theirs_dir.path().join("wt");
    repo.git([
        "worktree",
        "add",
        "--quiet",
        "--detach",
        theirs.to_str().ok_or("path")?,
    ])?;
    test_support::git(
        &theirs,
        ["submodule", "update", "--init", "--recursive", "--quiet"],
    )?;
    let worktrees = open(&repo)?;
    let mut request = CreateRequest::new("fidelity", "submodules-init");
    request.detach = true;
    request.submodules = true;
    let ours = worktrees.create(&request)?;
    assert_eq!(snapshot(&ours.path)?, snapshot(&theirs)?);
    assert_eq!(
        std::fs::read(ours.path.join("vendor/lib/nested/inner.txt"))?,
        b"inner\n"
    );
    assert_eq!(status(&ours.path)?, "");
    let info = worktrees
        .list()?
        .into_iter()
        .find(|w| w.path == ours.path)
        .ok_or("not listed")?;
    assert_eq!(info.dirty_files, Vec::<String>::new());
    // Removing it removes the submodules' repositories with it.
    worktrees.remove(&ours.id, worktree_core::RemoveOptions::default())?;
    assert!(!ours.path.exists());
    Ok(())
}

/// A pooled worktree moved to another commit converts the files it
/// rewrites as a fresh checkout does.
#[test]
fn a_pooled_hand_out_converts_like_git() -> TestResult {
    let repo = fixture(
        &[("a.txt", "one\ntwo\n"), ("s.rot", "Hello\n")],
        "*.txt text eol=crlf\n*.rot filter=rot13\n",
        &ROT13,
    )?;
    let first = repo.git(["rev-parse", "HEAD"])?.trim().to_owned();
    repo.git(["reset", "--hard", "--quiet"])?;
    repo.write("a.txt", "one\ntwo\nthree\n")?;
    repo.write("s.rot", "Hello again\n")?;
    repo.write("new/b.txt", "new\n")?;
    repo.commit_all("changes")?;

    let worktrees = open(&repo)?;
    let mut seed = CreateRequest::new("fidelity", "seed");
    seed.detach = true;
    seed.base = Some(first);
    let seeded = worktrees.create(&seed)?;
    worktrees.release_to_pool(&seeded.id)?;
    let mut request = CreateRequest::new("fidelity", "pooled");
    request.detach = true;
    let ours = worktrees.create(&request)?;
    assert!(ours.from_pool);
    let theirs_dir = tempfile::tempdir()?;
    let theirs = theirs_dir.path().join("wt");
    repo.git([
        "worktree",
        "add",
        "--quiet",
        "--detach",
        theirs.to_str().ok_or("path")?,
    ])?;
    assert_eq!(snapshot(&ours.path)?, snapshot(&theirs)?);
    // Committed through the clean filter, smudged back.
    assert_eq!(std::fs::read(ours.path.join("s.rot"))?, b"Hello again\n");
    assert_eq!(
        std::fs::read(ours.path.join("a.txt"))?,
        b"one\r\ntwo\r\nthree\r\n"
    );
    assert_eq!(status(&ours.path)?, "");
    Ok(())
}
