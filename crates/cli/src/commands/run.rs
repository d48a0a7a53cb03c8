//! `isolane run ID -- CMD`: the worktree locked as in use, services up on
//! its ports, CMD run with its environment, then everything stopped again —
//! also when CMD fails or isolane is interrupted.

use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context as _, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{InputError, progress};
use crate::cli::RunArgs;
use crate::context::Repo;
use crate::services;
use crate::state::Phase;

/// Signals that make isolane stop CMD and its services and clean up.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

pub(super) fn run(args: &RunArgs) -> Result<ExitCode> {
    // From here on a stop signal no longer kills isolane: it is handled
    // below, so that services are stopped and the worktree unlocked. (A
    // handler, not a blocked mask: CMD must not inherit a blocked mask, and
    // exec resets handled signals to their default.)
    let child_pid = Arc::new(AtomicI32::new(0));
    spawn_signal_waiter(Arc::clone(&child_pid))?;

    let repo = Repo::discover()?;
    let entry = repo.entry(&args.id)?;
    if entry.phase != Phase::Ready {
        return Err(InputError(format!(
            "worktree {} is {}, not ready",
            entry.id,
            entry.phase.as_str()
        ))
        .into());
    }
    repo.check_path(&entry)?;
    // Not through a symlink: the files written below would land in
    // whatever it points at.
    if !entry.has_real_dir() {
        return Err(InputError(format!(
            "worktree {} has no directory at {} (isolane doctor --fix)",
            entry.id,
            entry.path.display()
        ))
        .into());
    }
    let env = super::info::environment(&repo, &args.id)?;
    // The database URL can change (a restarted server): refresh the files
    // test code reads before it runs.
    let database_url = env.get("DATABASE_URL").map(String::as_str);
    let config = &repo.config;
    crate::envfile::write_files(
        &entry.path,
        &config.env_file,
        &config.metadata_file,
        &entry,
        database_url,
    )
    .with_context(|| {
        format!(
            "cannot refresh {} in {}",
            config.env_file,
            entry.path.display()
        )
    })?;
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
    let spawned = Command::new(program)
        .args(rest)
        .current_dir(dir)
        .envs(env)
        .spawn();
    let status = match spawned {
        Ok(mut child) => {
            let pid = i32::try_from(child.id()).unwrap_or(0);
            child_pid.store(pid, Ordering::SeqCst);
            // A stop signal that came while CMD was being started found no
            // pid to pass on to: pass it on now. (Both sides use SeqCst, so
            // at least one of them sees the other.)
            if let Some(signal) = services::interrupted_by() {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            let status = child.wait();
            child_pid.store(0, Ordering::SeqCst);
            status.with_context(|| format!("cannot wait for {program}"))
        }
        Err(error) => Err(anyhow::Error::from(error)
            .context(format!("cannot run {program} in {}", dir.display()))),
    };
    services::stop_all(running);
    let status = status?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    })
}

/// Receives the blocked stop signals: marks the run interrupted and passes
/// the signal on to CMD. A Ctrl-C from the terminal reaches CMD directly
/// (it shares our process group), so SIGINT is only passed on when there is
/// no terminal, i.e. when someone sent it to isolane alone.
fn spawn_signal_waiter(child_pid: Arc<AtomicI32>) -> Result<()> {
    let mut signals = Signals::new(STOP_SIGNALS).context("cannot install signal handlers")?;
    let from_terminal = std::io::stdin().is_terminal();
    std::thread::spawn(move || {
        for raw in signals.forever() {
            let Ok(signal) = Signal::try_from(raw) else {
                continue;
            };
            services::interrupt(signal);
            let pid = child_pid.load(Ordering::SeqCst);
            if pid > 0 && !(signal == Signal::SIGINT && from_terminal) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    });
    Ok(())
}
