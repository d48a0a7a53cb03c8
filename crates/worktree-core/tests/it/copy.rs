//! Copies of the main worktree's ignored entries into a new worktree
//! (`Worktrees::copy_ignored`, `copy_tree`): only ignored entries that a
//! pattern selects, never a tracked file, never the worktrees dir, never
//! through a symlink; symlinks copied as symlinks, modes kept.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, copy_tree};

use crate::{open, status};

fn mode(path: &Path) -> TestResult<u32> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}

fn set_mode(path: &Path, mode: u32) -> TestResult {
    Ok(std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(mode),
    )?)
}

/// A project with its ignored dependencies and build outputs in the main
/// worktree, and a branch `linked` whose `frontend` is a symlink to
/// `outside`.
fn project(outside: &Path) -> TestResult<GitRepo> {
    let repo = GitRepo::new()?;
    repo.write(
        ".gitignore",
        "target/\nnode_modules/\n.env\n.venv/\n*.log\nbuild/\nconfig/local.toml\n",
    )?;
    repo.write("src/main.rs", "fn main() {}\n")?;
    repo.write("config/settings.toml", "committed = true\n")?;
    repo.write("frontend/index.js", "export {}\n")?;
    repo.write(
        ".worktreeinclude",
        "# what a new worktree gets\nconfig/\nbuild/keep/\n",
    )?;
    repo.commit_all("project")?;
    repo.git(["checkout", "-q", "-b", "linked"])?;
    std::fs::remove_dir_all(repo.path().join("frontend"))?;
    std::os::unix::fs::symlink(outside, repo.path().join("frontend"))?;
    repo.commit_all("frontend is elsewhere")?;
    repo.git(["checkout", "-q", "main"])?;

    let root = repo.path();
    repo.write(".env", "SECRET=1\n")?;
    set_mode(&root.join(".env"), 0o600)?;
    repo.write("target/debug/app", "binary\n")?;
    set_mode(&root.join("target/debug/app"), 0o755)?;
    std::os::unix::fs::symlink("app", root.join("target/debug/app-link"))?;
    std::os::unix::fs::symlink("/etc/hostname", root.join("target/absolute"))?;
    repo.write("node_modules/pkg/index.js", "module.exports = 1\n")?;
    std::fs::create_dir_all(root.join("node_modules/.bin"))?;
    std::os::unix::fs::symlink("../pkg/index.js", root.join("node_modules/.bin/pkg"))?;
    repo.write("frontend/node_modules/dep/index.js", "dep\n")?;
    repo.write("debug.log", "not selected\n")?;
    repo.write("build/keep/cache", "kept\n")?;
    repo.write("build/other/cache", "not selected\n")?;
    repo.write("config/local.toml", "local = true\n")?;
    // A tracked file changed in the main worktree: never copied.
    repo.write("config/settings.toml", "changed in main = true\n")?;
    Ok(repo)
}

fn patterns() -> Vec<String> {
    [".env", ".venv", "node_modules", "target"]
        .map(str::to_owned)
        .to_vec()
}

#[test]
fn a_new_worktree_gets_the_selected_ignored_entries_and_nothing_else() -> TestResult {
    let outside = tempfile::tempdir()?;
    let repo = project(outside.path())?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "copy"))?;
    let copied = worktrees.copy_ignored(&created.id, &patterns())?;
    let to = &created.path;

    let mut entries: Vec<String> = copied
        .entries
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ".env",
            "build/keep",
            "config/local.toml",
            "frontend/node_modules",
            "node_modules",
            "target",
        ]
    );
    assert!(copied.skipped.is_empty(), "{:?}", copied.skipped);
    assert_eq!(copied.stats.files, 6);
    assert_eq!(copied.stats.symlinks, 3);

    assert_eq!(std::fs::read_to_string(to.join(".env"))?, "SECRET=1\n");
    assert_eq!(mode(&to.join(".env"))?, 0o600);
    assert_eq!(
        std::fs::read_to_string(to.join("target/debug/app"))?,
        "binary\n"
    );
    assert_eq!(mode(&to.join("target/debug/app"))?, 0o755);
    // Symlinks as they were (not followed, not pointed at the main worktree).
    assert_eq!(
        std::fs::read_link(to.join("target/debug/app-link"))?,
        Path::new("app")
    );
    assert_eq!(
        std::fs::read_link(to.join("target/absolute"))?,
        Path::new("/etc/hostname")
    );
    assert_eq!(
        std::fs::read_link(to.join("node_modules/.bin/pkg"))?,
        Path::new("../pkg/index.js")
    );
    for entry in ["target", "node_modules", ".env"] {
        assert!(
            !std::fs::symlink_metadata(to.join(entry))?
                .file_type()
                .is_symlink()
        );
    }
    assert_eq!(
        std::fs::read_to_string(to.join("frontend/node_modules/dep/index.js"))?,
        "dep\n"
    );
    assert_eq!(
        std::fs::read_to_string(to.join("build/keep/cache"))?,
        "kept\n"
    );
    assert_eq!(
        std::fs::read_to_string(to.join("config/local.toml"))?,
        "local = true\n"
    );
    // Not selected, tracked, or the worktrees dir: not copied.
    assert!(!to.join("debug.log").exists());
    assert!(!to.join("build/other").exists());
    assert!(!to.join("worktrees").exists());
    assert_eq!(
        std::fs::read_to_string(to.join("config/settings.toml"))?,
        "committed = true\n"
    );
    assert_eq!(status(to)?, "", "the copies are ignored there too");

    // Again: everything is there already, nothing is overwritten.
    std::fs::write(to.join(".env"), "SECRET=mine\n")?;
    let again = worktrees.copy_ignored(&created.id, &patterns())?;
    assert!(again.entries.is_empty());
    assert_eq!(again.skipped.len(), 6);
    assert_eq!(std::fs::read_to_string(to.join(".env"))?, "SECRET=mine\n");
    Ok(())
}

#[test]
fn a_copy_never_goes_through_a_symlink_of_the_new_worktree() -> TestResult {
    let outside = tempfile::tempdir()?;
    let repo = project(outside.path())?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "linked").branch("linked"))?;
    assert!(
        std::fs::symlink_metadata(created.path.join("frontend"))?
            .file_type()
            .is_symlink()
    );
    let copied = worktrees.copy_ignored(&created.id, &patterns())?;
    assert!(
        copied
            .skipped
            .iter()
            .any(|p| p == Path::new("frontend/node_modules")),
        "{copied:?}"
    );
    assert_eq!(std::fs::read_dir(outside.path())?.count(), 0);
    Ok(())
}

#[test]
fn without_patterns_nothing_is_copied() -> TestResult {
    let outside = tempfile::tempdir()?;
    let repo = project(outside.path())?;
    std::fs::remove_file(repo.path().join(".worktreeinclude"))?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "none"))?;
    let copied = worktrees.copy_ignored(&created.id, &[])?;
    assert!(copied.entries.is_empty() && copied.skipped.is_empty());
    assert!(!created.path.join("target").exists());
    // A bad pattern names where it came from.
    let bad = worktrees.copy_ignored(&created.id, &["[z-a]".to_owned()]);
    assert!(bad.is_err(), "{bad:?}");
    // Everything ignored, but never the worktrees dir (nor a tracked file).
    let all = worktrees.copy_ignored(&created.id, &["*".to_owned()])?;
    assert!(
        all.entries.iter().any(|e| e == Path::new("target")),
        "{all:?}"
    );
    assert!(
        all.entries.iter().all(|e| !e.starts_with("worktrees")),
        "{all:?}"
    );
    assert!(!created.path.join("worktrees").exists());
    assert_eq!(status(&created.path)?, "");
    Ok(())
}

#[test]
fn copy_tree_keeps_modes_and_symlinks_of_a_read_only_tree() -> TestResult {
    let dir = tempfile::tempdir()?;
    let from = dir.path().join("from");
    std::fs::create_dir_all(from.join("ro/inner"))?;
    std::fs::write(from.join("ro/inner/file"), "x")?;
    std::fs::write(from.join("exec"), "#!/bin/sh\n")?;
    set_mode(&from.join("exec"), 0o750)?;
    std::os::unix::fs::symlink("ro/inner/file", from.join("link"))?;
    std::os::unix::fs::symlink("missing", from.join("dangling"))?;
    set_mode(&from.join("ro/inner"), 0o555)?;
    set_mode(&from.join("ro"), 0o500)?;
    let to = dir.path().join("to");
    let stats = copy_tree(&from, &to)?;
    assert_eq!((stats.files, stats.symlinks, stats.dirs), (2, 2, 3));
    assert_eq!(stats.bytes, 11);
    assert_eq!(mode(&to.join("ro"))?, 0o500);
    assert_eq!(mode(&to.join("ro/inner"))?, 0o555);
    assert_eq!(mode(&to.join("exec"))?, 0o750);
    assert_eq!(
        std::fs::read_link(to.join("dangling"))?,
        Path::new("missing")
    );
    assert_eq!(std::fs::read_to_string(to.join("link"))?, "x");
    // An existing destination is refused, not merged into.
    assert!(copy_tree(&from, &to).is_err());
    for dir in [&from, &to] {
        set_mode(&dir.join("ro"), 0o700)?;
        set_mode(&dir.join("ro/inner"), 0o700)?;
    }
    Ok(())
}
