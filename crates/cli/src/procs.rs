//! What the system says about processes: who listens on a port, which
//! processes a process group or a run holds, and stopping them (TERM, then
//! KILL after a grace period) — always by process group or by verified
//! process identity, never by name.
//!
//! Read from `/proc` (Linux). Where it cannot be read, callers fall back to
//! weaker checks and say so.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use procfs::process::{FDTarget, Process};
use registry::ProcessIdentity;

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) pid: i32,
    /// Its command line, or `?` where the system does not tell.
    pub(crate) command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// The inodes of the TCP sockets (IPv4 and IPv6) listening on `port`, or
/// `None` where the kernel's socket tables cannot be read.
pub(crate) fn listening_sockets(port: u16) -> Option<HashSet<u64>> {
    let v4 = procfs::net::tcp().ok();
    let v6 = procfs::net::tcp6().ok();
    if v4.is_none() && v6.is_none() {
        return None;
    }
    Some(
        v4.into_iter()
            .chain(v6)
            .flatten()
            .filter(|entry| {
                entry.state == procfs::net::TcpState::Listen && entry.local_address.port() == port
            })
            .map(|entry| entry.inode)
            .collect(),
    )
}

/// Whether `process` has one of `sockets` open.
fn holds_any(process: &Process, sockets: &HashSet<u64>) -> bool {
    process.fd().is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| matches!(fd.target, FDTarget::Socket(inode) if sockets.contains(&inode)))
    })
}

/// The processes that hold one of `sockets`, as far as we may look (other
/// users' descriptors are closed to us unless we are root).
pub(crate) fn holders(sockets: &HashSet<u64>) -> Vec<Holder> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter(|process| holds_any(process, sockets))
        .map(|process| Holder {
            pid: process.pid,
            command: process
                .cmdline()
                .ok()
                .filter(|args| !args.is_empty())
                .map_or_else(|| "?".to_owned(), |args| args.join(" ")),
        })
        .collect()
}

/// Whether a process of process group `group` holds one of `sockets`.
pub(crate) fn group_holds(group: i32, sockets: &HashSet<u64>) -> bool {
    let Ok(all) = procfs::process::all_processes() else {
        return false;
    };
    all.flatten()
        .filter(|process| process.stat().is_ok_and(|stat| stat.pgrp == group))
        .any(|process| holds_any(&process, sockets))
}

/// The processes whose environment carries `var=value` (ours only: other
/// users' environments are closed to us unless we are root).
pub(crate) fn carrying(var: &str, value: &str) -> Vec<ProcessIdentity> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let me = std::process::id();
    all.flatten()
        .filter(|process| {
            process.environ().is_ok_and(|env| {
                env.get(std::ffi::OsStr::new(var))
                    .is_some_and(|v| v == std::ffi::OsStr::new(value))
            })
        })
        .filter_map(|process| ProcessIdentity::of_pid(u32::try_from(process.pid).ok()?))
        .filter(|identity| identity.pid != me)
        .collect()
}

/// Something to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A process group we lead (the group of a child we spawned with
    /// `process_group(0)`): signalled as a whole.
    Group(i32),
    /// One process, signalled only while its identity still matches.
    Process(ProcessIdentity),
}

impl Target {
    fn alive(&self) -> bool {
        match *self {
            Self::Group(group) => group_alive(group),
            Self::Process(identity) => identity.is_alive(),
        }
    }

    fn signal(&self, signal: Signal) {
        match *self {
            Self::Group(group) => {
                let _ = killpg(Pid::from_raw(group), signal);
            }
            Self::Process(identity) => {
                // Checked right before: a pid reused since is never hit.
                if identity.is_alive()
                    && let Ok(pid) = i32::try_from(identity.pid)
                {
                    let _ = kill(Pid::from_raw(pid), signal);
                }
            }
        }
    }
}

/// Whether process group `group` has a member that is not a zombie. (A
/// leader we have not reaped yet keeps its group id from being reused, but
/// is nothing to stop.)
fn group_alive(group: i32) -> bool {
    if killpg(Pid::from_raw(group), None).is_err() {
        return false;
    }
    let Ok(all) = procfs::process::all_processes() else {
        return true;
    };
    all.flatten().any(|process| {
        process
            .stat()
            .is_ok_and(|stat| stat.pgrp == group && stat.state != 'Z')
    })
}

/// Stops `targets`: TERM, then KILL to whatever is left after `grace`.
/// Returns the targets that needed KILL.
pub(crate) fn terminate(targets: &[Target], grace: Duration) -> Vec<Target> {
    let living: Vec<Target> = targets.iter().copied().filter(Target::alive).collect();
    for target in &living {
        target.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        if !living.iter().any(Target::alive) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stubborn: Vec<Target> = living.into_iter().filter(Target::alive).collect();
    for target in &stubborn {
        target.signal(Signal::SIGKILL);
    }
    // A killed process still holds its sockets until the kernel has torn
    // it down: wait (briefly) for that, so that a caller that goes on to
    // use its ports finds them free.
    let deadline = Instant::now() + KILL_WAIT;
    while stubborn.iter().any(Target::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stubborn
}

/// How long [`terminate`] waits for killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(2);
