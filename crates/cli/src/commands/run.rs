//! `isolane run ID -- CMD`: the worktree locked as in use, services up on
//! its ports, CMD run with its environment, then everything stopped again —
//! also when CMD fails or isolane is interrupted.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::AtomicI32;

use anyhow::{Context as _, Result};

use super::progress;
use crate::cli::RunArgs;
use crate::context::Repo;
use crate::lifecycle::open_ready;
use crate::services;

pub(super) fn run(args: &RunArgs) -> Result<ExitCode> {
    // From here on a stop signal no longer kills isolane: it is handled
    // below, so that services are stopped and the worktree unlocked. (A
    // handler, not a blocked mask: CMD must not inherit a blocked mask, and
    // exec resets handled signals to their default.)
    let child_pid = Arc::new(AtomicI32::new(0));
    services::spawn_signal_waiter(Arc::clone(&child_pid))
        .context("cannot install signal handlers")?;

    let repo = Repo::discover()?;
    let (entry, env) = open_ready(&repo, &args.id)?;
    // Only the program's name: arguments may hold secrets, and the reason
    // shows in `git worktree list`, `isolane show` and gc's report.
    let program = args.command.first().map_or("", String::as_str);
    let reason = format!("isolane run (pid {}): {program}", std::process::id());
    repo.worktrees
        .lock(&entry.id, &reason, registry::ProcessIdentity::current())
        .with_context(|| format!("cannot mark worktree {} as in use", entry.id))?;

    let outcome = run_locked(&repo, args, &entry.path, &env, &child_pid);
    if let Err(error) = repo.worktrees.unlock(&entry.id) {
        progress(format_args!("cannot unlock worktree {}: {error}", entry.id));
    }
    outcome
}

fn run_locked(
    repo: &Repo,
    args: &RunArgs,
    dir: &std::path::Path,
    env: &std::collections::BTreeMap<String, String>,
    child_pid: &AtomicI32,
) -> Result<ExitCode> {
    let running = if args.no_services || repo.config.services.is_empty() {
        Vec::new()
    } else {
        progress(format_args!(
            "starting {} service(s)",
            repo.config.services.len()
        ));
        services::start_all(&repo.config.services, dir, env)?
    };
    if services::interrupted() {
        services::stop_all(running);
        return Ok(ExitCode::from(130));
    }

    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut command = Command::new(program);
    command.args(rest).current_dir(dir).envs(env);
    let status = services::run_foreground(&mut command, child_pid)
        .with_context(|| format!("cannot run {program} in {}", dir.display()));
    services::stop_all(running);
    Ok(services::exit_code(status?))
}
