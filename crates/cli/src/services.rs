//! Services for `isolane run` and `compare`: started in their own process
//! groups with the worktree's environment, their output written to a log
//! file per worktree and service, waited for until ready — a port counts
//! only when a process of the service's own group listens on it — and
//! stopped by process group (TERM, then KILL after a grace period), never
//! by name. Also the command of a run (in a group of its own, the
//! terminal's foreground while it runs) and the stop signals (Ctrl-C, TERM,
//! HUP) both commands handle.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, pthread_sigmask};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Service, looks_like_port_name};
use crate::procs::{self, Target};

/// How many of a service's last output lines a failure shows.
const TAIL_LINES: usize = 20;
/// How much of the end of a log is read to find those lines.
const TAIL_BYTES: u64 = 16 * 1024;
/// How long a service gets between TERM and KILL.
const GRACE: Duration = Duration::from_secs(5);

/// The signal that asked isolane to stop (SIGINT, SIGTERM, SIGHUP), or 0.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Marks the run as interrupted by `signal`: services still starting give
/// up, and a command not started yet is signalled as soon as it starts.
pub(crate) fn interrupt(signal: Signal) {
    STOP_SIGNAL.store(signal as i32, Ordering::SeqCst);
}

/// The signal the run was interrupted by, if any.
pub(crate) fn interrupted_by() -> Option<Signal> {
    Signal::try_from(STOP_SIGNAL.load(Ordering::SeqCst)).ok()
}

/// Whether the run was interrupted.
pub(crate) fn interrupted() -> bool {
    interrupted_by().is_some()
}

/// Signals that make isolane stop CMD and its services and clean up.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Held while a stop signal is noted and passed on, and while CMD's group
/// is published and a signal that came before is passed on: so each signal
/// reaches CMD exactly once, from one side or the other.
static HANDOFF: Mutex<()> = Mutex::new(());

/// Receives the stop signals: marks the run interrupted and passes the
/// signal on to CMD's process group (published in `command_group` while it
/// runs); if the group is still running after the grace period, it gets
/// KILL. Ctrl-C at a terminal reaches CMD directly: its group is the
/// terminal's foreground while it runs.
pub(crate) fn spawn_signal_waiter(command_group: Arc<AtomicI32>) -> std::io::Result<()> {
    let mut signals = Signals::new(STOP_SIGNALS)?;
    std::thread::spawn(move || {
        for raw in signals.forever() {
            let Ok(signal) = Signal::try_from(raw) else {
                continue;
            };
            let _handoff = HANDOFF.lock().unwrap_or_else(PoisonError::into_inner);
            interrupt(signal);
            let group = command_group.load(Ordering::SeqCst);
            if group > 0 {
                pass_on(&command_group, group, signal);
            }
        }
    });
    Ok(())
}

/// Passes the stop `signal` on to CMD's process `group` (published in
/// `command_group`), and sends the group KILL if CMD is still running after
/// the grace period.
fn pass_on(command_group: &Arc<AtomicI32>, group: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(group), signal);
    let command_group = Arc::clone(command_group);
    std::thread::spawn(move || {
        std::thread::sleep(GRACE);
        // Still published: CMD has not exited (its pid is not reaped
        // before it is unpublished, so this is its group).
        if command_group.load(Ordering::SeqCst) == group {
            tracing::warn!(group, "the command ignored {signal}; sending KILL");
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
    });
}

/// Runs `command` to its end as the command of a run: in a process group
/// of its own (passed to `started` as `command` the moment it exists, and
/// published in `command_group` for the signal waiter), in the terminal's
/// foreground when there is one. Whatever it leaves running in its group
/// is stopped when it ends.
pub(crate) fn run_foreground(
    command: &mut Command,
    command_group: &Arc<AtomicI32>,
    started: &mut dyn FnMut(&str, u32),
) -> std::io::Result<ExitStatus> {
    let mut child = command.process_group(0).spawn()?;
    let group = i32::try_from(child.id()).expect("a pid fits in an i32");
    {
        let _handoff = HANDOFF.lock().unwrap_or_else(PoisonError::into_inner);
        command_group.store(group, Ordering::SeqCst);
        // A stop signal that came while CMD was being started found no
        // group to pass on to: pass it on now, KILL after the grace period
        // included.
        if let Some(signal) = interrupted_by() {
            pass_on(command_group, group, signal);
        }
    }
    started("command", child.id());
    let terminal = Foreground::give(group);
    // Exited, but not reaped: until it is, its pid (the group id) cannot be
    // reused, so the group can be signalled safely below.
    let exited = loop {
        match waitid(
            Id::Pid(Pid::from_raw(group)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            // A signal handled meanwhile: CMD still runs.
            Err(nix::errno::Errno::EINTR) => {}
            other => break other,
        }
    };
    drop(terminal);
    command_group.store(0, Ordering::SeqCst);
    if !procs::terminate(&[Target::Group(group)], GRACE).is_empty() {
        tracing::warn!(group, "processes CMD left running ignored TERM; sent KILL");
    }
    if let Err(error) = exited {
        tracing::debug!(%error, "waitid failed; waiting normally");
    }
    child.wait()
}

/// The exit code that passes `status` on: the command's own, or 128 plus
/// the signal that killed it.
pub(crate) fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
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

/// Why a service could not be brought up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ServiceError {
    #[error("cannot start service {name} ({command})")]
    Spawn {
        name: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the log of service {name} at {}", log.display())]
    Log {
        name: String,
        log: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "service {name} cannot start: {port_name}={port} is already in use{}; \
         stop it (or whatever holds the port) and run again",
        holders_text(holders)
    )]
    PortTaken {
        name: String,
        port_name: String,
        port: u16,
        holders: Vec<procs::Holder>,
    },
    #[error(
        "service {name}: {port_name}={port} is answered by a process outside the service{}, \
         not by the service; its last output ({}):\n{tail}",
        holders_text(holders),
        log.display()
    )]
    Impostor {
        name: String,
        port_name: String,
        port: u16,
        holders: Vec<procs::Holder>,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "service {name} exited with {status} before it was ready; its last output ({}):\n{tail}",
        log.display()
    )]
    Died {
        name: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("interrupted while service {name} was starting")]
    Interrupted { name: String },
    #[error(
        "service {name} was not ready after {timeout:?} (waiting for {waiting_for}); \
         its last output ({}):\n{tail}",
        log.display()
    )]
    NotReady {
        name: String,
        timeout: Duration,
        waiting_for: String,
        log: PathBuf,
        tail: String,
    },
}

fn holders_text(holders: &[procs::Holder]) -> String {
    if holders.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
        format!(" by {}", list.join(", "))
    }
}

/// A started service: its process group and its log.
#[derive(Debug)]
pub(crate) struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Running {
    /// The process group id (the pid of the shell we spawned as its leader).
    pub(crate) fn group(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits in an i32")
    }

    /// Stops the whole process group: TERM, then KILL after the grace
    /// period. The group id is the pid of the child we spawned as its
    /// leader, so only processes we started are signalled.
    pub(crate) fn stop(mut self) {
        // The leader is reaped only afterwards: until then its pid, the
        // group id, cannot be reused.
        let stubborn = procs::terminate(&[Target::Group(self.group())], GRACE);
        if !stubborn.is_empty() {
            tracing::warn!(service = %self.name, "service ignored TERM; sent KILL");
        }
        let _ = self.child.wait();
        tracing::info!(service = %self.name, "service stopped");
    }
}

/// Starts every service in order and waits for each to be ready; each
/// group is passed to `started` (name, leader pid) as soon as it exists. On
/// any failure the services already started are stopped before returning.
pub(crate) fn start_all(
    services: &[Service],
    dir: &Path,
    env: &BTreeMap<String, String>,
    log_dir: &Path,
    started: &mut dyn FnMut(&str, u32),
) -> Result<Vec<Running>, ServiceError> {
    let mut running = Vec::new();
    for service in services {
        if interrupted() {
            break;
        }
        match start(service, dir, env, log_dir, started) {
            Ok(service) => running.push(service),
            Err(error) => {
                stop_all(running);
                return Err(error);
            }
        }
    }
    Ok(running)
}

/// Stops services in reverse order of start.
pub(crate) fn stop_all(running: Vec<Running>) {
    for service in running.into_iter().rev() {
        service.stop();
    }
}

/// The log of service `name` in `log_dir`.
pub(crate) fn log_path(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(format!("{name}.log"))
}

/// Opens a fresh log for `name`, keeping the previous run's as `.log.1`.
fn open_log(log_dir: &Path, name: &str) -> Result<(PathBuf, File), ServiceError> {
    let log = log_path(log_dir, name);
    let error = |source| ServiceError::Log {
        name: name.to_owned(),
        log: log.clone(),
        source,
    };
    fs::create_dir_all(log_dir).map_err(error)?;
    match fs::rename(&log, log_dir.join(format!("{name}.log.1"))) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let file = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(error)?;
    Ok((log, file))
}

/// The last lines of the log at `path` (empty if unreadable).
pub(crate) fn tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The port a service waits for, if its `ready` names one.
fn ready_port<'a>(service: &'a Service, env: &BTreeMap<String, String>) -> Option<(&'a str, u16)> {
    let ready = service.ready.as_deref()?;
    if !looks_like_port_name(ready) {
        return None;
    }
    Some((ready, env.get(ready)?.parse().ok()?))
}

fn start(
    service: &Service,
    dir: &Path,
    env: &BTreeMap<String, String>,
    log_dir: &Path,
    started: &mut dyn FnMut(&str, u32),
) -> Result<Running, ServiceError> {
    // The port must be free: whatever answers on it now would be taken for
    // the service (an orphan of a killed run, another user's server).
    if let Some((port_name, port)) = ready_port(service, env) {
        let taken = match procs::listening_sockets(port) {
            Some(sockets) => (!sockets.is_empty()).then(|| procs::holders(&sockets)),
            None => connects(port).then(Vec::new),
        };
        if let Some(holders) = taken {
            return Err(ServiceError::PortTaken {
                name: service.name.clone(),
                port_name: port_name.to_owned(),
                port,
                holders,
            });
        }
    }
    tracing::info!(service = %service.name, command = %service.command, "starting service");
    let (log, file) = open_log(log_dir, &service.name)?;
    let stdout = file.try_clone().map_err(|source| ServiceError::Log {
        name: service.name.clone(),
        log: log.clone(),
        source,
    })?;
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&service.command)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(file)
        // Its own process group, led by the shell: stopping the group
        // reaches everything the command starts.
        .process_group(0)
        .spawn()
        .map_err(|source| ServiceError::Spawn {
            name: service.name.clone(),
            command: service.command.clone(),
            source,
        })?;
    started(&service.name, child.id());
    let mut running = Running {
        name: service.name.clone(),
        child,
        log,
    };
    if let Err(error) = wait_ready(service, &mut running, dir, env) {
        running.stop();
        return Err(error);
    }
    tracing::info!(service = %service.name, "service ready");
    Ok(running)
}

fn connects(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Whether the service listens on `port`: `Ok(true)` when a process of its
/// group holds a listening socket there, an error when something else does.
fn listens(
    service: &Service,
    running: &Running,
    port_name: &str,
    port: u16,
) -> Result<bool, ServiceError> {
    let Some(sockets) = procs::listening_sockets(port) else {
        // No socket tables to read (not Linux): the port answering is all
        // there is to go by.
        return Ok(connects(port));
    };
    if sockets.is_empty() {
        return Ok(false);
    }
    if procs::group_holds(running.group(), &sockets) {
        return Ok(true);
    }
    Err(ServiceError::Impostor {
        name: service.name.clone(),
        port_name: port_name.to_owned(),
        port,
        holders: procs::holders(&sockets),
        log: running.log.clone(),
        tail: tail(&running.log),
    })
}

fn wait_ready(
    service: &Service,
    running: &mut Running,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), ServiceError> {
    let Some(ready) = service.ready.as_deref() else {
        return Ok(());
    };
    let deadline = Instant::now() + service.timeout;
    let port = ready_port(service, env);
    let waiting_for = match port {
        Some((_, port)) => format!("{ready}={port} to accept connections"),
        None => format!("`{ready}` to succeed"),
    };
    loop {
        if interrupted() {
            return Err(ServiceError::Interrupted {
                name: service.name.clone(),
            });
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(ServiceError::Died {
                name: service.name.clone(),
                status,
                log: running.log.clone(),
                tail: tail(&running.log),
            });
        }
        let is_ready = match port {
            Some((port_name, port)) => listens(service, running, port_name, port)?,
            None => Command::new("/bin/sh")
                .arg("-c")
                .arg(ready)
                .current_dir(dir)
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success()),
        };
        if is_ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ServiceError::NotReady {
                name: service.name.clone(),
                timeout: service.timeout,
                waiting_for,
                log: running.log.clone(),
                tail: tail(&running.log),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
