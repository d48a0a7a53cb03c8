use std::os::unix::fs::PermissionsExt as _;

use test_support::{GitRepo, TestResult};
use worktree_core::{
    CreateRequest, Error, Options, ReleaseOptions, Released, RemoveOptions, Worktrees,
};

use crate::{status, worktree_block};

/// A repository with branches `one` and `two` that differ in a few files:
/// one modified, one added, one deleted, one made executable, one file
/// replaced by a directory. `target/` is ignored.
fn two_branches() -> TestResult<GitRepo> {
    let repo = GitRepo::new()?;
    repo.write(".gitignore", "target/\nnode_modules/\n")?;
    for i in 0..50 {
        repo.write(format!("src/mod{i}.rs"), format!("pub fn f{i}() {{}}\n"))?;
    }
    repo.write("config.toml", "version = 1\n")?;
    repo.write("old.txt", "old\n")?;
    repo.write("script.sh", "echo\n")?;
    repo.write("thing", "a file\n")?;
    repo.commit_all("base")?;
    repo.branch("one")?;
    repo.git(["checkout", "-q", "-b", "two"])?;
    repo.write("config.toml", "version = 2\n")?;
    repo.write("src/new.rs", "pub fn new() {}\n")?;
    std::fs::remove_file(repo.path().join("old.txt"))?;
    std::fs::set_permissions(
        repo.path().join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::remove_file(repo.path().join("thing"))?;
    repo.write("thing/inside.txt", "now a directory\n")?;
    repo.commit_all("two")?;
    repo.git(["checkout", "-q", "main"])?;
    Ok(repo)
}

fn open_pool(repo: &GitRepo, size: usize) -> TestResult<Worktrees> {
    Ok(Worktrees::open(
        repo.path(),
        Options {
            pool_size: size,
            ..Options::default()
        },
    )?)
}

#[test]
fn pool_round_trip_across_branches_keeps_ignored_outputs() -> TestResult {
    let repo = two_branches()?;
    let worktrees = open_pool(&repo, 2)?;
    let first = worktrees.create(&CreateRequest::new("test", "first").branch("one"))?;
    assert!(!first.from_pool);
    std::fs::create_dir_all(first.path.join("target/debug"))?;
    std::fs::write(first.path.join("target/debug/app"), "built\n")?;

    let Released::Pooled(slot) = worktrees.release_to_pool(&first.id)? else {
        return Err("expected the worktree to be pooled".into());
    };
    assert!(!first.path.exists());
    let block = worktree_block(&repo, &slot)?.ok_or("pooled worktree not in git worktree list")?;
    assert!(
        block.contains("detached") && block.contains("locked"),
        "{block}"
    );
    // Its branch is free again.
    let info = worktrees
        .list()?
        .into_iter()
        .find(|i| i.path == slot)
        .ok_or("list")?;
    assert!(info.pooled);

    let second = worktrees.create(&CreateRequest::new("test", "second").branch("two"))?;
    assert!(second.from_pool);
    assert_eq!(second.path, worktrees.path_of("test-second"));
    // config.toml, src/new.rs, script.sh (mode), thing/inside.txt.
    assert_eq!(second.files_written, 4);
    assert!(!slot.exists());
    assert_eq!(
        std::fs::read_to_string(second.path.join("config.toml"))?,
        "version = 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(second.path.join("src/new.rs"))?,
        "pub fn new() {}\n"
    );
    assert!(!second.path.join("old.txt").exists());
    assert_eq!(
        std::fs::read_to_string(second.path.join("thing/inside.txt"))?,
        "now a directory\n"
    );
    let mode = std::fs::metadata(second.path.join("script.sh"))?
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0);
    assert_eq!(
        std::fs::read_to_string(second.path.join("target/debug/app"))?,
        "built\n"
    );
    assert_eq!(status(&second.path)?, "");
    test_support::git(&second.path, ["diff", "--quiet", "HEAD"])?;
    assert_eq!(
        test_support::git(&second.path, ["symbolic-ref", "HEAD"])?.trim(),
        "refs/heads/two"
    );
    let block = worktree_block(&repo, &second.path)?.ok_or("not in git worktree list")?;
    assert!(
        block.contains("branch refs/heads/two") && !block.contains("locked"),
        "{block}"
    );

    // And back again, onto a new branch from `one`.
    worktrees.release_to_pool(&second.id)?;
    let third = worktrees.create(
        &CreateRequest::new("test", "third")
            .branch("three")
            .base("one"),
    )?;
    assert!(third.from_pool && third.branch_created);
    assert_eq!(
        std::fs::read_to_string(third.path.join("config.toml"))?,
        "version = 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(third.path.join("thing"))?,
        "a file\n"
    );
    assert!(third.path.join("old.txt").is_file() && !third.path.join("src/new.rs").exists());
    assert_eq!(status(&third.path)?, "");
    test_support::git(&third.path, ["diff", "--quiet", "HEAD"])?;
    repo.git(["worktree", "remove", third.path.to_str().ok_or("path")?])?;
    Ok(())
}

#[test]
fn dirty_pooled_worktree_is_never_handed_out() -> TestResult {
    let repo = two_branches()?;
    let worktrees = open_pool(&repo, 2)?;
    let first = worktrees.create(&CreateRequest::new("test", "first").branch("one"))?;
    let Released::Pooled(slot) = worktrees.release_to_pool(&first.id)? else {
        return Err("expected the worktree to be pooled".into());
    };
    std::fs::write(slot.join("config.toml"), "tampered\n")?;
    let second = worktrees.create(&CreateRequest::new("test", "second").branch("two"))?;
    assert!(!second.from_pool);
    assert_eq!(
        std::fs::read_to_string(slot.join("config.toml"))?,
        "tampered\n"
    );
    assert_eq!(status(&second.path)?, "");
    Ok(())
}

#[test]
fn pool_is_bounded_and_refuses_work_at_stake() -> TestResult {
    let repo = two_branches()?;
    let worktrees = open_pool(&repo, 1)?;
    let a = worktrees.create(&CreateRequest::new("test", "a").branch("one"))?;
    let b = worktrees.create(&CreateRequest::new("test", "b"))?;
    std::fs::write(a.path.join("wip.txt"), "wip\n")?;
    match worktrees.release_to_pool(&a.id) {
        Err(Error::Dirty { files, .. }) => assert_eq!(files, ["wip.txt"]),
        other => return Err(format!("expected Dirty, got {other:?}").into()),
    }
    std::fs::remove_file(a.path.join("wip.txt"))?;
    assert!(matches!(
        worktrees.release_to_pool(&a.id)?,
        Released::Pooled(_)
    ));
    match worktrees.release_to_pool(&b.id)? {
        Released::Removed(removed) => assert_eq!(removed.path, b.path),
        other => return Err(format!("expected Removed, got {other:?}").into()),
    }
    assert!(!b.path.exists());
    let pooled: Vec<_> = worktrees.list()?.into_iter().filter(|i| i.pooled).collect();
    assert_eq!(pooled.len(), 1);
    let (removed, kept) = worktrees.drain_pool()?;
    assert_eq!(removed, [pooled[0].path.clone()]);
    assert!(kept.is_empty() && !pooled[0].path.exists());
    assert!(worktree_block(&repo, &pooled[0].path)?.is_none());
    Ok(())
}

#[test]
fn release_with_options_forgets_files_deletes_the_branch_and_trims_oldest_first() -> TestResult {
    let repo = two_branches()?;
    let worktrees = open_pool(&repo, 3)?;
    let a = worktrees.create(&CreateRequest::new("test", "a"))?;
    std::fs::write(a.path.join(".env.test"), "SECRET=a\n")?;
    // An ignored file of the last user: excluded like the CLI's env file.
    std::fs::write(
        repo.path().join(".git/info/exclude"),
        "/worktrees/\n/.env.test\n",
    )?;
    let options = ReleaseOptions {
        remove: RemoveOptions {
            delete_branch: true,
            ..RemoveOptions::default()
        },
        forget: vec![".env.test".to_owned(), "absent".to_owned()],
    };
    let release = worktrees.release_to_pool_with(&a.id, &options)?;
    let Released::Pooled(slot) = release.outcome else {
        return Err("expected the worktree to be pooled".into());
    };
    assert_eq!(release.branch_deleted.as_deref(), Some("test-a"));
    assert!(!slot.join(".env.test").exists());
    assert!(repo.git(["branch", "--list", "test-a"])?.trim().is_empty());

    // A plain name only.
    let mut fresh = CreateRequest::new("test", "b");
    fresh.use_pool = false;
    let b = worktrees.create(&fresh)?;
    let bad = ReleaseOptions {
        forget: vec!["../x".to_owned()],
        ..ReleaseOptions::default()
    };
    assert!(matches!(
        worktrees.release_to_pool_with(&b.id, &bad),
        Err(Error::InvalidRequest { .. })
    ));
    // Work at stake, forced: removed, not pooled.
    std::fs::write(b.path.join("wip.txt"), "wip\n")?;
    let forced = ReleaseOptions {
        remove: RemoveOptions {
            force: true,
            ..RemoveOptions::default()
        },
        ..ReleaseOptions::default()
    };
    assert!(matches!(
        worktrees.release_to_pool_with(&b.id, &forced)?.outcome,
        Released::Removed(_)
    ));
    assert!(!b.path.exists());

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let c = worktrees.create(&CreateRequest::new("test", "c").branch("two"))?;
    assert!(c.from_pool);
    let d = worktrees.create(&CreateRequest::new("test", "d"))?;
    worktrees.release_to_pool(&d.id)?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    worktrees.release_to_pool(&c.id)?;
    assert_eq!(worktrees.pool()?.len(), 2);
    let newest = worktrees.pool()?.pop().ok_or("pool")?.path;
    let (removed, kept) = worktrees.trim_pool(1)?;
    assert_eq!((removed.len(), kept.len()), (1, 0));
    let left: Vec<_> = worktrees.pool()?.into_iter().map(|i| i.path).collect();
    assert_eq!(left, [newest]);
    Ok(())
}
