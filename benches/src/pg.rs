//! `pg`: per-test databases from pg-isolate beside what a test suite would
//! do without it, on the same server, the same template, in the same run.
//!
//! - cold clone through pg-isolate vs the raw `CREATE DATABASE ... TEMPLATE`
//!   statement (both strategies measured raw: WAL_LOG and FILE_COPY);
//! - hand-out from the warm pool vs the raw clone;
//! - the sqlx::test-style baseline: an empty database plus all migrations,
//!   per test;
//! - the embedded server: first start (initdb + start), cold start (cached
//!   cluster, nothing running), cold start from the pristine copy, attach.
//!
//! The template is built from [`crate::migration_fixture`]'s 200
//! application-shaped migrations.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pg_isolate::{CloneStrategy, PoolOptions, Server, ServerOptions};
use postgres::Client;

use crate::{BenchResult, Config, Report, Row, Samples, ms, ratio};

/// Migrations in the generated history.
const MIGRATIONS: usize = 200;

fn load_migrations(dir: &Path) -> BenchResult<Vec<(String, String)>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.path()))
        .collect::<BenchResult<_>>()?;
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, std::fs::read_to_string(path.join("up.sql"))?))
        })
        .collect()
}

fn apply(client: &mut Client, migrations: &[(String, String)]) -> BenchResult {
    for (name, up) in migrations {
        client
            .batch_execute(up)
            .map_err(|e| format!("migration {name}: {e}"))?;
    }
    Ok(())
}

/// Runs `a` and `b` alternately; each returns the duration it measured (so
/// untimed cleanup can follow the timed part).
fn paired(
    warmup: usize,
    iterations: usize,
    mut a: impl FnMut() -> BenchResult<Duration>,
    mut b: impl FnMut() -> BenchResult<Duration>,
) -> BenchResult<(Samples, Samples)> {
    for _ in 0..warmup {
        a()?;
        b()?;
    }
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for round in 0..iterations {
        if round % 2 == 0 {
            xs.push(a()?);
            ys.push(b()?);
        } else {
            ys.push(b()?);
            xs.push(a()?);
        }
    }
    Ok((Samples::new(xs), Samples::new(ys)))
}

fn raw_clone(
    raw: &mut Client,
    template: &str,
    strategy: &str,
    counter: &mut u64,
) -> BenchResult<Duration> {
    *counter += 1;
    let name = format!("bench_raw_{}_{counter}", std::process::id());
    let start = Instant::now();
    raw.batch_execute(&format!(
        "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\" STRATEGY {strategy}"
    ))?;
    let elapsed = start.elapsed();
    raw.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))?;
    Ok(elapsed)
}

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let fixture = tempfile::tempdir_in(&config.scratch)?;
    crate::migration_fixture::generate(fixture.path(), MIGRATIONS)?;
    let migrations = load_migrations(fixture.path())?;
    let mut key = Vec::new();
    for (name, up) in &migrations {
        key.extend_from_slice(name.as_bytes());
        key.push(0);
        key.extend_from_slice(up.as_bytes());
        key.push(0);
    }

    let server = Server::connect(ServerOptions::default())?;
    let (build_time, template) = crate::time(|| {
        Ok(server.template(&key, |client| {
            apply(client, &migrations).map_err(|e| e.to_string().into())
        })?)
    })?;
    report.figure("pg.template_first_use_ms", ms(build_time));
    let tpl = template.name().to_owned();
    let mut raw = server.admin_client()?;
    let mut raw2 = server.admin_client()?;
    let mut counter = 0u64;
    let mut counter2 = 1_000_000u64;

    // Both clone strategies, raw.
    let clone_rounds = config.iterations(40, 8);
    let (wal_log, file_copy) = paired(
        2,
        clone_rounds,
        || raw_clone(&mut raw, &tpl, "WAL_LOG", &mut counter),
        || raw_clone(&mut raw2, &tpl, "FILE_COPY", &mut counter2),
    )?;
    report.figure("pg.clone_wal_log_ms_p50", ms(wal_log.percentile(50.0)));
    report.figure("pg.clone_file_copy_ms_p50", ms(file_copy.percentile(50.0)));
    report.row(Row {
        group: "pg",
        subject: "raw clone STRATEGY FILE_COPY".to_owned(),
        samples: file_copy.clone(),
        baseline: Some(("raw clone STRATEGY WAL_LOG".to_owned(), wal_log.clone())),
    });
    let default_strategy = match CloneStrategy::default() {
        CloneStrategy::WalLog => "WAL_LOG",
        _ => "FILE_COPY",
    };

    // pg-isolate's cold clone vs the raw statement with the same strategy.
    let (clone, raw_create) = paired(
        2,
        clone_rounds,
        || {
            let start = Instant::now();
            let db = template.test_database()?;
            let elapsed = start.elapsed();
            drop(db);
            Ok(elapsed)
        },
        || raw_clone(&mut raw, &tpl, default_strategy, &mut counter),
    )?;
    report.figure("pg.clone_ms_p50", ms(clone.percentile(50.0)));
    report.figure("pg.raw_create_ms_p50", ms(raw_create.percentile(50.0)));
    report.figure(
        "pg.clone_vs_raw",
        ratio(clone.percentile(50.0), raw_create.percentile(50.0)),
    );
    report.row(Row {
        group: "pg",
        subject: format!("pg-isolate clone ({MIGRATIONS}-migration template)"),
        samples: clone.clone(),
        baseline: Some((
            format!("raw CREATE DATABASE TEMPLATE ({default_strategy})"),
            raw_create.clone(),
        )),
    });

    // Warm pool hand-out (the pool refilled between hand-outs, as it is
    // between tests).
    let pool = template.pool(PoolOptions {
        size: 4,
        ..PoolOptions::default()
    })?;
    let handouts = config.iterations(200, 30);
    let mut times = Vec::with_capacity(handouts);
    for round in 0..handouts + 3 {
        pool.wait_filled(Duration::from_secs(60))?;
        let start = Instant::now();
        let db = pool.test_database()?;
        let elapsed = start.elapsed();
        drop(db);
        if round >= 3 {
            times.push(elapsed);
        }
    }
    drop(pool);
    let handout = Samples::new(times);
    let handout_p50 = handout.percentile(50.0);
    report.figure("pg.pool_handout_ms_p50", ms(handout.percentile(50.0)));
    report.figure("pg.pool_handout_ms_p95", ms(handout.percentile(95.0)));
    report.row(Row {
        group: "pg",
        subject: "warm pool hand-out".to_owned(),
        samples: handout,
        baseline: Some((
            "raw CREATE DATABASE TEMPLATE".to_owned(),
            raw_create.clone(),
        )),
    });

    // Migrations per test (sqlx::test style) vs a template clone.
    let migrate_rounds = config.iterations(8, 2);
    let (per_test, cloned) = paired(
        1,
        migrate_rounds,
        || {
            counter += 1;
            let name = format!("bench_migrate_{}_{counter}", std::process::id());
            let start = Instant::now();
            raw.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
            let mut client = server.client(&name)?;
            apply(&mut client, &migrations)?;
            let elapsed = start.elapsed();
            drop(client);
            raw.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))?;
            Ok(elapsed)
        },
        || {
            let start = Instant::now();
            let db = template.test_database()?;
            let elapsed = start.elapsed();
            drop(db);
            Ok(elapsed)
        },
    )?;
    report.figure("pg.migrate_per_test_ms_p50", ms(per_test.percentile(50.0)));
    // `pg.template_speedup` is the rust-tests group's: the same comparison
    // as a test suite sees it, against #[sqlx::test] on 285 migrations.
    report.figure(
        "pg.template_clone_vs_migrating",
        ratio(per_test.percentile(50.0), cloned.percentile(50.0)),
    );
    report.figure(
        "pg.pool_speedup",
        ratio(per_test.percentile(50.0), handout_p50),
    );
    report.row(Row {
        group: "pg",
        subject: "pg-isolate template clone".to_owned(),
        samples: cloned,
        baseline: Some((
            format!("empty database + {MIGRATIONS} migrations per test"),
            per_test,
        )),
    });
    drop(raw);
    drop(raw2);
    drop(server);

    embedded(config, report)
}

/// The embedded server's start and attach, in a private cluster directory.
fn embedded(config: &Config, report: &mut Report) -> BenchResult {
    // Reachable by the server account when running as root.
    let base = if Path::new("/var/tmp").is_dir() {
        PathBuf::from("/var/tmp")
    } else {
        config.scratch.clone()
    };
    let dir = tempfile::Builder::new()
        .prefix("pg-isolate-bench-")
        .tempdir_in(base)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let mut options = ServerOptions::default();
    options.embedded.cache_dir = Some(dir.path().to_owned());
    let result = embedded_rounds(config, report, &options);
    Server::stop_embedded(&options.embedded)?;
    result
}

fn embedded_rounds(config: &Config, report: &mut Report, options: &ServerOptions) -> BenchResult {
    let (first, server) = crate::time(|| Ok(Server::connect(options.clone())?))?;
    report.figure("pg.embedded_first_start_ms", ms(first));

    let attaches = config.iterations(50, 10);
    let mut times = Vec::new();
    for _ in 0..attaches {
        let (elapsed, attached) = crate::time(|| Ok(Server::connect(options.clone())?))?;
        drop(attached);
        times.push(elapsed);
    }
    drop(server);
    let attach = Samples::new(times);
    report.figure("pg.embedded_attach_ms", ms(attach.percentile(50.0)));

    let colds = config.iterations(8, 3);
    let mut cold_times = Vec::new();
    let mut pristine_times = Vec::new();
    let data = Server::embedded_dir(&options.embedded)?.join("data");
    for round in 0..colds * 2 {
        Server::stop_embedded(&options.embedded)?;
        let from_pristine = round % 2 == 1;
        if from_pristine {
            std::fs::remove_dir_all(&data)?;
        }
        let (elapsed, server) = crate::time(|| Ok(Server::connect(options.clone())?))?;
        drop(server);
        if from_pristine {
            pristine_times.push(elapsed);
        } else {
            cold_times.push(elapsed);
        }
    }
    let cold = Samples::new(cold_times);
    let pristine = Samples::new(pristine_times);
    report.figure("pg.embedded_cold_start_ms", ms(cold.percentile(50.0)));
    report.figure(
        "pg.embedded_cold_start_from_pristine_ms",
        ms(pristine.percentile(50.0)),
    );
    let first_samples = Samples::new(vec![first]);
    report.row(Row {
        group: "pg",
        subject: "embedded cold start (cached cluster)".to_owned(),
        samples: cold,
        baseline: Some((
            "first start: initdb + start".to_owned(),
            first_samples.clone(),
        )),
    });
    report.row(Row {
        group: "pg",
        subject: "embedded cold start (copy of pristine cluster)".to_owned(),
        samples: pristine,
        baseline: Some(("first start: initdb + start".to_owned(), first_samples)),
    });
    report.row(Row {
        group: "pg",
        subject: "embedded attach (server running)".to_owned(),
        samples: attach,
        baseline: None,
    });
    Ok(())
}
