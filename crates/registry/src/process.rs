use serde::{Deserialize, Serialize};

/// The environment variable that marks every process an `isolane run`
/// starts (its value names the run), so that a run's processes can be
/// found again once they left the process group they were started in.
///
/// A long-lived server that is shared beyond the run (the embedded
/// PostgreSQL server, started on demand from inside a run) must be started
/// without it: `command.env_remove(RUN_TOKEN_ENV)`.
pub const RUN_TOKEN_ENV: &str = "ISOLANE_RUN_TOKEN";

/// A process, identified so that a reused pid is not mistaken for it.
///
/// A pid alone is not an identity: once a process exits the kernel hands its
/// pid to the next process. The start time (in clock ticks since boot, from
/// `/proc/<pid>/stat` on Linux) tells the two apart. Where the start time is
/// unknown (`0`), only the pid is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// The process start time in clock ticks since boot; `0` when unknown.
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The identity of the calling process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: start_time_of(pid).unwrap_or(0),
        }
    }

    /// The identity of a running process, or `None` if no such pid runs.
    pub fn of_pid(pid: u32) -> Option<Self> {
        if !Self::pid_exists(pid) {
            return None;
        }
        Some(Self {
            pid,
            start_time: start_time_of(pid).unwrap_or(0),
        })
    }

    /// Whether this very process is still running (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        if !Self::pid_exists(self.pid) {
            return false;
        }
        // A zombie has exited: only its parent has not collected it yet
        // (or nobody will, under an init that does not reap).
        if state_of(self.pid).is_some_and(|state| matches!(state, 'Z' | 'X')) {
            return false;
        }
        match (self.start_time, start_time_of(self.pid)) {
            (0, _) | (_, None) => true,
            (recorded, Some(now)) => recorded == now,
        }
    }

    /// Whether any process with this pid exists (it may be a reused pid).
    pub fn pid_exists(pid: u32) -> bool {
        let Ok(raw) = i32::try_from(pid) else {
            return false;
        };
        if raw <= 0 {
            return false;
        }
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
            Ok(()) => true,
            // The process exists but belongs to someone else.
            Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        }
    }
}

/// Reads field 3 (`state`) of `/proc/<pid>/stat`: `R`, `S`, ..., `Z` for a
/// zombie.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Reads field 22 (`starttime`) of `/proc/<pid>/stat`.
///
/// The second field (the command name) is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted after the last `)`.
fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts at field 3 (state); starttime is field 22.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_has_a_start_time() {
        let me = ProcessIdentity::current();
        assert!(me.is_alive());
        assert_ne!(me.start_time, 0, "/proc is expected on the test machines");
    }

    #[test]
    fn a_different_start_time_means_a_reused_pid() {
        let me = ProcessIdentity::current();
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn a_killed_child_is_dead() -> Result<(), Box<dyn std::error::Error>> {
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        let identity = ProcessIdentity::of_pid(child.id()).expect("the child was just spawned");
        assert!(identity.is_alive());
        child.kill()?;
        child.wait()?;
        assert!(!identity.is_alive());
        assert!(!ProcessIdentity::pid_exists(0));
        Ok(())
    }

    #[test]
    fn a_zombie_is_dead() -> Result<(), Box<dyn std::error::Error>> {
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        let identity = ProcessIdentity::of_pid(child.id()).expect("the child was just spawned");
        child.kill()?;
        // Exited but not reaped yet: a zombie, whose pid still exists.
        while state_of(identity.pid) != Some('Z') {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(ProcessIdentity::pid_exists(identity.pid));
        assert!(!identity.is_alive());
        child.wait()?;
        Ok(())
    }
}
