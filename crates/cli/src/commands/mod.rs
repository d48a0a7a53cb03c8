//! One module per command; `run` dispatches.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{Cli, Command};

mod compare;
mod create;
mod db;
mod doctor;
mod gc;
mod info;
mod init;
mod logs;
mod pool;
mod ports;
mod remove;
mod run;

/// An error in what the user asked for (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InputError(pub(crate) String);

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Create(args) => create::run(&args),
        Command::List { json } => info::list(json),
        Command::Show { id, json } => info::show(&id, json),
        Command::Env { id, format } => info::env(&id, format),
        Command::Run(args) => run::run(&args),
        Command::Logs(args) => logs::run(&args),
        Command::Remove(args) => remove::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Gc(args) => gc::run(&args),
        Command::Ports { command, json } => ports::run(command, json),
        Command::Pool { command, json } => pool::run(command, json),
        Command::Db { command } => db::run(command),
        Command::Doctor { fix, json } => doctor::run(fix, json),
        Command::Init => init::run(),
    }
}

/// A progress line on stderr (stdout is for results).
pub(crate) fn progress(message: impl std::fmt::Display) {
    eprintln!("isolane: {message}");
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A duration as a short human string (`3m`, `2h 5m`, `4d 1h`).
pub(crate) fn age(seconds: u64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
