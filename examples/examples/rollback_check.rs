//! Checks that every migration of a directory rolls back cleanly: for each
//! one, apply up, apply down and compare the schema (read from the
//! catalogs) with the schema before; then apply up again and compare with
//! the first application. Prints the report as JSON and a summary line,
//! and exits with 1 if any migration fails.
//!
//! Run with `cargo run -p examples --example rollback_check [DIR]` (default:
//! `examples/migrations`; diesel and sqlx layouts are both detected).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use pg_isolate::{Format, Migrations, RollbackOptions, Server, verify_rollbacks};

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(examples::migrations_dir, PathBuf::from);
    let migrations = Migrations::load(&dir, Format::Auto)?;

    // The embedded server (or `PG_ISOLATE_URL`); the check runs in scratch
    // databases that it creates and drops.
    let server = Server::shared()?;

    // `reapply` also applies each up a second time after its down and
    // compares; `from` / `to` limit the check to a range of versions.
    let options = RollbackOptions {
        reapply: true,
        ..RollbackOptions::default()
    };
    let report = verify_rollbacks(&server, &migrations, &options)?;

    println!("{}", report.to_json());
    println!("{}", report.summary_line());
    if report.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        // The JSON above has the details (file, line, sqlstate, each schema
        // difference); here one line per failed migration.
        for entry in &report.migrations {
            let mut problems = Vec::new();
            if let Some(error) = &entry.error {
                problems.push(error.failure.message.clone());
            }
            if !entry.differences.is_empty() {
                problems.push(format!("{} schema differences", entry.differences.len()));
            }
            if !problems.is_empty() {
                eprintln!("{} {}: {}", entry.version, entry.name, problems.join("; "));
            }
        }
        Ok(ExitCode::FAILURE)
    }
}
