use std::path::PathBuf;

use test_support::{GitRepo, TestResult, child};
use worktree_core::{CreateRequest, Error, Options, Released, RemoveOptions, Worktrees};

use crate::{status, worktree_list};

/// Child role: `create <repo> <identifier> <branch> [pool]`,
/// `release <repo> <id>`, `remove <repo> <id> [delete-branch]` or
/// `drain <repo>`. Reports on stdout, which the parent reads.
#[allow(clippy::print_stdout)]
fn child_body(args: &[String]) -> TestResult {
    let repo = PathBuf::from(&args[1]);
    let worktrees = Worktrees::open(&repo, Options::default())?;
    match args[0].as_str() {
        "create" => {
            let mut request = CreateRequest::new("test", args[2].clone()).branch(args[3].clone());
            request.use_pool = args.get(4).is_some();
            match worktrees.create(&request) {
                Ok(created) => println!("created {}", created.path.display()),
                Err(Error::AlreadyExists { .. }) => println!("exists"),
                Err(error) => return Err(error.into()),
            }
        }
        "release" => {
            worktrees.release_to_pool(&args[2])?;
        }
        "remove" => {
            let options = worktree_core::RemoveOptions {
                force: false,
                delete_branch: args.get(3).is_some(),
            };
            worktrees.remove(&args[2], options)?;
        }
        "drain" => {
            worktrees.drain_pool()?;
        }
        other => return Err(format!("unknown child role {other}").into()),
    }
    Ok(())
}

fn crash_child(test: &str, fault: &str, args: &[&str]) -> TestResult {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let output = child::command(test, &args)?
        .env(registry::FAULT_ENV, fault)
        .output()?;
    // The child must have died at the fault, not finished.
    assert!(!output.status.success(), "child survived fault {fault}");
    Ok(())
}

#[test]
fn crash_between_create_steps_is_rolled_back_by_the_next_call() -> TestResult {
    if let Some(args) = child::args() {
        return child_body(&args);
    }
    let repo = GitRepo::new()?;
    repo.write("src/lib.rs", "pub fn x() {}\n")?;
    repo.commit_all("lib")?;
    let repo_arg = repo.path().to_str().ok_or("path")?;
    let worktrees = Worktrees::open(repo.path(), Options::default())?;
    let list_before = worktree_list(&repo)?;
    for fault in [
        "worktree.after_intent",
        "worktree.after_branch",
        "worktree.after_admin_dir",
        "worktree.after_files",
        "worktree.after_checkout",
    ] {
        crash_child(
            "crash::crash_between_create_steps_is_rolled_back_by_the_next_call",
            fault,
            &["create", repo_arg, "crashy", "feature/crashy"],
        )?;
        // The next call repairs, whatever it is.
        let repaired = worktrees.recover()?;
        assert_eq!(repaired, ["test-crashy"], "after {fault}");
        assert!(!worktrees.path_of("test-crashy").exists(), "after {fault}");
        assert!(
            !repo.path().join(".git/worktrees/test-crashy").exists(),
            "after {fault}"
        );
        assert!(
            repo.git(["rev-parse", "--verify", "-q", "refs/heads/feature/crashy"])
                .is_err(),
            "branch left after {fault}"
        );
        assert_eq!(worktree_list(&repo)?, list_before, "after {fault}");
    }
    // A crash left by a child is also repaired by a plain create.
    crash_child(
        "crash::crash_between_create_steps_is_rolled_back_by_the_next_call",
        "worktree.after_files",
        &["create", repo_arg, "crashy", "feature/crashy"],
    )?;
    let created =
        worktrees.create(&CreateRequest::new("test", "crashy").branch("feature/crashy"))?;
    assert_eq!(status(&created.path)?, "");
    assert!(worktrees.recover()?.is_empty());
    Ok(())
}

#[test]
fn crash_during_pool_operations_is_repaired() -> TestResult {
    if let Some(args) = child::args() {
        return child_body(&args);
    }
    let test = "crash::crash_during_pool_operations_is_repaired";
    let repo = GitRepo::new()?;
    repo.branch("other")?;
    let repo_arg = repo.path().to_str().ok_or("path")?;
    let worktrees = Worktrees::open(repo.path(), Options::default())?;
    let first = worktrees.create(&CreateRequest::new("test", "first"))?;

    // Killed while moving into the pool: the next call finishes the move.
    crash_child(
        test,
        "worktree.release_after_move",
        &["release", repo_arg, &first.id],
    )?;
    assert_eq!(worktrees.recover()?, std::slice::from_ref(&first.id));
    let pooled = worktrees
        .list()?
        .into_iter()
        .filter(|i| i.pooled)
        .collect::<Vec<_>>();
    assert_eq!(pooled.len(), 1);
    assert!(pooled[0].path.is_dir() && !pooled[0].prunable);

    // Killed while handing out: the pooled worktree is discarded, nothing
    // half-switched is ever handed out.
    crash_child(
        test,
        "worktree.handout_after_switch",
        &["create", repo_arg, "second", "other", "pool"],
    )?;
    assert_eq!(worktrees.recover()?, ["test-second"]);
    assert!(!pooled[0].path.exists());
    assert!(!worktrees.path_of("test-second").exists());
    assert_eq!(worktrees.list()?.len(), 1);
    repo.git(["rev-parse", "--verify", "refs/heads/other"])?;
    let second = worktrees.create(&CreateRequest::new("test", "second").branch("other"))?;
    assert!(!second.from_pool);
    assert!(matches!(
        worktrees.release_to_pool(&second.id)?,
        Released::Pooled(_)
    ));
    Ok(())
}

#[test]
fn concurrent_processes_never_share_a_worktree() -> TestResult {
    if let Some(args) = child::args() {
        return child_body(&args);
    }
    let test = "crash::concurrent_processes_never_share_a_worktree";
    let repo = GitRepo::new()?;
    for i in 0..20 {
        repo.write(format!("f{i}.txt"), format!("{i}\n"))?;
    }
    repo.commit_all("files")?;
    let repo_arg = repo.path().to_str().ok_or("path")?.to_owned();
    let worktrees = Worktrees::open(repo.path(), Options::default())?;
    // Four processes race for the same id: exactly one wins.
    let same = (0..4)
        .map(|i| {
            child::spawn(
                test,
                &[
                    "create".into(),
                    repo_arg.clone(),
                    "same".into(),
                    format!("b{i}"),
                ],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = same
        .into_iter()
        .map(child::wait_success)
        .collect::<Result<Vec<_>, _>>()?;
    let winners = outputs.iter().filter(|o| o.contains("created ")).count();
    assert_eq!(winners, 1, "{outputs:?}");
    // Four processes with different ids all succeed, side by side.
    let distinct = (0..4)
        .map(|i| {
            child::spawn(
                test,
                &[
                    "create".into(),
                    repo_arg.clone(),
                    format!("n{i}"),
                    format!("n{i}"),
                ],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for child in distinct {
        child::wait_success(child)?;
    }
    let listed = worktrees.list()?;
    assert_eq!(listed.len(), 6);
    for info in listed.iter().filter(|i| !i.main) {
        assert_eq!(status(&info.path)?, "", "{}", info.path.display());
    }
    Ok(())
}

#[test]
fn kill_9_at_any_moment_of_a_create_leaves_all_or_nothing() -> TestResult {
    if let Some(args) = child::args() {
        return child_body(&args);
    }
    let test = "crash::kill_9_at_any_moment_of_a_create_leaves_all_or_nothing";
    let repo = GitRepo::new()?;
    for i in 0..1500 {
        repo.write(
            format!("d{}/f{i}.txt", i % 30),
            format!("file {i}\n").repeat(40),
        )?;
    }
    repo.commit_all("many files")?;
    let repo_arg = repo.path().to_str().ok_or("path")?.to_owned();
    let worktrees = Worktrees::open(repo.path(), Options::default())?;
    let list_before = worktree_list(&repo)?;
    for (round, delay_ms) in [0u64, 5, 15, 30, 60, 120, 250, 2_000]
        .into_iter()
        .enumerate()
    {
        let id = format!("k{round}");
        let mut victim = child::spawn(
            test,
            &[
                "create".into(),
                repo_arg.clone(),
                id.clone(),
                format!("kill/{id}"),
            ],
        )?;
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        victim.kill()?; // SIGKILL
        victim.wait()?;
        worktrees.recover()?;
        let path = worktrees.path_of(&format!("test-{id}"));
        let branch = format!("refs/heads/kill/{id}");
        if path.exists() {
            // Finished before the kill: complete and clean.
            assert_eq!(status(&path)?, "", "round {round}");
            repo.git(["rev-parse", "--verify", &branch])?;
            worktrees.remove(
                &format!("test-{id}"),
                worktree_core::RemoveOptions {
                    force: false,
                    delete_branch: true,
                },
            )?;
        } else {
            assert!(
                repo.git(["rev-parse", "--verify", "-q", &branch]).is_err(),
                "round {round}"
            );
        }
        assert_eq!(worktree_list(&repo)?, list_before, "round {round}");
    }
    Ok(())
}

/// The tombstones in the trash dir.
fn trash(worktrees: &Worktrees) -> TestResult<Vec<PathBuf>> {
    match std::fs::read_dir(worktrees.worktrees_dir().join(".trash")) {
        Ok(entries) => Ok(entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

#[test]
fn crash_during_remove_is_finished_by_the_next_call() -> TestResult {
    if let Some(args) = child::args() {
        return child_body(&args);
    }
    let test = "crash::crash_during_remove_is_finished_by_the_next_call";
    let repo = GitRepo::new()?;
    for i in 0..40 {
        repo.write(format!("d{}/f{i}.txt", i % 4), format!("{i}\n"))?;
    }
    repo.commit_all("files")?;
    let repo_arg = repo.path().to_str().ok_or("path")?;
    let worktrees = Worktrees::open(repo.path(), Options::default())?;
    let list_before = worktree_list(&repo)?;
    for (round, fault) in [
        "worktree.remove_after_rename",
        "worktree.remove_during_trash",
    ]
    .into_iter()
    .enumerate()
    {
        let created = worktrees.create(
            &CreateRequest::new("test", format!("doomed{round}")).branch(format!("doomed/{round}")),
        )?;
        let admin_dir = repo.path().join(".git/worktrees").join(&created.id);
        assert!(admin_dir.is_dir());
        crash_child(
            test,
            fault,
            &["remove", repo_arg, &created.id, "delete-branch"],
        )?;
        // Killed midway: the worktree's own path never holds a half-deleted
        // directory; what is left is a tombstone in the trash.
        assert!(!created.path.exists(), "{fault}");
        assert_eq!(trash(&worktrees)?.len(), 1, "{fault}");
        if fault == "worktree.remove_after_rename" {
            assert!(admin_dir.is_dir(), "{fault}");
            assert!(worktree_list(&repo)?.contains(created.path.to_str().ok_or("path")?));
            // The next call of any kind finishes the remove.
            assert_eq!(worktrees.recover()?, std::slice::from_ref(&created.id));
        } else {
            let other = worktrees.create(&CreateRequest::new("test", "bystander"))?;
            worktrees.remove(
                &other.id,
                RemoveOptions {
                    force: false,
                    delete_branch: true,
                },
            )?;
        }
        assert!(!created.path.exists(), "{fault}");
        assert!(!admin_dir.exists(), "{fault}");
        assert!(trash(&worktrees)?.is_empty(), "{fault}");
        assert!(
            repo.git([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/doomed/{round}")
            ])
            .is_err(),
            "branch left after {fault}"
        );
        assert_eq!(worktree_list(&repo)?, list_before, "{fault}");
        assert!(worktrees.recover()?.is_empty(), "{fault}");
        assert!(
            matches!(
                worktrees.remove(&created.id, RemoveOptions::default()),
                Err(Error::NotFound { .. })
            ),
            "{fault}"
        );
    }
    Ok(())
}

#[test]
fn crash_while_draining_the_pool_is_cleaned_up() -> TestResult {
    if let Some(args) = child::args() {
        return child_body(&args);
    }
    let test = "crash::crash_while_draining_the_pool_is_cleaned_up";
    let repo = GitRepo::new()?;
    let repo_arg = repo.path().to_str().ok_or("path")?;
    let worktrees = Worktrees::open(repo.path(), Options::default())?;
    let list_before = worktree_list(&repo)?;
    for fault in [
        "worktree.remove_after_rename",
        "worktree.remove_during_trash",
    ] {
        let first = worktrees.create(&CreateRequest::new("test", "pooled"))?;
        let Released::Pooled(slot) = worktrees.release_to_pool(&first.id)? else {
            return Err("not pooled".into());
        };
        crash_child(test, fault, &["drain", repo_arg])?;
        assert!(!slot.exists(), "{fault}");
        assert_eq!(trash(&worktrees)?.len(), 1, "{fault}");
        worktrees.recover()?;
        assert!(trash(&worktrees)?.is_empty(), "{fault}");
        assert_eq!(worktree_list(&repo)?, list_before, "{fault}");
        assert_eq!(worktrees.list()?.len(), 1, "{fault}");
    }
    Ok(())
}

#[test]
fn kill_9_at_any_moment_of_a_remove_leaves_it_whole_or_gone() -> TestResult {
    if let Some(args) = child::args() {
        return child_body(&args);
    }
    let test = "crash::kill_9_at_any_moment_of_a_remove_leaves_it_whole_or_gone";
    let repo = GitRepo::new()?;
    for i in 0..600 {
        repo.write(
            format!("d{}/f{i}.txt", i % 20),
            format!("file {i}\n").repeat(40),
        )?;
    }
    repo.commit_all("many files")?;
    let repo_arg = repo.path().to_str().ok_or("path")?.to_owned();
    let worktrees = Worktrees::open(repo.path(), Options::default())?;
    let list_before = worktree_list(&repo)?;
    for (round, delay_ms) in [0u64, 5, 15, 30, 60, 120, 250, 2_000]
        .into_iter()
        .enumerate()
    {
        let created = worktrees.create(&CreateRequest::new("test", format!("r{round}")))?;
        let mut victim = child::spawn(
            test,
            &["remove".into(), repo_arg.clone(), created.id.clone()],
        )?;
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        victim.kill()?; // SIGKILL
        victim.wait()?;
        worktrees.recover()?;
        assert!(trash(&worktrees)?.is_empty(), "round {round}");
        if created.path.exists() {
            // Killed before the directory moved: whole, clean, removable.
            assert_eq!(status(&created.path)?, "", "round {round}");
            worktrees.remove(&created.id, RemoveOptions::default())?;
        }
        assert!(!created.path.exists(), "round {round}");
        assert_eq!(worktree_list(&repo)?, list_before, "round {round}");
    }
    Ok(())
}
