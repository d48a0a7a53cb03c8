use std::process::{Child, Command};
use std::time::Duration;

use registry::ProcessIdentity;
use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, Error, RemoveOptions, SkipReason};

use crate::{open, worktree_block};

/// A real process that stays alive until killed.
fn sleeper() -> TestResult<(Child, ProcessIdentity)> {
    let child = Command::new("sleep").arg("600").spawn()?;
    let identity = ProcessIdentity::of_pid(child.id()).ok_or("sleep is not running")?;
    Ok((child, identity))
}

#[test]
fn lock_is_gits_lock_survives_prune_and_blocks_removal_while_owner_lives() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "locked"))?;
    let (mut owner, identity) = sleeper()?;
    worktrees.lock(&created.id, "running pytest", identity)?;
    let block = worktree_block(&repo, &created.path)?.ok_or("not listed")?;
    assert!(block.contains("locked running pytest"), "{block}");

    // Another live process cannot take it over.
    match worktrees.lock(&created.id, "other run", ProcessIdentity::current()) {
        Err(Error::Locked { owner, .. }) => assert_eq!(owner, Some(identity)),
        other => return Err(format!("expected Locked, got {other:?}").into()),
    }
    // git's prune leaves a locked worktree alone even when its directory is gone.
    let moved = created.path.with_extension("away");
    std::fs::rename(&created.path, &moved)?;
    repo.git(["worktree", "prune"])?;
    std::fs::rename(&moved, &created.path)?;
    assert!(worktree_block(&repo, &created.path)?.is_some());

    match worktrees.remove(&created.id, RemoveOptions::default()) {
        Err(Error::Locked { reason, owner, .. }) => {
            assert_eq!(reason, "running pytest");
            assert_eq!(owner, Some(identity));
        }
        other => return Err(format!("expected Locked, got {other:?}").into()),
    }
    let info = worktrees
        .list()?
        .into_iter()
        .find(|i| i.path == created.path)
        .ok_or("list")?;
    let lock = info.lock.ok_or("lock not listed")?;
    assert!(lock.owner_alive);

    // The owner dies: the lock is stale and no longer protects the worktree.
    owner.kill()?;
    owner.wait()?;
    let info = worktrees
        .list()?
        .into_iter()
        .find(|i| i.path == created.path)
        .ok_or("list")?;
    assert!(!info.lock.ok_or("lock not listed")?.owner_alive);
    worktrees.remove(&created.id, RemoveOptions::default())?;
    assert!(worktree_block(&repo, &created.path)?.is_none());
    Ok(())
}

#[test]
fn unlock_removes_gits_lock() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "unlock"))?;
    worktrees.lock(&created.id, "in use", ProcessIdentity::current())?;
    worktrees.unlock(&created.id)?;
    let block = worktree_block(&repo, &created.path)?.ok_or("not listed")?;
    assert!(!block.contains("locked"), "{block}");
    Ok(())
}

#[test]
fn select_stale_skips_locked_dirty_and_unmerged() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let clean = worktrees.create(&CreateRequest::new("test", "clean"))?;
    let dirty = worktrees.create(&CreateRequest::new("test", "dirty"))?;
    std::fs::write(dirty.path.join("wip.txt"), "wip\n")?;
    let unmerged = worktrees.create(&CreateRequest::new("test", "unmerged"))?;
    std::fs::write(unmerged.path.join("c.txt"), "c\n")?;
    test_support::git(&unmerged.path, ["add", "c.txt"])?;
    test_support::git(&unmerged.path, ["commit", "-q", "-m", "c"])?;
    let locked = worktrees.create(&CreateRequest::new("test", "locked"))?;
    let (mut owner, identity) = sleeper()?;
    worktrees.lock(&locked.id, "tests running", identity)?;
    let abandoned = worktrees.create(&CreateRequest::new("test", "abandoned"))?;
    let (mut dead, dead_identity) = sleeper()?;
    worktrees.lock(&abandoned.id, "tests running", dead_identity)?;
    dead.kill()?;
    dead.wait()?;
    worktrees.create(&CreateRequest::new("manual", "keep"))?;

    let young = worktrees.select_stale("test-", Duration::from_secs(3600))?;
    assert!(young.removable.is_empty() && young.skipped.is_empty());

    let selection = worktrees.select_stale("test-", Duration::ZERO)?;
    let mut removable: Vec<_> = selection.removable.iter().map(|i| i.id.as_str()).collect();
    removable.sort_unstable();
    assert_eq!(removable, ["test-abandoned", "test-clean"]);
    let reason = |id: &str| {
        selection
            .skipped
            .iter()
            .find(|(info, _)| info.id == id)
            .map(|(_, reason)| reason.clone())
    };
    assert!(matches!(reason("test-dirty"), Some(SkipReason::Dirty(files)) if files == ["wip.txt"]));
    assert!(matches!(reason("test-unmerged"), Some(SkipReason::Unmerged(c)) if c.len() == 1));
    assert!(
        matches!(reason("test-locked"), Some(SkipReason::Locked(l)) if l.owner == Some(identity))
    );
    assert_eq!(selection.skipped.len(), 3);

    // Everything selected can be removed.
    for info in &selection.removable {
        worktrees.remove(&info.id, RemoveOptions::default())?;
    }
    assert!(!clean.path.exists() && !abandoned.path.exists());
    owner.kill()?;
    owner.wait()?;
    Ok(())
}
