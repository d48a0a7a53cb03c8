//! `rust-tests`: a Rust test suite's per-test databases, `#[pg_isolate::test]`
//! beside `#[sqlx::test]`, in an external crate built as a user's crate is
//! (a default debug build: outside this workspace, whose
//! `[profile.dev.package."*"] opt-level = 1` would flatter both).
//!
//! The crate has 20 tests per subject, each taking a `sqlx::PgPool` and
//! running one query, against [`crate::migration_fixture`]'s migrations
//! (285, a few with `run_in_transaction = false`) in diesel's layout for
//! pg-isolate and sqlx's for `#[sqlx::test]` (which migrates a new database
//! per test). Measured interleaved, under `cargo test` and
//! `cargo nextest run`: each pg-isolate test's hand-out (what the macro does
//! before the test's arguments are made, written by the test to a file),
//! every test's time under nextest (its own process), and suite wall times.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{BenchResult, Config, Report, Row, Samples, ms, ratio};

/// Migrations in the fixture: crates.io's count.
const MIGRATIONS: usize = 285;
/// Tests per subject.
const TESTS: usize = 20;

/// Writes the external crate into `dir`.
fn write_crate(dir: &Path, pg_isolate: &Path) -> BenchResult {
    let diesel = dir.join("migrations");
    if !diesel.is_dir() {
        crate::migration_fixture::generate(&diesel, MIGRATIONS)?;
        // A few outside a transaction, as crates.io has.
        let mut names: Vec<PathBuf> = std::fs::read_dir(&diesel)?
            .map(|e| Ok(e?.path()))
            .collect::<BenchResult<_>>()?;
        names.sort();
        let sqlx = dir.join("sqlx-migrations");
        std::fs::create_dir_all(&sqlx)?;
        for (i, path) in names.iter().enumerate() {
            let up = std::fs::read_to_string(path.join("up.sql"))?;
            let outside = i % 60 == 1;
            if outside {
                std::fs::write(path.join("metadata.toml"), "run_in_transaction = false\n")?;
            }
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (version, name) = file_name.split_once('_').unwrap_or((&file_name, "m"));
            let sql = if outside {
                format!("-- no-transaction\n{up}")
            } else {
                up
            };
            std::fs::write(
                sqlx.join(format!("{}_{name}.sql", version.replace('-', ""))),
                sql,
            )?;
        }
    }
    let manifest = format!(
        "[package]\nname = \"rust-tests-bench\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n\
         [dev-dependencies]\n\
         pg-isolate = {{ path = {path:?}, features = [\"sqlx\"] }}\n\
         sqlx = {{ version = \"0.8\", default-features = false, features = [\"postgres\", \"runtime-tokio\", \"macros\", \"migrate\"] }}\n",
        path = pg_isolate.display().to_string()
    );
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("tests"))?;
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::write(dir.join("src/lib.rs"), "")?;
    let mut pg = String::from(
        "fn record(test: &str) {\n    \
           let Some(dir) = std::env::var_os(\"BENCH_HANDOUT_DIR\") else { return };\n    \
           let took = pg_isolate::__macro::last_handout().unwrap_or_default();\n    \
           std::fs::write(std::path::Path::new(&dir).join(test), took.as_micros().to_string()).unwrap();\n}\n",
    );
    let mut sqlx = String::new();
    for i in 0..TESTS {
        let _ = write!(
            pg,
            "\n#[pg_isolate::test]\nasync fn t{i:02}(pool: sqlx::PgPool) {{\n    record(\"t{i:02}\");\n    \
             let n: i64 = sqlx::query_scalar(\"SELECT count(*) FROM entity_0\").fetch_one(&pool).await.unwrap();\n    \
             assert!(n >= 0);\n}}\n"
        );
        let _ = write!(
            sqlx,
            "\n#[sqlx::test(migrations = \"./sqlx-migrations\")]\nasync fn t{i:02}(pool: sqlx::PgPool) {{\n    \
             let n: i64 = sqlx::query_scalar(\"SELECT count(*) FROM entity_0\").fetch_one(&pool).await.unwrap();\n    \
             assert!(n >= 0);\n}}\n"
        );
    }
    std::fs::write(dir.join("tests/pg_isolate.rs"), pg)?;
    std::fs::write(dir.join("tests/sqlx_test.rs"), sqlx)?;
    Ok(())
}

/// Runs `command`, failing with its output when it fails; returns the
/// wall time and stdout + stderr.
fn run(command: &mut Command) -> BenchResult<(Duration, String)> {
    let start = Instant::now();
    let output = command.output()?;
    let elapsed = start.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(format!("{command:?} failed:\n{text}").into());
    }
    Ok((elapsed, text))
}

/// The per-test times nextest prints (`PASS [   0.352s] ...`).
fn nextest_times(output: &str) -> Vec<Duration> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("PASS [")?;
            let secs = rest.split('s').next()?.trim();
            secs.parse::<f64>().ok().map(Duration::from_secs_f64)
        })
        .collect()
}

/// Runs the group.
pub fn run_group(config: &Config, report: &mut Report) -> BenchResult {
    let dir = config.scratch.join("rust-tests-suite");
    let target = config.scratch.join("rust-tests-target");
    let handouts = config.scratch.join("rust-tests-handouts");
    let pg_isolate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/pg-isolate");
    let pg_isolate = pg_isolate.canonicalize()?;
    write_crate(&dir, &pg_isolate)?;
    let server = pg_isolate::Server::connect(pg_isolate::ServerOptions::default())?;
    let cargo = || {
        let mut command =
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
        command
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .env("DATABASE_URL", server.url("postgres"))
            .env("BENCH_HANDOUT_DIR", &handouts)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_PROFILE_BENCH_DEBUG");
        command
    };
    let built = Instant::now();
    run(cargo().args(["test", "--no-run", "-q"]))?;
    report.figure("rust_tests.build_s", built.elapsed().as_secs_f64());
    let has_nextest = Command::new("cargo-nextest")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nextest {
        return Err(
            "cargo-nextest is not installed (`cargo install --locked cargo-nextest`)".into(),
        );
    }
    let cargo_test = |test: &str| run(cargo().args(["test", "-q", "--test", test]));
    let nextest =
        |test: &str| run(cargo().args(["nextest", "run", "--test", test, "--no-fail-fast"]));
    // Warm up: templates, pools, the server, the page cache.
    std::fs::create_dir_all(&handouts)?;
    cargo_test("pg_isolate")?;
    cargo_test("sqlx_test")?;
    let rounds = config.iterations(3, 1);
    let (mut pg_cargo, mut sqlx_cargo, mut pg_next, mut sqlx_next) =
        (vec![], vec![], vec![], vec![]);
    let (mut pg_tests, mut sqlx_tests, mut handout) = (vec![], vec![], vec![]);
    let collect = |handout: &mut Vec<Duration>| -> BenchResult {
        for entry in std::fs::read_dir(&handouts)? {
            let path = entry?.path();
            let micros: u64 = std::fs::read_to_string(&path)?.trim().parse()?;
            handout.push(Duration::from_micros(micros));
            std::fs::remove_file(path)?;
        }
        Ok(())
    };
    for round in 0..rounds {
        let order: [&str; 2] = if round % 2 == 0 {
            ["pg_isolate", "sqlx_test"]
        } else {
            ["sqlx_test", "pg_isolate"]
        };
        for test in order {
            let (wall, _) = cargo_test(test)?;
            if test == "pg_isolate" {
                pg_cargo.push(wall)
            } else {
                sqlx_cargo.push(wall)
            }
        }
        collect(&mut handout)?;
        for test in order {
            let (wall, output) = nextest(test)?;
            let times = nextest_times(&output);
            if test == "pg_isolate" {
                pg_next.push(wall);
                pg_tests.extend(times);
            } else {
                sqlx_next.push(wall);
                sqlx_tests.extend(times);
            }
        }
        collect(&mut handout)?;
    }
    // What #[sqlx::test] leaves in the server's `postgres` database.
    let mut admin = server.admin_client()?;
    let leftovers: Vec<String> = admin
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE '\\_sqlx\\_test\\_%'",
            &[],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in leftovers {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
    }
    admin.batch_execute("DROP SCHEMA IF EXISTS _sqlx_test CASCADE")?;
    drop(admin);
    let handout = Samples::new(handout);
    let pg_tests = Samples::new(pg_tests);
    let sqlx_tests = Samples::new(sqlx_tests);
    let (pg_cargo, sqlx_cargo) = (Samples::new(pg_cargo), Samples::new(sqlx_cargo));
    let (pg_next, sqlx_next) = (Samples::new(pg_next), Samples::new(sqlx_next));
    report.figure("rust_tests.pg_isolate_ms_p50", ms(handout.percentile(50.0)));
    report.figure("rust_tests.pg_isolate_ms_p95", ms(handout.percentile(95.0)));
    report.figure(
        "rust_tests.pg_isolate_test_ms_p50",
        ms(pg_tests.percentile(50.0)),
    );
    report.figure(
        "rust_tests.sqlx_test_ms_p50",
        ms(sqlx_tests.percentile(50.0)),
    );
    report.figure(
        "pg.template_speedup",
        ratio(sqlx_tests.percentile(50.0), pg_tests.percentile(50.0)),
    );
    report.figure(
        "rust_tests.suite_vs_sqlx_cargo_test",
        ratio(pg_cargo.percentile(50.0), sqlx_cargo.percentile(50.0)),
    );
    report.figure(
        "rust_tests.suite_vs_sqlx_nextest",
        ratio(pg_next.percentile(50.0), sqlx_next.percentile(50.0)),
    );
    report.row(Row {
        group: "rust-tests",
        subject: "#[pg_isolate::test] test under nextest".to_owned(),
        samples: pg_tests,
        baseline: Some(("#[sqlx::test] test under nextest".to_owned(), sqlx_tests)),
    });
    report.row(Row {
        group: "rust-tests",
        subject: format!("#[pg_isolate::test] hand-out ({MIGRATIONS} migrations)"),
        samples: handout,
        baseline: None,
    });
    report.row(Row {
        group: "rust-tests",
        subject: format!("{TESTS}-test suite, cargo test, pg-isolate"),
        samples: pg_cargo,
        baseline: Some((
            format!("{TESTS}-test suite, cargo test, sqlx::test"),
            sqlx_cargo,
        )),
    });
    report.row(Row {
        group: "rust-tests",
        subject: format!("{TESTS}-test suite, nextest, pg-isolate"),
        samples: pg_next,
        baseline: Some((
            format!("{TESTS}-test suite, nextest, sqlx::test"),
            sqlx_next,
        )),
    });
    Ok(())
}
