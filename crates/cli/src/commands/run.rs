//! `isolane run ID -- CMD`: the worktree locked as in use, services up on
//! its ports, CMD run in a process group of its own with the worktree's
//! environment, then everything stopped again by process group — also when
//! CMD fails or isolane is interrupted. The run is recorded in the registry
//! (`runs`), so that if isolane is killed outright, the next command stops
//! what it left.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, pthread_sigmask};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{InputError, progress};
use crate::cli::RunArgs;
use crate::context::Repo;
use crate::procs::{self, Target};
use crate::runs;
use crate::services;
use crate::state::Phase;

/// Signals that make isolane stop CMD and its services and clean up.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// How long what CMD left running in its group gets between TERM and KILL.
const GRACE: Duration = Duration::from_secs(5);

pub(super) fn run(args: &RunArgs) -> Result<ExitCode> {
    // From here on a stop signal no longer kills isolane: it is handled
    // below, so that services are stopped and the worktree unlocked. (A
    // handler, not a blocked mask: CMD must not inherit a blocked mask, and
    // exec resets handled signals to their default.)
    let command_group = Arc::new(AtomicI32::new(0));
    spawn_signal_waiter(Arc::clone(&command_group))?;

    let repo = Repo::discover()?;
    runs::stop_leftovers(&repo)?;
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
    let mut env = super::info::environment(&repo, &args.id)?;
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

    // Recorded before anything is started: from here on a kill of isolane
    // leaves a record that the next command acts on.
    let outcome = runs::begin(&repo, &entry.id).and_then(|token| {
        env.insert(runs::TOKEN_VAR.to_owned(), token);
        let outcome = run_locked(&repo, args, &entry.id, &entry.path, &env, &command_group);
        if let Err(error) = runs::end(&repo, &entry.id) {
            progress(format_args!(
                "cannot clear the run record of {}: {error:#}",
                entry.id
            ));
        }
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
    dir: &std::path::Path,
    env: &std::collections::BTreeMap<String, String>,
    command_group: &AtomicI32,
) -> Result<ExitCode> {
    let mut record = |name: &str, leader: u32| {
        if let Err(error) = runs::add_group(repo, id, name, leader) {
            tracing::warn!(id, name, leader, "cannot record a process group: {error:#}");
        }
    };
    let log_dir = repo.log_dir(id);
    let running = if args.no_services || repo.config.services.is_empty() {
        Vec::new()
    } else {
        progress(format_args!(
            "starting {} service(s)",
            repo.config.services.len()
        ));
        services::start_all(&repo.config.services, dir, env, &log_dir, &mut record)?
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
        // A group of its own: every stop reaches whatever CMD starts.
        .process_group(0)
        .spawn();
    let status = match spawned {
        Ok(child) => {
            record("command", child.id());
            Ok(wait_for_command(child, command_group))
        }
        Err(error) => Err(anyhow::Error::from(error)
            .context(format!("cannot run {program} in {}", dir.display()))),
    };
    let had_services = !running.is_empty();
    services::stop_all(running);
    let token = env.get(runs::TOKEN_VAR).map_or("", String::as_str);
    let strays = runs::stop_strays(token);
    if strays > 0 {
        progress(format_args!(
            "stopped {strays} process(es) this run started that had left their process group"
        ));
    }
    let status = status??;
    if !status.success() && had_services {
        progress(format_args!("service logs: {}", log_dir.display()));
    }
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    })
}

/// Waits for CMD (in the terminal's foreground when there is one), then
/// stops whatever it left running in its group, then reaps it.
fn wait_for_command(mut child: Child, command_group: &AtomicI32) -> Result<ExitStatus> {
    let group = i32::try_from(child.id()).expect("a pid fits in an i32");
    command_group.store(group, Ordering::SeqCst);
    // A stop signal that came while CMD was being started found no group
    // to pass on to: pass it on now. (Both sides use SeqCst, so at least
    // one of them sees the other.)
    if let Some(signal) = services::interrupted_by() {
        let _ = killpg(Pid::from_raw(group), signal);
    }
    let terminal = Foreground::give(group);
    // Exited, but not reaped: until it is, its pid (the group id) cannot be
    // reused, so the group can be signalled safely below.
    let exited = waitid(
        Id::Pid(Pid::from_raw(group)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    );
    drop(terminal);
    command_group.store(0, Ordering::SeqCst);
    let stubborn = procs::terminate(&[Target::Group(group)], GRACE);
    if !stubborn.is_empty() {
        tracing::warn!(group, "processes CMD left running ignored TERM; sent KILL");
    }
    if let Err(error) = exited {
        tracing::debug!(%error, "waitid failed; waiting normally");
    }
    child.wait().context("cannot wait for the command")
}

/// The terminal's foreground given to CMD's group while it runs (so that it
/// can read the terminal and gets Ctrl-C itself), and taken back after.
struct Foreground {
    ours: Pid,
}

impl Foreground {
    fn give(group: i32) -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let ours = nix::unistd::getpgrp();
        // Only when we are the foreground: a background isolane must not
        // take the terminal from the shell's job.
        if nix::unistd::tcgetpgrp(stdin.as_fd()).ok()? != ours {
            return None;
        }
        nix::unistd::tcsetpgrp(stdin.as_fd(), Pid::from_raw(group)).ok()?;
        // Had CMD touched the terminal before it was its own, it was
        // stopped for it: let it go on.
        let _ = killpg(Pid::from_raw(group), Signal::SIGCONT);
        Some(Self { ours })
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // From the background, taking the terminal back raises SIGTTOU
        // unless it is blocked; blocked on this thread only, and only here.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let mut previous = SigSet::empty();
        let blocked =
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut previous)).is_ok();
        let _ = nix::unistd::tcsetpgrp(std::io::stdin().as_fd(), self.ours);
        if blocked {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
        }
    }
}

/// Receives the stop signals: marks the run interrupted and passes the
/// signal on to CMD's process group. (Ctrl-C at a terminal reaches CMD
/// directly: its group is the terminal's foreground while it runs.)
fn spawn_signal_waiter(command_group: Arc<AtomicI32>) -> Result<()> {
    let mut signals = Signals::new(STOP_SIGNALS).context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        for raw in signals.forever() {
            let Ok(signal) = Signal::try_from(raw) else {
                continue;
            };
            services::interrupt(signal);
            let group = command_group.load(Ordering::SeqCst);
            if group > 0 {
                let _ = killpg(Pid::from_raw(group), signal);
            }
        }
    });
    Ok(())
}
