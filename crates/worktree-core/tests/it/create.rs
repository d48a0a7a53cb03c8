use std::os::unix::fs::PermissionsExt as _;

use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, Error};

use crate::{open, status, worktree_block};

#[test]
fn new_branch_with_slash_is_a_first_class_worktree() -> TestResult {
    let repo = GitRepo::new()?;
    repo.write("src/app.py", "print('hi')\n")?;
    let head = repo.commit_all("app")?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(
        &CreateRequest::new("test-migration", "add-user-roles").branch("feature/user-roles"),
    )?;
    assert_eq!(created.id, "test-migration-add-user-roles");
    assert_eq!(
        created.path,
        repo.path().join("worktrees/test-migration-add-user-roles")
    );
    assert_eq!(created.branch.as_deref(), Some("feature/user-roles"));
    assert!(created.branch_created);
    assert_eq!(created.head, head);

    // git sees it, on the branch, at the commit, clean.
    let block = worktree_block(&repo, &created.path)?.ok_or("not in git worktree list")?;
    assert!(
        block.contains("branch refs/heads/feature/user-roles"),
        "{block}"
    );
    assert!(block.contains(&format!("HEAD {head}")), "{block}");
    assert_eq!(status(&created.path)?, "");
    assert_eq!(
        std::fs::read_to_string(created.path.join("src/app.py"))?,
        "print('hi')\n"
    );
    // The admin dir is named after the id, not the branch.
    assert!(
        repo.path()
            .join(".git/worktrees/test-migration-add-user-roles")
            .is_dir()
    );
    assert!(!repo.path().join(".git/worktrees/feature").exists());
    // The main worktree stays clean: the worktrees dir is excluded.
    assert_eq!(status(repo.path())?, "");
    // git itself can remove it.
    repo.git(["worktree", "remove", created.path.to_str().ok_or("path")?])?;
    assert!(!created.path.exists());
    Ok(())
}

#[test]
fn existing_branch_is_checked_out() -> TestResult {
    let repo = GitRepo::new()?;
    repo.git(["checkout", "-q", "-b", "feature/existing"])?;
    repo.write("only-on-branch.txt", "branch\n")?;
    let tip = repo.commit_all("branch work")?;
    repo.git(["checkout", "-q", "main"])?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(
        &CreateRequest::new("test", "existing")
            .branch("feature/existing")
            .base("main"),
    )?;
    assert!(!created.branch_created);
    assert_eq!(created.head, tip);
    assert_eq!(
        std::fs::read_to_string(created.path.join("only-on-branch.txt"))?,
        "branch\n"
    );
    assert_eq!(
        test_support::git(&created.path, ["symbolic-ref", "HEAD"])?.trim(),
        "refs/heads/feature/existing"
    );
    assert_eq!(status(&created.path)?, "");
    Ok(())
}

#[test]
fn branch_checked_out_elsewhere_is_refused_naming_the_worktree() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    match worktrees.create(&CreateRequest::new("test", "main").branch("main")) {
        Err(Error::BranchCheckedOut { branch, worktree }) => {
            assert_eq!(branch, "main");
            assert_eq!(worktree, repo.path());
        }
        other => return Err(format!("expected BranchCheckedOut, got {other:?}").into()),
    }
    let first = worktrees.create(&CreateRequest::new("test", "one").branch("topic"))?;
    match worktrees.create(&CreateRequest::new("test", "two").branch("topic")) {
        Err(error @ Error::BranchCheckedOut { .. }) => {
            assert!(
                error
                    .to_string()
                    .contains(&first.path.display().to_string()),
                "{error}"
            );
        }
        other => return Err(format!("expected BranchCheckedOut, got {other:?}").into()),
    }
    assert!(!worktrees.path_of("test-two").exists());
    Ok(())
}

#[test]
fn detached_head_at_base() -> TestResult {
    let repo = GitRepo::new()?;
    let first = repo.git(["rev-parse", "HEAD"])?.trim().to_owned();
    repo.write("later.txt", "later\n")?;
    repo.commit_all("later")?;
    let worktrees = open(&repo)?;
    let mut request = CreateRequest::new("test", "detached").base(first.clone());
    request.detach = true;
    let created = worktrees.create(&request)?;
    assert_eq!(created.branch, None);
    assert_eq!(
        test_support::git(&created.path, ["rev-parse", "HEAD"])?.trim(),
        first
    );
    assert!(test_support::git(&created.path, ["symbolic-ref", "-q", "HEAD"]).is_err());
    assert!(!created.path.join("later.txt").exists());
    assert_eq!(status(&created.path)?, "");
    Ok(())
}

#[test]
fn default_branch_is_named_after_the_worktree() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "plain"))?;
    assert_eq!(created.branch.as_deref(), Some("test-plain"));
    repo.git(["rev-parse", "--verify", "refs/heads/test-plain"])?;
    match worktrees.create(&CreateRequest::new("test", "plain")) {
        Err(Error::AlreadyExists { id, path }) => {
            assert_eq!(id, "test-plain");
            assert_eq!(path, created.path);
        }
        other => return Err(format!("expected AlreadyExists, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn revisions_resolve_to_the_commits_git_names() -> TestResult {
    let repo = GitRepo::new()?;
    let first = repo.commit_all("first")?;
    repo.git(["tag", "-a", "-m", "release", "v1"])?;
    let second = repo.commit_all("second")?;
    let resolve = |revision: &str| worktree_core::resolve_commit(repo.path(), revision);
    for (revision, commit) in [
        ("main", &second),
        ("HEAD", &second),
        ("HEAD~1", &first),
        ("v1", &first),
        (first.as_str(), &first),
        (&first[..7], &first),
    ] {
        assert_eq!(&resolve(revision)?, commit, "{revision}");
        let git = repo.git(["rev-parse", "--verify", &format!("{revision}^{{commit}}")])?;
        assert_eq!(git.trim(), commit, "{revision}");
    }
    for bad in ["no-such-rev", "HEAD~99", "main:README.md", ""] {
        match resolve(bad) {
            Err(error @ Error::BaseNotFound { .. }) => assert!(error.is_invalid_input()),
            other => return Err(format!("{bad:?}: expected BaseNotFound, got {other:?}").into()),
        }
    }
    // In a linked worktree, HEAD is that worktree's own.
    let linked = open(&repo)?.create(&CreateRequest::new("test", "linked"))?;
    test_support::git(
        &linked.path,
        ["commit", "-q", "--allow-empty", "-m", "linked"],
    )?;
    let linked_head = test_support::git(&linked.path, ["rev-parse", "HEAD"])?;
    assert_eq!(
        worktree_core::resolve_commit(&linked.path, "HEAD")?,
        linked_head.trim()
    );
    assert_eq!(resolve("HEAD")?, second);
    Ok(())
}

#[test]
fn unknown_base_is_a_clear_error_and_leaves_nothing() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    match worktrees.create(&CreateRequest::new("test", "nobase").base("no-such-rev")) {
        Err(Error::BaseNotFound { base, .. }) => assert_eq!(base, "no-such-rev"),
        other => return Err(format!("expected BaseNotFound, got {other:?}").into()),
    }
    assert!(
        repo.git(["rev-parse", "--verify", "-q", "refs/heads/test-nobase"])
            .is_err()
    );
    assert!(!worktrees.path_of("test-nobase").exists());
    Ok(())
}

#[test]
fn executables_symlinks_and_nested_directories() -> TestResult {
    let repo = GitRepo::new()?;
    repo.write("bin/run.sh", "#!/bin/sh\necho run\n")?;
    std::fs::set_permissions(
        repo.path().join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    repo.write("a/b/c/d/deep.txt", "deep\n")?;
    std::os::unix::fs::symlink("a/b/c/d/deep.txt", repo.path().join("link"))?;
    repo.write("empty.txt", "")?;
    repo.commit_all("shapes")?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "shapes"))?;
    let mode = std::fs::metadata(created.path.join("bin/run.sh"))?
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "executable bit lost: {mode:o}");
    assert_eq!(
        std::fs::read_link(created.path.join("link"))?,
        std::path::Path::new("a/b/c/d/deep.txt")
    );
    assert_eq!(
        std::fs::read_to_string(created.path.join("link"))?,
        "deep\n"
    );
    assert_eq!(std::fs::read(created.path.join("empty.txt"))?, b"");
    assert_eq!(status(&created.path)?, "");
    // git agrees that every file matches the index, byte for byte.
    test_support::git(&created.path, ["diff", "--quiet", "HEAD"])?;
    Ok(())
}

#[test]
fn attributes_use_the_general_checkout() -> TestResult {
    let repo = GitRepo::new()?;
    repo.write(".gitattributes", "*.txt text eol=crlf\n")?;
    repo.write("notes.txt", "one\ntwo\n")?;
    repo.commit_all("attributes")?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "attrs"))?;
    assert_eq!(
        std::fs::read(created.path.join("notes.txt"))?,
        b"one\r\ntwo\r\n"
    );
    assert_eq!(status(&created.path)?, "");
    Ok(())
}

#[test]
fn submodules_without_a_url_fail_when_asked_and_are_left_empty_otherwise() -> TestResult {
    let repo = GitRepo::new()?;
    let head = repo.git(["rev-parse", "HEAD"])?.trim().to_owned();
    repo.git([
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{head},vendor/lib"),
    ])?;
    repo.git(["commit", "-q", "-m", "gitlink"])?;
    let worktrees = open(&repo)?;
    let mut request = CreateRequest::new("test", "subs");
    request.submodules = true;
    // A gitlink without a .gitmodules entry cannot be initialised.
    match worktrees.create(&request) {
        Err(Error::CreateFailed { id, source, .. }) => {
            assert_eq!(id, "test-subs");
            assert!(
                matches!(&*source, Error::Submodules { reason, .. } if reason.contains("vendor/lib")),
                "{source:?}"
            );
        }
        other => return Err(format!("expected a failed create, got {other:?}").into()),
    }
    assert!(!worktrees.path_of("test-subs").exists());
    request.submodules = false;
    let created = worktrees.create(&request)?;
    assert!(created.path.join("vendor/lib").is_dir());
    assert_eq!(status(&created.path)?, "");
    Ok(())
}
