//! `isolane`: isolated test worktrees with their own ports and database.
//!
//! The commands arrive with the CLI issue; until then the binary only
//! answers `--help` and `--version`.

use std::process::ExitCode;

use clap::Parser;

/// Isolated test worktrees with their own ports and PostgreSQL database.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
