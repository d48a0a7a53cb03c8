//! Services for `isolane run` and `compare`: started in their own process
//! groups with the worktree's environment, waited for until ready, and
//! stopped by process group (TERM, then KILL after a grace period) — never
//! by name. Also the stop signals (Ctrl-C, TERM, HUP) both commands handle.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Service, looks_like_port_name};

/// How many of a service's last output lines a failure shows.
const TAIL_LINES: usize = 20;
/// How long a service gets between TERM and KILL.
const GRACE: Duration = Duration::from_secs(5);

/// Signals that make isolane stop CMD and its services and clean up.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

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

/// Receives the blocked stop signals: marks the run interrupted and passes
/// the signal on to CMD. A Ctrl-C from the terminal reaches CMD directly
/// (it shares our process group), so SIGINT is only passed on when there is
/// no terminal, i.e. when someone sent it to isolane alone.
pub(crate) fn spawn_signal_waiter(child_pid: Arc<AtomicI32>) -> std::io::Result<()> {
    let mut signals = Signals::new(STOP_SIGNALS)?;
    let from_terminal = std::io::stdin().is_terminal();
    std::thread::spawn(move || {
        for raw in signals.forever() {
            let Ok(signal) = Signal::try_from(raw) else {
                continue;
            };
            interrupt(signal);
            let pid = child_pid.load(Ordering::SeqCst);
            if pid > 0 && !(signal == Signal::SIGINT && from_terminal) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    });
    Ok(())
}

/// Runs `command` to its end as the command of a run: its pid is
/// published in `child_pid` for the signal waiter, and a stop signal that
/// came while it was being started is passed on as soon as it has a pid.
pub(crate) fn run_foreground(
    command: &mut Command,
    child_pid: &AtomicI32,
) -> std::io::Result<ExitStatus> {
    let mut child = command.spawn()?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    child_pid.store(pid, Ordering::SeqCst);
    // Both sides use SeqCst, so at least one of them sees the other.
    if let Some(signal) = interrupted_by() {
        let _ = kill(Pid::from_raw(pid), signal);
    }
    let status = child.wait();
    child_pid.store(0, Ordering::SeqCst);
    status
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
    #[error("service {name} exited with {status} before it was ready; its last output:\n{tail}")]
    Died {
        name: String,
        status: std::process::ExitStatus,
        tail: String,
    },
    #[error("interrupted while service {name} was starting")]
    Interrupted { name: String },
    #[error(
        "service {name} was not ready after {timeout:?} (waiting for {waiting_for}); its last output:\n{tail}"
    )]
    NotReady {
        name: String,
        timeout: Duration,
        waiting_for: String,
        tail: String,
    },
}

/// A started service: its process group and the tail of its output.
#[derive(Debug)]
pub(crate) struct Running {
    name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Running {
    /// The last lines the service printed (stdout and stderr interleaved).
    fn tail(&self) -> String {
        let lines = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>());
        lines.unwrap_or_default().join("\n")
    }

    /// Stops the whole process group: TERM, then KILL after the grace
    /// period. The group id is the pid of the child we spawned as its
    /// leader, so only processes we started are signalled.
    pub(crate) fn stop(mut self) {
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return;
        };
        let group = Pid::from_raw(raw);
        if matches!(self.child.try_wait(), Ok(None)) || group_exists(group) {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline {
                let _ = self.child.try_wait();
                if !group_exists(group) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if group_exists(group) {
                tracing::warn!(service = %self.name, "service ignored TERM; sending KILL");
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
        tracing::info!(service = %self.name, "service stopped");
    }
}

fn group_exists(group: Pid) -> bool {
    killpg(group, None).is_ok()
}

/// Starts every service in order and waits for each to be ready. On any
/// failure the services already started are stopped before returning.
pub(crate) fn start_all(
    services: &[Service],
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Vec<Running>, ServiceError> {
    let mut running = Vec::new();
    for service in services {
        if interrupted() {
            break;
        }
        match start(service, dir, env) {
            Ok(started) => running.push(started),
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

fn start(
    service: &Service,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Running, ServiceError> {
    tracing::info!(service = %service.name, command = %service.command, "starting service");
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&service.command)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, led by the shell: stopping the group
        // reaches everything the command starts.
        .process_group(0)
        .spawn()
        .map_err(|source| ServiceError::Spawn {
            name: service.name.clone(),
            command: service.command.clone(),
            source,
        })?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stdout) = child.stdout.take() {
        collect(stdout, Arc::clone(&tail));
    }
    if let Some(stderr) = child.stderr.take() {
        collect(stderr, Arc::clone(&tail));
    }
    let mut running = Running {
        name: service.name.clone(),
        child,
        tail,
    };
    if let Err(error) = wait_ready(service, &mut running, dir, env) {
        running.stop();
        return Err(error);
    }
    tracing::info!(service = %service.name, "service ready");
    Ok(running)
}

fn collect(stream: impl Read + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    });
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
    let port = if looks_like_port_name(ready) {
        env.get(ready).and_then(|p| p.parse::<u16>().ok())
    } else {
        None
    };
    let waiting_for = match port {
        Some(port) => format!("{ready}={port} to accept connections"),
        None => format!("`{ready}` to succeed"),
    };
    loop {
        if interrupted() {
            return Err(ServiceError::Interrupted {
                name: service.name.clone(),
            });
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            // Give the output threads a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(50));
            return Err(ServiceError::Died {
                name: service.name.clone(),
                status,
                tail: running.tail(),
            });
        }
        let is_ready = match port {
            Some(port) => TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_millis(200),
            )
            .is_ok(),
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
                tail: running.tail(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
