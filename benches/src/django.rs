//! `django`: a fresh, migrated database for a real Django project
//! (`examples/django`, Django from PyPI in a virtualenv), the way the
//! reference guide makes one — `dropdb`, `createdb`, `manage.py migrate` —
//! beside `isolane db reset` (a clone of the template Django's own migrate
//! built) and `isolane db lease` (a private clone from the warm pool),
//! interleaved in one run. Fails, loudly, when Django cannot be installed.

use std::path::Path;
use std::process::Command;

use crate::cli::{isolane_binary, isolane_in, run_ok};
use crate::{BenchResult, Config, Report, Row, Samples, interleaved, ms, ratio, time};

const PACKAGES: &[&str] = &["django>=5.2,<6", "psycopg[binary]"];

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let binary = isolane_binary(config)?;
    let scratch = tempfile::tempdir_in(&config.scratch)?;
    let repo = scratch.path().join("shop");
    std::fs::create_dir_all(&repo)?;
    test_support::python::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/django"),
        &repo,
    )?;
    test_support::git(&repo, ["init", "-q", "-b", "main"])?;
    test_support::git(&repo, ["add", "-A"])?;
    test_support::git(&repo, ["commit", "-q", "-m", "shop"])?;
    let venv = repo.join(".venv");
    test_support::python::venv(&venv, PACKAGES, &config.scratch.join("pip-cache"))
        .map_err(|e| format!("the django benchmark needs Django: {e}"))?;
    let isolane = isolane_in(&binary, &repo, scratch.path());
    // The first create builds the template (Django's migrate, once).
    run_ok(&mut isolane(&[
        "create",
        "--purpose",
        "bench",
        "--identifier",
        "django",
    ]))?;
    let id = "bench-django";
    let worktree = repo.join("worktrees").join(id);
    let env_text = String::from_utf8(isolane(&["env", id]).output()?.stdout)?;
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("PG"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    // The guide's way, on a database of its own on the same server.
    let baseline_db = "bench_django_by_hand";
    let by_hand = &|| -> BenchResult {
        let pg = |program: &str| {
            let mut command = Command::new(program);
            command
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("PGDATABASE", baseline_db);
            command
        };
        run_ok(pg("dropdb").args(["--if-exists", "--maintenance-db=postgres", baseline_db]))?;
        run_ok(pg("createdb").args(["--maintenance-db=postgres", baseline_db]))?;
        run_ok(
            pg(&venv.join("bin/python").to_string_lossy())
                .args(["manage.py", "migrate", "--noinput"])
                .current_dir(&worktree),
        )
    };
    let iterations = config.iterations(12, 3);
    let (reset, hand_1) = interleaved(
        1,
        iterations,
        || run_ok(&mut isolane(&["db", "reset", id])),
        by_hand,
    )?;
    let me = std::process::id().to_string();
    let mut leased = Vec::new();
    let mut lease_once = || -> BenchResult {
        let out = isolane(&["db", "lease", id, "--json", "--pid", &me]).output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        leased.push(value["name"].as_str().unwrap_or_default().to_owned());
        Ok(())
    };
    // Untimed before each lease: the pool topped up (as between tests that
    // do not lease back to back), and no refill running during a timing.
    let refill = || run_ok(&mut isolane(&["db", "lease", id, "--refill"]));
    refill()?;
    lease_once()?;
    let (mut lease_times, mut hand_times) = (Vec::new(), Vec::new());
    for round in 0..iterations {
        refill()?;
        if round % 2 == 0 {
            lease_times.push(time(&mut lease_once)?.0);
            refill()?;
            hand_times.push(time(by_hand)?.0);
        } else {
            hand_times.push(time(by_hand)?.0);
            refill()?;
            lease_times.push(time(&mut lease_once)?.0);
        }
    }
    let (lease, hand_2) = (Samples::new(lease_times), Samples::new(hand_times));
    // Tops the pool up after the last lease, then takes everything back.
    run_ok(&mut isolane(&["db", "lease", id, "--refill"]))?;
    for name in &leased {
        run_ok(&mut isolane(&["db", "release", name]))?;
    }
    run_ok(&mut isolane(&["remove", id, "--force"]))?;
    let pg_drop = Command::new("dropdb")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["--if-exists", "--maintenance-db=postgres", baseline_db])
        .output()?;
    if !pg_drop.status.success() {
        return Err("cannot drop the baseline database".into());
    }
    let baseline = "dropdb + createdb + manage.py migrate";
    report.figure("django.reset_ms_p50", ms(reset.percentile(50.0)));
    report.figure("django.lease_ms_p50", ms(lease.percentile(50.0)));
    report.figure("django.by_hand_ms_p50", ms(hand_1.percentile(50.0)));
    report.figure(
        "django.reset_vs_by_hand",
        ratio(reset.percentile(50.0), hand_1.percentile(50.0)),
    );
    report.figure(
        "django.lease_vs_by_hand",
        ratio(lease.percentile(50.0), hand_2.percentile(50.0)),
    );
    report.row(Row {
        group: "django",
        subject: "isolane db reset (clone of Django's migrated template)".to_owned(),
        samples: reset,
        baseline: Some((baseline.to_owned(), hand_1)),
    });
    report.row(Row {
        group: "django",
        subject: "isolane db lease (warm pool)".to_owned(),
        samples: lease,
        baseline: Some((baseline.to_owned(), hand_2)),
    });
    Ok(())
}
