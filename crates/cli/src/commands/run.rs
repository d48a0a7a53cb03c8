//! `isolane run ID -- CMD`: the worktree locked as in use, services up on
//! its ports, CMD run in a process group of its own with the worktree's
//! environment, then everything stopped again by process group — also when
//! CMD fails or isolane is interrupted. The run is recorded in the registry
//! (`runs`), so that if isolane is killed outright, the next command stops
//! what it left.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::AtomicI32;

use anyhow::{Context as _, Result};

use super::progress;
use crate::cli::RunArgs;
use crate::context::Repo;
use crate::lifecycle::open_ready;
use crate::runs;
use crate::services;

pub(super) fn run(args: &RunArgs) -> Result<ExitCode> {
    // From here on a stop signal no longer kills isolane: it is handled
    // below, so that services are stopped and the worktree unlocked. (A
    // handler, not a blocked mask: CMD must not inherit a blocked mask, and
    // exec resets handled signals to their default.)
    let command_group = Arc::new(AtomicI32::new(0));
    services::spawn_signal_waiter(Arc::clone(&command_group))
        .context("cannot install signal handlers")?;

    let repo = Repo::discover()?;
    let (entry, mut env) = open_ready(&repo, &args.id)?;
    // Only the program's name: arguments may hold secrets, and the reason
    // shows in `git worktree list`, `isolane show` and gc's report.
    let program = args.command.first().map_or("", String::as_str);
    let reason = format!("isolane run (pid {}): {program}", std::process::id());
    repo.worktrees
        .lock(&entry.id, &reason, registry::ProcessIdentity::current())
        .with_context(|| format!("cannot mark worktree {} as in use", entry.id))?;

    // Recorded before anything is started (`begin` first stops what a
    // killed run left): from here on a kill of isolane
    // leaves a record that the next command acts on.
    let outcome = runs::begin(&repo, &entry.id).and_then(|token| {
        env.insert(runs::TOKEN_VAR.to_owned(), token.clone());
        let outcome = run_locked(&repo, args, &entry.id, &entry.path, &env, &command_group);
        runs::finish(&repo, &entry.id, &token);
        outcome
    });
    if let Err(error) = repo.worktrees.unlock(&entry.id) {
        progress(format_args!("cannot unlock worktree {}: {error}", entry.id));
    }
    outcome
}

fn run_locked(
    repo: &Repo,
    args: &RunArgs,
    id: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
    command_group: &Arc<AtomicI32>,
) -> Result<ExitCode> {
    let mut record = runs::recorder(repo, id);
    let log_dir = repo.log_dir(id);
    let running = if args.no_services || repo.config.services.is_empty() {
        Vec::new()
    } else {
        progress(format_args!(
            "starting {} service(s)",
            repo.config.services.len()
        ));
        match services::start_all(&repo.config.services, dir, env, &log_dir, &mut record) {
            Ok(running) => running,
            // A stop signal while a service was starting is a stop.
            Err(_) if services::interrupted() => return Ok(ExitCode::from(130)),
            Err(error) => return Err(error.into()),
        }
    };
    if services::interrupted() {
        services::stop_all(running);
        return Ok(ExitCode::from(130));
    }

    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut command = Command::new(program);
    command.args(rest).current_dir(dir).envs(env);
    let status = services::run_foreground(&mut command, command_group, &mut record)
        .with_context(|| format!("cannot run {program} in {}", dir.display()));
    let had_services = !running.is_empty();
    services::stop_all(running);
    let status = status?;
    if !status.success() && had_services {
        progress(format_args!("service logs: {}", log_dir.display()));
    }
    Ok(services::exit_code(status))
}
