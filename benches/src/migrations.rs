//! `migrations`: rollback verification of a generated migration history of
//! at least 250 migrations with pg-isolate, beside the baseline a user
//! scripts by hand with the PostgreSQL tools: per migration, `pg_dump
//! --schema-only`, `psql` up, `psql` down, `pg_dump` again, compare, `psql`
//! up to move on.
//!
//! The whole history is checked once by pg-isolate (the headline figures);
//! the baseline is too slow to run over all of it in every bench run, so
//! both are also timed on the same last migrations of the history (the
//! largest schemas), interleaved, for the ratio.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pg_isolate::{
    Format, Migrations, RollbackOptions, Server, ServerOptions, Target, verify_rollbacks,
};

use crate::{BenchResult, Config, Report, Row, Samples, interleaved, time};

/// Migrations in the generated history (the issue asks for at least 250).
const FULL: usize = 256;
/// Migrations of the quick smoke run.
const QUICK: usize = 40;

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let count = if config.quick { QUICK } else { FULL };
    let fixture = tempfile::tempdir_in(&config.scratch)?;
    crate::migration_fixture::generate(fixture.path(), count)?;
    let migrations = Migrations::load(fixture.path(), Format::Diesel)?;
    let server = Server::connect(ServerOptions::default())?;

    // The headline: every migration of the history, from an empty database.
    let (elapsed, full) = time(|| {
        Ok(verify_rollbacks(
            &server,
            &migrations,
            &RollbackOptions::default(),
        )?)
    })?;
    if !full.is_success() || full.summary.checked != count {
        return Err(format!(
            "the generated history should verify cleanly: {}",
            full.summary_line()
        )
        .into());
    }
    let seconds = elapsed.as_secs_f64();
    report.figure("migrations.rollback_check_s_total", seconds);
    report.figure(
        "migrations.rollback_check_count",
        full.summary.checked as f64,
    );
    report.figure(
        "migrations.rollback_check_ms_per_migration",
        seconds * 1e3 / full.summary.checked as f64,
    );

    // Side by side on the last migrations of the history.
    let tail = config.iterations(12, 4);
    let first_tail = count - tail;
    let from = migrations.list()[first_tail].version().to_owned();
    let before_tail = migrations.list()[first_tail - 1].version().to_owned();
    let options = RollbackOptions {
        from: Some(from),
        ..RollbackOptions::default()
    };
    // A database at the version before the tail, for the script.
    let start = server.template(
        format!(
            "migrations bench: {} before {before_tail}",
            migrations.hash()
        )
        .as_bytes(),
        |client| {
            migrations.migrate(client, Target::Version(before_tail.clone()), |_| {})?;
            Ok(())
        },
    )?;
    let tail_dirs: Vec<&Path> = migrations.list()[first_tail..]
        .iter()
        .map(|m| m.up_path().parent().unwrap_or(m.up_path()))
        .collect();
    let (subject, baseline) = interleaved(
        1,
        config.iterations(3, 1),
        || {
            let report = verify_rollbacks(&server, &migrations, &options)?;
            if !report.is_success() {
                return Err(report.summary_line().into());
            }
            Ok(())
        },
        || {
            let db = start.test_database()?;
            psql_pg_dump_script(&db.url(), &tail_dirs)
        },
    )?;
    let per_migration = |s: &Samples, p| s.percentile(p) / u32::try_from(tail).unwrap_or(1);
    report.figure(
        "migrations.tail_ms_per_migration",
        crate::ms(per_migration(&subject, 50.0)),
    );
    report.figure(
        "migrations.baseline_psql_pg_dump_ms_per_migration",
        crate::ms(per_migration(&baseline, 50.0)),
    );
    report.figure(
        "migrations.ratio_vs_psql_pg_dump",
        crate::ratio(subject.percentile(50.0), baseline.percentile(50.0)),
    );
    report.row(Row {
        group: "migrations",
        subject: format!("rollback check, last {tail} of {count} migrations"),
        samples: subject,
        baseline: Some(("psql + pg_dump script".to_owned(), baseline)),
    });
    report.row(Row {
        group: "migrations",
        subject: format!("rollback check, all {count} migrations"),
        samples: Samples::new(vec![elapsed]),
        baseline: None,
    });
    Ok(())
}

/// The hand-written check: for each migration directory, dump the schema,
/// apply up and down with psql, dump again, compare, apply up again.
fn psql_pg_dump_script(url: &str, dirs: &[&Path]) -> BenchResult {
    let env = libpq_env(url)?;
    for dir in dirs {
        let before = pg_dump(&env)?;
        psql(&env, &dir.join("up.sql"))?;
        psql(&env, &dir.join("down.sql"))?;
        let after = pg_dump(&env)?;
        if before != after {
            return Err(format!("schema differs after the down of {}", dir.display()).into());
        }
        psql(&env, &dir.join("up.sql"))?;
    }
    Ok(())
}

fn pg_dump(env: &[(&'static str, String)]) -> BenchResult<Vec<u8>> {
    let output = Command::new("pg_dump")
        // A fixed key: pg_dump otherwise writes a random `\restrict` line.
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--restrict-key=isolanebench",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "pg_dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(output.stdout)
}

fn psql(env: &[(&'static str, String)], file: &Path) -> BenchResult {
    let output = Command::new("psql")
        .args([
            "--no-psqlrc",
            "--quiet",
            "--single-transaction",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
        ])
        .arg(file)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "psql -f {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

/// libpq environment variables for a `postgres://user:password@host:port/db`
/// URL, so the password is not put on a command line.
fn libpq_env(url: &str) -> BenchResult<Vec<(&'static str, String)>> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("expected a postgres:// URL")?;
    let (authority, path) = rest
        .split_once('/')
        .ok_or("expected a database in the URL")?;
    let database = path.split('?').next().unwrap_or(path);
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .ok_or("expected credentials in the URL")?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    Ok(vec![
        ("PGHOST", decode(host)?),
        ("PGPORT", port.to_owned()),
        ("PGUSER", decode(user)?),
        ("PGPASSWORD", decode(password)?),
        ("PGDATABASE", decode(database)?),
        (
            "PGCONNECT_TIMEOUT",
            Duration::from_secs(10).as_secs().to_string(),
        ),
    ])
}

fn decode(text: &str) -> BenchResult<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("bad percent escape")?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}
