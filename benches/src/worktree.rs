//! `worktree`: creating a worktree of the generated large repository
//! (parallel checkout) and handing out a pooled one, each beside
//! `git worktree add` of the same commit, interleaved. Worktrees are
//! removed between iterations, untimed.

use std::path::Path;
use std::time::Duration;

use worktree_core::{CreateRequest, Options, RemoveOptions, Worktrees};

use crate::fixtures::{PREVIOUS_BRANCH, large_repo};
use crate::{BenchResult, Config, Report, Row, Samples, ms, ratio, time};

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let fixtures = config.scratch.join("fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let repo = large_repo(&fixtures, config.quick)?;
    forget_leftovers(&repo)?;
    let dir = tempfile::tempdir_in(&config.scratch)?;
    let head = test_support::git(&repo, ["rev-parse", "main"])?
        .trim()
        .to_owned();
    let previous = test_support::git(&repo, ["rev-parse", PREVIOUS_BRANCH])?
        .trim()
        .to_owned();

    let worktrees = Worktrees::open(
        &repo,
        Options {
            worktrees_dir: Some(dir.path().join("wt")),
            pool_size: 1,
        },
    )?;
    let git_dir = dir.path().join("git");
    std::fs::create_dir_all(&git_dir)?;
    let mut round = 0usize;
    let mut git_add = |commit: &str| -> BenchResult<Duration> {
        round += 1;
        let path = git_dir.join(format!("g{round}"));
        let branch = format!("bench/git-{round}");
        let path_arg = path.to_str().ok_or("non-UTF-8 scratch path")?;
        let (elapsed, _) = time(|| {
            test_support::git(
                &repo,
                ["worktree", "add", "-q", "-b", &branch, path_arg, commit],
            )?;
            Ok(())
        })?;
        test_support::git(&repo, ["worktree", "remove", "--force", path_arg])?;
        test_support::git(&repo, ["branch", "-D", "-q", &branch])?;
        Ok(elapsed)
    };

    // Full create beside `git worktree add`.
    let iterations = config.iterations(8, 4);
    let warmup = 1;
    let mut create_times = Vec::new();
    let mut git_times = Vec::new();
    for i in 0..warmup + iterations {
        let ours = || -> BenchResult<Duration> {
            let mut request =
                CreateRequest::new("bench", format!("c{i}")).branch(format!("bench/c{i}"));
            request.base = Some(head.clone());
            request.use_pool = false;
            let (elapsed, created) = time(|| Ok(worktrees.create(&request)?))?;
            remove(&worktrees, &created.id)?;
            Ok(elapsed)
        };
        let (a, b) = if i % 2 == 0 {
            let a = ours()?;
            (a, git_add(&head)?)
        } else {
            let b = git_add(&head)?;
            (ours()?, b)
        };
        if i >= warmup {
            create_times.push(a);
            git_times.push(b);
        }
    }
    let create = Samples::new(create_times);
    let git = Samples::new(git_times);

    // Pooled hand-out, alternating between two commits that differ in a few
    // files, beside `git worktree add` of the same commit.
    let mut seed = CreateRequest::new("bench", "seed").branch("bench/seed");
    seed.base = Some(previous.clone());
    let seeded = worktrees.create(&seed)?;
    worktrees.release_to_pool(&seeded.id)?;
    let iterations = config.iterations(16, 8);
    let mut pool_times = Vec::new();
    let mut pool_git_times = Vec::new();
    for i in 0..warmup + iterations {
        let commit = if i % 2 == 0 { &head } else { &previous };
        let pooled = || -> BenchResult<Duration> {
            let mut request =
                CreateRequest::new("bench", format!("p{i}")).branch(format!("bench/p{i}"));
            request.base = Some(commit.clone());
            let (elapsed, created) = time(|| Ok(worktrees.create(&request)?))?;
            if !created.from_pool {
                return Err("the pooled worktree was not handed out".into());
            }
            worktrees.release_to_pool(&created.id)?;
            test_support::git(&repo, ["branch", "-D", "-q", &format!("bench/p{i}")])?;
            Ok(elapsed)
        };
        let (a, b) = if i % 2 == 0 {
            let a = pooled()?;
            (a, git_add(commit)?)
        } else {
            let b = git_add(commit)?;
            (pooled()?, b)
        };
        if i >= warmup {
            pool_times.push(a);
            pool_git_times.push(b);
        }
    }
    let pool = Samples::new(pool_times);
    let pool_git = Samples::new(pool_git_times);
    cleanup(&worktrees, &repo)?;

    report.figure("worktree.create_ms_p50", ms(create.percentile(50.0)));
    report.figure("worktree.git_cli_ms_p50", ms(git.percentile(50.0)));
    report.figure(
        "worktree.create_vs_git",
        ratio(create.percentile(50.0), git.percentile(50.0)),
    );
    report.figure("worktree.pool_handout_ms_p50", ms(pool.percentile(50.0)));
    report.figure(
        "worktree.pool_vs_git",
        ratio(pool.percentile(50.0), pool_git.percentile(50.0)),
    );
    let files = if config.quick { "1k files" } else { "5k files" };
    report.row(Row {
        group: "worktree",
        subject: format!("create (parallel checkout, {files})"),
        samples: create,
        baseline: Some(("git worktree add".to_owned(), git)),
    });
    report.row(Row {
        group: "worktree",
        subject: format!("pooled hand-out ({files}, ~20 differ)"),
        samples: pool,
        baseline: Some(("git worktree add".to_owned(), pool_git)),
    });
    Ok(())
}

fn remove(worktrees: &Worktrees, id: &str) -> BenchResult {
    worktrees.remove(
        id,
        RemoveOptions {
            force: true,
            delete_branch: true,
        },
    )?;
    Ok(())
}

/// Removes what the run left (the pooled worktree), so the reused fixture
/// repository stays as generated.
fn cleanup(worktrees: &Worktrees, repo: &Path) -> BenchResult {
    for info in worktrees.list()? {
        if info.main {
            continue;
        }
        test_support::git(
            repo,
            [
                "worktree",
                "remove",
                "--force",
                "--force",
                info.path.to_str().ok_or("non-UTF-8 path")?,
            ],
        )?;
    }
    test_support::git(repo, ["branch", "-D", "-q", "bench/seed"])?;
    Ok(())
}

/// Forgets what an interrupted earlier run left in the reused fixture: every
/// linked worktree (they all lived in that run's deleted temp dir) and every
/// `bench/` branch but the fixture's own.
fn forget_leftovers(repo: &Path) -> BenchResult {
    let admin = repo.join(".git").join("worktrees");
    if admin.exists() {
        std::fs::remove_dir_all(&admin)?;
    }
    let branches = test_support::git(
        repo,
        [
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/bench/",
        ],
    )?;
    for branch in branches.lines().filter(|b| *b != PREVIOUS_BRANCH) {
        test_support::git(repo, ["branch", "-D", "-q", branch])?;
    }
    Ok(())
}
