//! `cli`: `isolane create` end to end (worktree, two leased ports, a
//! database cloned from a migrated template, `.env.test` and metadata) on the
//! generated large repository, beside a bare `git worktree add` of the same
//! commit, interleaved. Both are removed between iterations, untimed. Then
//! the same with `[worktrees] pool = 1`: each create takes the worktree the
//! previous remove pooled.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::large_repo;
use crate::{BenchResult, Config, Report, Row, Samples, interleaved, ms, ratio};

/// The release `isolane` binary, built (or brought up to date) for this
/// run. A bench cannot depend on another package's binary, and `cargo
/// bench` holds the lock of its own target dir while benches run, so the
/// binary is built in a target dir of its own: `target/bench-bin`.
pub(crate) fn isolane_binary(config: &Config) -> BenchResult<PathBuf> {
    let target = config
        .scratch
        .parent()
        .ok_or("the scratch dir has no parent")?
        .join("bench-bin");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "isolane",
            "--bin",
            "isolane",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    let binary = target.join("release").join("isolane");
    if !status.success() || !binary.exists() {
        return Err(format!("cannot build {}", binary.display()).into());
    }
    Ok(binary)
}

/// `isolane ARGS` run in `repo`, its port leases and claims in `scratch`
/// (never the host's).
pub(crate) fn isolane_in<'a>(
    binary: &'a Path,
    repo: &'a Path,
    scratch: &'a Path,
) -> impl Fn(&[&str]) -> Command + 'a {
    move |args| {
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(repo)
            .env("ISOLANE_STATE_DIR", scratch.join("state"))
            .env("ISOLANE_PORT_CLAIMS_DIR", scratch.join("claims"));
        command
    }
}

pub(crate) fn run_ok(command: &mut Command) -> BenchResult {
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let binary = isolane_binary(config)?;
    let fixtures = config.scratch.join("fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let repo = large_repo(&fixtures, config.quick)?;
    let scratch = tempfile::tempdir_in(&config.scratch)?;
    let migrations = scratch.path().join("migrations");
    crate::migration_fixture::generate(&migrations, config.iterations(50, 10))?;
    // An untracked isolane.toml in the fixture's root; the state of ports
    // in the scratch dir, so the benchmark never touches real leases.
    std::fs::write(
        repo.join("isolane.toml"),
        format!(
            "worktrees_dir = \"bench-worktrees\"\n[database]\nmigrations = \"{}\"\n",
            migrations.display()
        ),
    )?;
    let isolane = isolane_in(&binary, &repo, scratch.path());
    // The template is built once, as a project's first create would.
    run_ok(isolane(&["create", "--purpose", "bench", "--identifier", "warm"]).arg("--json"))?;
    run_ok(&mut isolane(&["remove", "bench-warm", "--force"]))?;
    let create_worktree = |id: &str| {
        run_ok(&mut isolane(&[
            "create",
            "--purpose",
            "bench",
            "--identifier",
            id,
        ]))
    };

    let git_dir = scratch.path().join("git");
    // Both sides leave their worktrees in place until the end (removal is
    // not what is measured), so both see the same growing worktree list.
    let mut created = Vec::new();
    let mut added = Vec::new();
    let iterations = config.iterations(8, 3);
    let (create, git) = interleaved(
        1,
        iterations,
        || {
            let id = format!("c{}", created.len());
            create_worktree(&id)?;
            created.push(format!("bench-{id}"));
            Ok(())
        },
        || {
            let n = added.len();
            let (path, branch) = (git_dir.join(format!("g{n}")), format!("bench/cli-git-{n}"));
            git_worktree_add(&repo, &path, &branch)?;
            added.push((path, branch));
            Ok(())
        },
    )?;
    for id in &created {
        run_ok(&mut isolane(&["remove", id, "--force"]))?;
    }
    for (path, branch) in &added {
        git_worktree_remove(&repo, path, branch)?;
    }
    record(
        report,
        "create",
        "isolane create (worktree + 2 ports + database from template)",
        create,
        git,
    );

    // With the warm pool: each create takes the worktree the previous
    // remove pooled (removal and `git worktree remove` untimed), beside
    // `git worktree add`.
    std::fs::write(
        repo.join("isolane.toml"),
        format!(
            "worktrees_dir = \"bench-worktrees\"\n[worktrees]\npool = 1\n[database]\nmigrations = \"{}\"\n",
            migrations.display()
        ),
    )?;
    create_worktree("seed")?;
    run_ok(&mut isolane(&["remove", "bench-seed", "--force"]))?;
    let (mut pooled, mut baseline) = (Vec::new(), Vec::new());
    for round in 0..=iterations {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let id = format!("p{round}");
                let took = crate::time(|| create_worktree(&id))?.0;
                pooled.push(took);
                run_ok(&mut isolane(&["remove", &format!("bench-{id}"), "--force"]))?;
            } else {
                let (path, branch) = (
                    git_dir.join(format!("pg{round}")),
                    format!("bench/cli-pool-{round}"),
                );
                baseline.push(crate::time(|| git_worktree_add(&repo, &path, &branch))?.0);
                git_worktree_remove(&repo, &path, &branch)?;
            }
        }
        if round == 0 {
            pooled.clear();
            baseline.clear();
        }
    }
    run_ok(&mut isolane(&["pool", "drain"]))?;
    std::fs::remove_file(repo.join("isolane.toml"))?;
    record(
        report,
        "create_pooled",
        "isolane create from the warm pool (worktree + 2 ports + database)",
        Samples::new(pooled),
        Samples::new(baseline),
    );
    Ok(())
}

fn git_worktree_add(repo: &Path, path: &Path, branch: &str) -> BenchResult {
    let path = path.to_str().ok_or("non-UTF-8 scratch path")?;
    test_support::git(repo, ["worktree", "add", "-q", "-b", branch, path, "main"])?;
    Ok(())
}

fn git_worktree_remove(repo: &Path, path: &Path, branch: &str) -> BenchResult {
    let path = path.to_str().ok_or("non-UTF-8 scratch path")?;
    test_support::git(repo, ["worktree", "remove", "--force", path])?;
    test_support::git(repo, ["branch", "-D", "-q", branch])?;
    Ok(())
}

/// The figures `cli.<key>_ms_p50`, `_p95` and `cli.<key>_vs_git`, the
/// baseline's p50, and the row.
fn record(report: &mut Report, key: &str, subject: &str, create: Samples, git: Samples) {
    report.figure(format!("cli.{key}_ms_p50"), ms(create.percentile(50.0)));
    report.figure(format!("cli.{key}_ms_p95"), ms(create.percentile(95.0)));
    let git_key = if key == "create" {
        "cli.git_worktree_add_ms_p50".to_owned()
    } else {
        format!("cli.{key}_git_ms_p50")
    };
    report.figure(git_key, ms(git.percentile(50.0)));
    report.figure(
        format!("cli.{key}_vs_git"),
        ratio(create.percentile(50.0), git.percentile(50.0)),
    );
    report.row(Row {
        group: "cli",
        subject: subject.to_owned(),
        samples: create,
        baseline: Some(("git worktree add".to_owned(), git)),
    });
}
