use test_support::{GitRepo, TestResult};
use worktree_core::{CreateRequest, Error, RemoveOptions, validate_name};

use crate::{open, status};

#[test]
fn untrusted_names_are_refused_before_anything_is_made() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    let long = "x".repeat(65);
    let bad = [
        ("../escape", "id"),
        ("a/b", "id"),
        (".hidden", "id"),
        ("", "id"),
        ("test", "a..b"),
        ("test", "-rf"),
        ("test", "sp ace"),
        ("test", "semi;colon"),
        ("test", "x.lock"),
        ("test", long.as_str()),
    ];
    for (purpose, identifier) in bad {
        match worktrees.create(&CreateRequest::new(purpose, identifier)) {
            Err(Error::InvalidName { name, .. }) => {
                assert!(name == purpose || name == identifier, "{name}");
            }
            other => return Err(format!("{purpose:?}/{identifier:?}: got {other:?}").into()),
        }
    }
    for branch in ["-b", "a..b", "refs/heads/x", "x.lock", "a b", "HEAD", "x~1"] {
        match worktrees.create(&CreateRequest::new("test", "branch").branch(branch)) {
            Err(Error::InvalidName { kind: "branch", .. }) => {}
            other => return Err(format!("branch {branch:?}: got {other:?}").into()),
        }
    }
    match worktrees.remove("../../etc", RemoveOptions::default()) {
        Err(Error::InvalidName { .. }) => {}
        other => return Err(format!("remove ../../etc: got {other:?}").into()),
    }
    assert_eq!(std::fs::read_dir(worktrees.worktrees_dir())?.count(), 0);
    validate_name("purpose", "test-migration_2.1")?;
    Ok(())
}

#[test]
fn worktrees_dir_is_excluded_not_gitignored() -> TestResult {
    let repo = GitRepo::new()?;
    let worktrees = open(&repo)?;
    worktrees.create(&CreateRequest::new("test", "excluded"))?;
    let exclude = std::fs::read_to_string(repo.path().join(".git/info/exclude"))?;
    assert_eq!(
        exclude.lines().filter(|l| *l == "/worktrees/").count(),
        1,
        "{exclude}"
    );
    assert!(!repo.path().join(".gitignore").exists());
    assert_eq!(status(repo.path())?, "");
    // Opening again does not add the line twice; extra patterns are added once.
    let again = open(&repo)?;
    again.exclude(".env.test")?;
    again.exclude(".env.test")?;
    let exclude = std::fs::read_to_string(repo.path().join(".git/info/exclude"))?;
    assert_eq!(
        exclude.lines().filter(|l| *l == "/worktrees/").count(),
        1,
        "{exclude}"
    );
    assert_eq!(
        exclude.lines().filter(|l| *l == ".env.test").count(),
        1,
        "{exclude}"
    );
    Ok(())
}

#[test]
fn opens_from_inside_a_worktree_and_a_subdirectory() -> TestResult {
    let repo = GitRepo::new()?;
    repo.write("sub/dir/file.txt", "x\n")?;
    repo.commit_all("sub")?;
    let worktrees = open(&repo)?;
    let created = worktrees.create(&CreateRequest::new("test", "inside"))?;
    let from_worktree =
        worktree_core::Worktrees::open(created.path.join("sub/dir"), Default::default())?;
    assert_eq!(from_worktree.worktrees_dir(), worktrees.worktrees_dir());
    assert_eq!(from_worktree.main_root(), Some(repo.path()));
    let outside = tempfile::tempdir()?;
    match worktree_core::Worktrees::open(outside.path(), Default::default()) {
        Err(Error::NotARepository { .. }) => Ok(()),
        other => Err(format!("expected NotARepository, got {other:?}").into()),
    }
}
