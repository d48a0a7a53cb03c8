//! Trees crafted with git plumbing whose entry names would leave the
//! worktree or replace its `.git`: refused before anything is written.

use std::path::Path;

use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, Error, Released};

use crate::{open, status, worktree_list};

/// One raw tree entry: mode (git's octal text), name, object id (hex).
type Entry<'a> = (&'a str, &'a [u8], &'a str);

/// Writes a tree object exactly as given (no name checks: `--literally`)
/// and returns its id.
fn raw_tree(repo: &GitRepo, entries: &[Entry<'_>]) -> TestResult<String> {
    let mut bytes = Vec::new();
    for (mode, name, id) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(name);
        bytes.push(0);
        for i in (0..id.len()).step_by(2) {
            bytes.push(u8::from_str_radix(&id[i..i + 2], 16)?);
        }
    }
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &bytes)?;
    let path = file.path().to_str().ok_or("temp path")?;
    Ok(repo
        .git(["hash-object", "-t", "tree", "--literally", "-w", path])?
        .trim()
        .to_owned())
}

fn blob(repo: &GitRepo, content: &str) -> TestResult<String> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), content)?;
    let path = file.path().to_str().ok_or("temp path")?;
    Ok(repo.git(["hash-object", "-w", path])?.trim().to_owned())
}

/// The hostile commits: (commit, the path the error must name). An empty
/// name is not even parsed by libgit2 (a `git` error, also before anything
/// is written): its expected path is `None`.
fn hostile_commits(repo: &GitRepo) -> TestResult<Vec<(String, Option<String>)>> {
    let readme = blob(repo, "# fixture\n")?;
    let payload = blob(repo, "pwned\n")?;
    let gitfile = blob(repo, "gitdir: /nonexistent/elsewhere\n")?;
    let pwned = raw_tree(repo, &[("100644", b"pwned.txt", &payload)])?;
    let up = raw_tree(repo, &[("40000", b"..", &pwned)])?;
    let hooks = raw_tree(repo, &[("100755", b"post-checkout", &payload)])?;
    let dotgit_dir = raw_tree(repo, &[("40000", b"hooks", &hooks)])?;
    let nested = raw_tree(repo, &[("40000", b".Git", &dotgit_dir)])?;
    let trees: Vec<(Vec<Entry<'_>>, &str)> = vec![
        // <worktree>/../../pwned.txt is the repository's root.
        (
            vec![("100644", b"README.md", &readme), ("40000", b"..", &up)],
            "..",
        ),
        (
            vec![
                ("100644", b".git", &gitfile),
                ("100644", b"README.md", &readme),
            ],
            ".git",
        ),
        (
            vec![
                ("40000", b".GIT", &dotgit_dir),
                ("100644", b"README.md", &readme),
            ],
            ".GIT",
        ),
        (
            vec![
                ("100644", b"README.md", &readme),
                ("40000", b"sub", &nested),
            ],
            "sub/.Git",
        ),
        (
            vec![("100644", b"", &payload), ("100644", b"README.md", &readme)],
            "",
        ),
        (
            vec![
                ("100644", b"../../pwned.txt", &payload),
                ("100644", b"README.md", &readme),
            ],
            "../../pwned.txt",
        ),
        (
            vec![
                ("100644", b"/tmp/isolane-pwned.txt", &payload),
                ("100644", b"README.md", &readme),
            ],
            "/tmp/isolane-pwned.txt",
        ),
    ];
    let mut commits = Vec::new();
    for (entries, path) in trees {
        let tree = raw_tree(repo, &entries)?;
        let commit = repo
            .git(["commit-tree", &tree, "-m", "hostile"])?
            .trim()
            .to_owned();
        commits.push((commit, Some(path.to_owned()).filter(|p| !p.is_empty())));
    }
    Ok(commits)
}

/// Nothing a hostile checkout could have written exists.
fn assert_nothing_escaped(repo: &GitRepo, context: &str) -> TestResult {
    let outside = repo.path().parent().ok_or("parent")?;
    for path in [
        repo.path().join("pwned.txt"),
        outside.join("pwned.txt"),
        Path::new("/tmp/isolane-pwned.txt").to_owned(),
    ] {
        assert!(!path.exists(), "{context}: {} was written", path.display());
    }
    assert_eq!(status(repo.path())?, "", "{context}");
    Ok(())
}

#[test]
fn hostile_tree_paths_are_refused_before_anything_is_written() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let list_before = worktree_list(&repo)?;
    for (i, (commit, bad_path)) in hostile_commits(&repo)?.into_iter().enumerate() {
        let branch = format!("evil/{i}");
        let mut request = CreateRequest::new("test", format!("evil{i}"))
            .branch(&branch)
            .base(&commit);
        request.use_pool = false;
        match (worktrees.create(&request), &bad_path) {
            (Err(Error::Git { target, .. }), None) => assert_eq!(target, commit),
            (Err(error @ Error::UnsafePath { .. }), Some(bad_path)) => {
                let Error::UnsafePath {
                    path, commit: c, ..
                } = &error
                else {
                    unreachable!()
                };
                assert_eq!(path, bad_path, "{error}");
                assert_eq!(c, &commit, "{error}");
                let text = error.to_string();
                assert!(text.contains(&commit), "{text}");
                assert!(text.contains(&format!("{bad_path:?}")), "{text}");
                assert!(!error.is_invalid_input());
            }
            (other, _) => {
                return Err(format!("{bad_path:?}: expected a refusal, got {other:?}").into());
            }
        }
        let context = format!("entry {bad_path:?}");
        // Nothing made: no worktree directory, admin entry, branch or intent.
        let left: Vec<_> = std::fs::read_dir(worktrees.worktrees_dir())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert!(left.is_empty(), "{context}: {left:?}");
        assert!(
            repo.git([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}")
            ])
            .is_err(),
            "{context}: branch created"
        );
        assert_eq!(worktree_list(&repo)?, list_before, "{context}");
        assert!(worktrees.recover()?.is_empty(), "{context}");
        assert_nothing_escaped(&repo, &context)?;
    }
    Ok(())
}

#[test]
fn hostile_tree_is_refused_when_handing_out_a_pooled_worktree() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let first = worktrees.create(&CreateRequest::new("test", "first"))?;
    let Released::Pooled(slot) = worktrees.release_to_pool(&first.id)? else {
        return Err("not pooled".into());
    };
    for (i, (commit, bad_path)) in hostile_commits(&repo)?.into_iter().enumerate() {
        let branch = format!("evil/{i}");
        let request = CreateRequest::new("test", format!("evil{i}"))
            .branch(&branch)
            .base(&commit);
        match (worktrees.create(&request), &bad_path) {
            (Err(Error::Git { target, .. }), None) => assert_eq!(target, commit),
            (
                Err(Error::UnsafePath {
                    path, commit: c, ..
                }),
                Some(bad_path),
            ) => {
                assert_eq!((&path, &c), (bad_path, &commit));
            }
            (other, _) => {
                return Err(format!("{bad_path:?}: expected a refusal, got {other:?}").into());
            }
        }
        let context = format!("entry {bad_path:?}");
        assert!(
            !worktrees.path_of(&format!("test-evil{i}")).exists(),
            "{context}"
        );
        assert!(
            repo.git([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}")
            ])
            .is_err(),
            "{context}: branch created"
        );
        // The pooled worktree was not touched and is still handed out clean.
        assert_eq!(status(&slot)?, "", "{context}");
        assert!(!slot.join("..").join("pwned.txt").exists(), "{context}");
        assert_nothing_escaped(&repo, &context)?;
    }
    let again = worktrees.create(&CreateRequest::new("test", "again"))?;
    assert!(again.from_pool);
    assert_eq!(status(&again.path)?, "");
    Ok(())
}

/// A directory outside the repository with files in it, and its snapshot.
fn outside_tree() -> TestResult<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("isolane-outside-")
        .tempdir()?;
    let root = dir.path().canonicalize()?;
    std::fs::create_dir_all(root.join("keep/nested"))?;
    std::fs::write(root.join("precious.txt"), "not isolane's\n")?;
    std::fs::write(root.join("keep/nested/deep.txt"), "deep\n")?;
    Ok((dir, root))
}

fn escapes(result: Result<impl std::fmt::Debug, Error>, context: &str) -> TestResult {
    match result {
        Err(Error::Escapes { .. }) => Ok(()),
        other => Err(format!("{context}: expected Escapes, got {other:?}").into()),
    }
}

#[test]
fn a_symlinked_worktree_path_is_never_followed_by_create_or_remove() -> TestResult {
    let repo = GitRepo::new()?;
    let (_keep, outside) = outside_tree()?;
    let before = test_support::tree_snapshot(&outside)?;
    let worktrees = open(&repo)?;

    // A symlink standing where a new worktree would go: create refuses.
    std::os::unix::fs::symlink(&outside, worktrees.path_of("test-link"))?;
    match worktrees.create(&CreateRequest::new("test", "link")) {
        Err(Error::AlreadyExists { .. }) => {}
        other => return Err(format!("expected AlreadyExists, got {other:?}").into()),
    }
    assert_eq!(test_support::tree_snapshot(&outside)?, before);

    // A real worktree moved outside and replaced by a symlink to it (its
    // `.git` file still names its admin entry): remove refuses even forced.
    let created = worktrees.create(&CreateRequest::new("test", "moved"))?;
    let moved = outside.join("moved");
    std::fs::rename(&created.path, &moved)?;
    std::os::unix::fs::symlink(&moved, &created.path)?;
    let with_moved = test_support::tree_snapshot(&outside)?;
    let forced = worktree_core::RemoveOptions {
        force: true,
        delete_branch: true,
    };
    escapes(worktrees.remove("test-moved", forced), "forced remove")?;
    assert_eq!(test_support::tree_snapshot(&outside)?, with_moved);
    // Once the link is gone the entry is removed like a deleted directory;
    // what the link pointed at stays.
    std::fs::remove_file(&created.path)?;
    let removed = worktrees.remove("test-moved", forced)?;
    assert!(removed.directory_was_missing);
    assert_eq!(test_support::tree_snapshot(&outside)?, with_moved);
    Ok(())
}

#[test]
fn symlinked_trash_pool_and_worktrees_dirs_are_refused() -> TestResult {
    let repo = GitRepo::new()?;
    let (_keep, outside) = outside_tree()?;
    let before = test_support::tree_snapshot(&outside)?;

    // The worktrees dir itself a symlink out of the repository, or below a
    // symlinked parent: refused before anything is created.
    std::os::unix::fs::symlink(&outside, repo.path().join("worktrees"))?;
    escapes(
        worktree_core::Worktrees::open(repo.path(), worktree_core::Options::default()).map(drop),
        "worktrees dir symlink",
    )?;
    std::fs::remove_file(repo.path().join("worktrees"))?;
    std::os::unix::fs::symlink(&outside, repo.path().join("elsewhere"))?;
    let options = worktree_core::Options {
        worktrees_dir: Some("elsewhere/wt".into()),
        ..worktree_core::Options::default()
    };
    escapes(
        worktree_core::Worktrees::open(repo.path(), options).map(drop),
        "symlinked parent",
    )?;
    assert_eq!(test_support::tree_snapshot(&outside)?, before);

    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "trash"))?;
    // The trash a symlink out: every mutating call refuses (it would
    // sweep, i.e. delete, what the link points at), the worktree stays.
    let trash = worktrees.worktrees_dir().join(".trash");
    std::os::unix::fs::symlink(&outside, &trash)?;
    escapes(
        worktrees.remove(&created.id, worktree_core::RemoveOptions::default()),
        "remove with symlinked trash",
    )?;
    escapes(
        worktrees.create(&CreateRequest::new("test", "other")),
        "create with symlinked trash",
    )?;
    escapes(worktrees.recover(), "recover with symlinked trash")?;
    assert!(created.path.join("README.md").exists());
    assert_eq!(test_support::tree_snapshot(&outside)?, before);
    std::fs::remove_file(&trash)?;

    // The pool a symlink out: nothing is moved into it.
    let pool = worktrees.worktrees_dir().join(".pool");
    std::os::unix::fs::symlink(&outside, &pool)?;
    escapes(
        worktrees.release_to_pool(&created.id),
        "release into symlinked pool",
    )?;
    assert!(created.path.join("README.md").exists());
    assert_eq!(test_support::tree_snapshot(&outside)?, before);
    std::fs::remove_file(&pool)?;

    // A symlink left in the trash (as a tombstone) is unlinked, its target
    // untouched.
    std::fs::create_dir_all(&trash)?;
    std::os::unix::fs::symlink(&outside, trash.join("test-trash-1"))?;
    worktrees.recover()?;
    assert!(std::fs::symlink_metadata(trash.join("test-trash-1")).is_err());
    worktrees.remove(&created.id, worktree_core::RemoveOptions::default())?;
    assert_eq!(test_support::tree_snapshot(&outside)?, before);
    Ok(())
}

#[test]
fn a_committed_symlink_out_of_the_worktree_is_unlinked_never_followed() -> TestResult {
    let repo = GitRepo::new()?;
    let (_keep, outside) = outside_tree()?;
    let before = test_support::tree_snapshot(&outside)?;
    std::os::unix::fs::symlink(&outside, repo.path().join("link"))?;
    std::os::unix::fs::symlink(outside.join("precious.txt"), repo.path().join("file-link"))?;
    repo.commit_all("symlinks out of the tree")?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "links"))?;
    assert!(
        std::fs::symlink_metadata(created.path.join("link"))?
            .file_type()
            .is_symlink()
    );
    worktrees.remove(
        &created.id,
        worktree_core::RemoveOptions {
            force: true,
            delete_branch: true,
        },
    )?;
    assert!(!created.path.exists());
    assert_eq!(test_support::tree_snapshot(&outside)?, before);
    Ok(())
}
