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
