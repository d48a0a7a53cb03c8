//! `isolane`: isolated test worktrees with their own ports and database.
//!
//! `main` parses, `run` does the work and returns the exit code; errors are
//! printed with their whole chain. Exit codes: 0 ok, 1 the operation failed,
//! 2 bad usage or input, and the command's own code for `isolane run` (and
//! for `isolane compare` when CMD fails; 1 there when a figure is slower).
//!
//! Crash tests: `ISOLANE_FAULT=<step>` kills the process with SIGKILL at
//! that step ([`registry::fault_point`]): `create.after_intent`,
//! `create.after_worktree`, `create.after_ports`, `create.after_database`,
//! `create.during_hooks`, `remove.after_intent`, `remove.after_worktree`,
//! `remove.after_database`, `remove.after_ports`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;
mod config;
mod context;
mod database_gc;
mod envfile;
#[cfg(test)]
mod fuzz_tests;
mod lifecycle;
mod procs;
mod runs;
mod services;
mod state;
mod stats;
mod template;
mod worktree_db;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code_for(&error))
        }
    }
}

/// `ISOLANE_LOG=debug` (any `tracing` filter) logs to stderr.
fn init_tracing() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("ISOLANE_LOG") else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// 2 when the error is about the user's input, 1 otherwise.
fn exit_code_for(error: &anyhow::Error) -> u8 {
    let is_input = error.chain().any(|cause| {
        cause.is::<commands::InputError>()
            || cause.is::<config::ConfigError>()
            || cause
                .downcast_ref::<worktree_core::Error>()
                .is_some_and(worktree_core::Error::is_invalid_input)
            || cause
                .downcast_ref::<port_alloc::Error>()
                .is_some_and(port_alloc::Error::is_invalid_input)
            || cause
                .downcast_ref::<pg_isolate::Error>()
                .is_some_and(pg_isolate::Error::is_invalid_input)
    });
    if let Some(failed) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<template::BuildFailed>())
    {
        return failed.code();
    }
    if is_input { 2 } else { 1 }
}
