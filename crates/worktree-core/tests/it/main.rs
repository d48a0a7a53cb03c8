//! Integration tests of worktree-core against real repositories and the git
//! CLI.

mod copy;
mod crash;
mod create;
mod fidelity;
mod fuzz;
mod hostile;
mod lock;
mod names;
mod pool;
mod remove;

use std::path::Path;

use test_support::{GitRepo, TestResult};
use worktree_core::{Options, Worktrees};

/// Opens the fixture repository with default options.
fn open(repo: &GitRepo) -> TestResult<Worktrees> {
    Ok(Worktrees::open(repo.path(), Options::default())?)
}

/// `git status --porcelain` (untracked included) in `dir`.
fn status(dir: &Path) -> TestResult<String> {
    Ok(test_support::git(
        dir,
        ["status", "--porcelain", "--untracked-files=all"],
    )?)
}

/// `git worktree list --porcelain` of the repository.
fn worktree_list(repo: &GitRepo) -> TestResult<String> {
    Ok(repo.git(["worktree", "list", "--porcelain"])?)
}

/// The porcelain block of `git worktree list` for `path`.
fn worktree_block(repo: &GitRepo, path: &Path) -> TestResult<Option<String>> {
    let list = worktree_list(repo)?;
    let header = format!("worktree {}", path.display());
    Ok(list
        .split("\n\n")
        .find(|block| block.lines().next() == Some(header.as_str()))
        .map(str::to_owned))
}
