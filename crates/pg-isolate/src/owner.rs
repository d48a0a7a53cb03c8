//! The owner record pg-isolate writes on every database it creates
//! (`COMMENT ON DATABASE` holding JSON).

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use registry::ProcessIdentity;
use serde::{Deserialize, Serialize};

/// The value of [`OwnerRecord::tool`].
pub(crate) const TOOL: &str = "pg-isolate";

/// What a database is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DatabaseKind {
    /// A long-lived named database (for example one per worktree).
    #[default]
    Named,
    /// A per-test database, dropped when its handle is dropped.
    Test,
    /// A template built once per distinct setup.
    Template,
    /// A pre-created clone waiting in the warm pool.
    Pool,
}

/// Who created a database, when and why; stored on the server as JSON in the
/// database's comment. pg-isolate only ever drops databases carrying one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OwnerRecord {
    /// Always `pg-isolate`.
    pub tool: String,
    /// What the database is for.
    pub kind: DatabaseKind,
    /// The host name of the creating process.
    pub host: String,
    /// The kernel boot id of that host (pids do not survive a reboot).
    #[serde(default)]
    pub boot_id: String,
    /// The pid of the owning process.
    pub pid: u32,
    /// The owning process's start time (clock ticks since boot; 0 if unknown).
    #[serde(default)]
    pub start_time: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// A free-form caller label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// For templates and pool clones: the template key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_key: Option<String>,
    /// For templates: `true` once the setup step completed.
    #[serde(default)]
    pub ready: bool,
    /// For templates: the last time a process asked for it (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
    /// A path on the creating host that the owner lives in (for the
    /// isolane CLI: the repository's git common dir); once it no longer
    /// exists there, the owner is gone for good
    /// ([`OwnerRecord::owner_path_gone`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_path: Option<std::path::PathBuf>,
    /// For a test database kept because its test failed
    /// ([`crate::ServerOptions::keep_failed`]): when it was kept (seconds
    /// since the epoch). gc leaves it for inspection, after its owner is
    /// gone, until [`crate::GcOptions::kept_failed_max_age`] has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_failed: Option<u64>,
}

impl OwnerRecord {
    /// A record owned by the calling process, created now.
    pub(crate) fn new(kind: DatabaseKind, label: Option<&str>) -> Self {
        let me = ProcessIdentity::current();
        let host = host();
        Self {
            tool: TOOL.to_owned(),
            kind,
            host: host.name.clone(),
            boot_id: host.boot_id.clone(),
            pid: me.pid,
            start_time: me.start_time,
            created: now(),
            label: label.map(str::to_owned),
            template_key: None,
            ready: false,
            last_used: None,
            owner_path: None,
            kept_failed: None,
        }
    }

    /// Parses a database comment; `None` when it is not a pg-isolate record.
    pub(crate) fn parse(comment: Option<&str>) -> Option<Self> {
        let record: Self = serde_json::from_str(comment?).ok()?;
        (record.tool == TOOL).then_some(record)
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an owner record always serializes")
    }

    /// Whether the record names an [owner path](OwnerRecord::owner_path)
    /// on this host that no longer exists (its repository was deleted, say).
    pub fn owner_path_gone(&self) -> bool {
        self.host == host().name
            && self
                .owner_path
                .as_deref()
                // Gone only when the system says so: a path we may not read
                // (another user's home) or cannot reach (an unmounted
                // share) is not gone.
                .is_some_and(|path| {
                    !path.as_os_str().is_empty() && matches!(path.try_exists(), Ok(false))
                })
    }

    /// Whether the owning process is on this host (same boot) and gone.
    /// `None` when the owner is on another host or boot, so it cannot be told.
    pub fn owner_gone(&self) -> Option<bool> {
        let here = host();
        if self.host != here.name {
            return None;
        }
        if !self.boot_id.is_empty() && !here.boot_id.is_empty() && self.boot_id != here.boot_id {
            // Same host name, earlier boot: every process of that boot is gone.
            return Some(true);
        }
        let owner = ProcessIdentity {
            pid: self.pid,
            start_time: self.start_time,
        };
        Some(!owner.is_alive())
    }
}

pub(crate) struct Host {
    pub(crate) name: String,
    pub(crate) boot_id: String,
}

pub(crate) fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let read = |path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let mut hostname = read("/proc/sys/kernel/hostname");
        if hostname.is_empty() {
            hostname = read("/etc/hostname");
        }
        // A host name alone does not tell a machine, nor a container that
        // shares it (`--uts host`), whose pids are not ours to judge: the
        // machine id and the pid namespace are part of "this host".
        let mut machine = read("/etc/machine-id");
        if machine.is_empty() {
            machine = read("/var/lib/dbus/machine-id");
        }
        let pid_namespace = std::fs::read_link("/proc/self/ns/pid")
            .map(|link| link.display().to_string())
            .unwrap_or_default();
        Host {
            name: format!("{hostname}/{machine}/{pid_namespace}"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_comments_are_not_ours() {
        let record = OwnerRecord::new(DatabaseKind::Test, Some("it's a label"));
        assert_eq!(
            OwnerRecord::parse(Some(&record.to_json())),
            Some(record.clone())
        );
        assert_eq!(record.owner_gone(), Some(false));
        assert_eq!(OwnerRecord::parse(None), None);
        assert_eq!(OwnerRecord::parse(Some("hand-made database")), None);
        let other = record.to_json().replace("pg-isolate", "other-tool");
        assert_eq!(OwnerRecord::parse(Some(&other)), None);
    }

    #[test]
    fn owners_on_other_hosts_or_boots_are_judged_correctly() {
        let mut record = OwnerRecord::new(DatabaseKind::Test, None);
        record.host = "some-other-host".to_owned();
        assert_eq!(record.owner_gone(), None);
        let mut earlier_boot = OwnerRecord::new(DatabaseKind::Test, None);
        earlier_boot.boot_id = "an-earlier-boot".to_owned();
        assert_eq!(earlier_boot.owner_gone(), Some(true));
    }
}
