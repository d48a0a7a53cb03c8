use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, Error, RemoveOptions};

use crate::{open, worktree_block};

#[test]
fn dirty_worktree_refuses_removal_listing_the_files() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "dirty"))?;
    std::fs::write(created.path.join("README.md"), "changed\n")?;
    std::fs::write(created.path.join("new-notes.txt"), "untracked\n")?;
    match worktrees.remove(&created.id, RemoveOptions::default()) {
        Err(error @ Error::Dirty { .. }) => {
            let Error::Dirty { files, .. } = &error else {
                unreachable!()
            };
            assert_eq!(files, &["README.md".to_owned(), "new-notes.txt".to_owned()]);
            assert!(error.to_string().contains("new-notes.txt"), "{error}");
        }
        other => return Err(format!("expected Dirty, got {other:?}").into()),
    }
    assert!(created.path.join("new-notes.txt").exists());
    // Back to clean; excluded (ignored) files are not work at stake.
    std::fs::write(created.path.join("README.md"), "# fixture\n")?;
    std::fs::remove_file(created.path.join("new-notes.txt"))?;
    worktrees.exclude("*.log")?;
    std::fs::write(created.path.join("build.log"), "output\n")?;
    let removed = worktrees.remove(&created.id, RemoveOptions::default())?;
    assert!(!removed.directory_was_missing);
    assert!(!created.path.exists());
    Ok(())
}

#[test]
fn force_removes_a_dirty_worktree() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "forced"))?;
    std::fs::write(created.path.join("scratch.txt"), "x\n")?;
    worktrees.remove(
        &created.id,
        RemoveOptions {
            force: true,
            delete_branch: true,
        },
    )?;
    assert!(!created.path.exists());
    assert!(worktree_block(&repo, &created.path)?.is_none());
    assert!(
        repo.git(["rev-parse", "--verify", "-q", "refs/heads/test-forced"])
            .is_err()
    );
    Ok(())
}

#[test]
fn unpushed_commits_refuse_removal_and_branch_deletion() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let created =
        worktrees.create(&CreateRequest::new("test", "unpushed").branch("feature/work"))?;
    std::fs::write(created.path.join("work.txt"), "work\n")?;
    test_support::git(&created.path, ["add", "work.txt"])?;
    test_support::git(&created.path, ["commit", "-q", "-m", "work"])?;
    let commit = test_support::git(&created.path, ["rev-parse", "HEAD"])?
        .trim()
        .to_owned();
    match worktrees.remove(
        &created.id,
        RemoveOptions {
            force: false,
            delete_branch: true,
        },
    ) {
        Err(error @ Error::Unmerged { .. }) => {
            let Error::Unmerged {
                commits, branch, ..
            } = &error
            else {
                unreachable!()
            };
            assert_eq!(commits, std::slice::from_ref(&commit));
            assert_eq!(branch.as_deref(), Some("feature/work"));
            assert!(error.to_string().contains(&commit), "{error}");
        }
        other => return Err(format!("expected Unmerged, got {other:?}").into()),
    }
    assert!(created.path.exists());
    // Once the commit is merged into main, removal and branch deletion work.
    repo.git(["merge", "-q", "--ff-only", "feature/work"])?;
    let removed = worktrees.remove(
        &created.id,
        RemoveOptions {
            force: false,
            delete_branch: true,
        },
    )?;
    assert_eq!(removed.branch_deleted.as_deref(), Some("feature/work"));
    assert!(
        repo.git(["rev-parse", "--verify", "-q", "refs/heads/feature/work"])
            .is_err()
    );
    Ok(())
}

#[test]
fn directory_deleted_by_hand_is_removed_and_only_that_entry_pruned() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let ours = worktrees.create(&CreateRequest::new("test", "gone"))?;
    // Another worktree, made by git, whose directory is also gone: a repo-wide
    // prune would take it; we must not.
    let other = repo.path().parent().ok_or("parent")?.join("other-wt");
    repo.git([
        "worktree",
        "add",
        "-q",
        "-b",
        "other",
        other.to_str().ok_or("path")?,
    ])?;
    std::fs::remove_dir_all(&other)?;
    std::fs::remove_dir_all(&ours.path)?;

    let listed = worktrees.list()?;
    let info = listed
        .iter()
        .find(|i| i.path == ours.path)
        .ok_or("not listed")?;
    assert!(info.prunable);
    let removed = worktrees.remove(&ours.id, RemoveOptions::default())?;
    assert!(removed.directory_was_missing);
    assert!(worktree_block(&repo, &ours.path)?.is_none());
    let other_block = worktree_block(&repo, &other)?.ok_or("other entry was pruned")?;
    assert!(other_block.contains("prunable"), "{other_block}");
    match worktrees.remove(&ours.id, RemoveOptions::default()) {
        Err(Error::NotFound { id, .. }) => assert_eq!(id, ours.id),
        other => return Err(format!("expected NotFound, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn list_reports_branch_head_dirt_and_unmerged_work() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let clean = worktrees.create(&CreateRequest::new("test", "clean"))?;
    let busy = worktrees.create(&CreateRequest::new("test", "busy").branch("feature/busy"))?;
    std::fs::write(busy.path.join("wip.txt"), "wip\n")?;
    std::fs::write(busy.path.join("done.txt"), "done\n")?;
    test_support::git(&busy.path, ["add", "done.txt"])?;
    test_support::git(&busy.path, ["commit", "-q", "-m", "done"])?;
    let listed = worktrees.list()?;
    assert_eq!(listed.len(), 3);
    assert!(listed[0].main);
    assert_eq!(listed[0].branch.as_deref(), Some("main"));
    let clean_info = listed
        .iter()
        .find(|i| i.path == clean.path)
        .ok_or("clean")?;
    assert_eq!(clean_info.id, "test-clean");
    assert!(clean_info.managed && !clean_info.pooled && !clean_info.prunable);
    assert!(clean_info.dirty_files.is_empty() && clean_info.unmerged_commits.is_empty());
    assert_eq!(clean_info.head.as_deref(), Some(clean.head.as_str()));
    assert!(clean_info.age().is_some());
    let busy_info = listed.iter().find(|i| i.path == busy.path).ok_or("busy")?;
    assert_eq!(busy_info.branch.as_deref(), Some("feature/busy"));
    assert_eq!(busy_info.dirty_files, ["wip.txt"]);
    assert_eq!(busy_info.unmerged_commits.len(), 1);
    Ok(())
}

#[test]
fn deleting_a_branch_takes_its_configuration_and_no_other_branch_s() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "cfg"))?;
    let branch = created.branch.clone().ok_or("no branch")?;
    // Its own settings (one of them with two values), and those of a
    // branch whose name starts like it.
    repo.git(["config", &format!("branch.{branch}.remote"), "origin"])?;
    repo.git(["config", "--add", &format!("branch.{branch}.note"), "one"])?;
    repo.git(["config", "--add", &format!("branch.{branch}.note"), "two"])?;
    repo.git(["branch", &format!("{branch}.1")])?;
    repo.git(["config", &format!("branch.{branch}.1.remote"), "upstream"])?;
    let removed = worktrees.remove(
        &created.id,
        RemoveOptions {
            force: false,
            delete_branch: true,
        },
    )?;
    assert_eq!(removed.branch_deleted.as_deref(), Some(branch.as_str()));
    let config = repo.git(["config", "--list", "--local"])?;
    assert!(
        !config.contains(&format!("branch.{branch}.remote")),
        "{config}"
    );
    assert!(
        !config.contains(&format!("branch.{branch}.note")),
        "{config}"
    );
    assert!(
        config.contains(&format!("branch.{branch}.1.remote=upstream")),
        "{config}"
    );
    Ok(())
}
