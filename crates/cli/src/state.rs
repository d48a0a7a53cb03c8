//! The per-repository registry: which worktree has which ports and database.
//!
//! Lives at `<git common dir>/isolane/registry.json`, so every worktree of a
//! repository (including the test worktrees themselves) sees the same one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The document kept in `registry.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Worktrees {
    #[serde(deserialize_with = "valid_entries")]
    pub(crate) entries: BTreeMap<String, Entry>,
}

/// The entries, refusing any that isolane could not have written: a hostile
/// or damaged registry must not steer `remove` or `gc` to another path, nor
/// smuggle a NUL or a `..` into a name. A refusal makes the whole document
/// corrupt (exit code 1; `isolane doctor --fix` moves it aside).
fn valid_entries<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Entry>, D::Error> {
    use serde::de::Error as _;
    let entries = BTreeMap::<String, Entry>::deserialize(deserializer)?;
    for (key, entry) in &entries {
        let bad = |reason: String| D::Error::custom(format!("entry {key:?}: {reason}"));
        if *key != entry.id {
            return Err(bad(format!("its id is {:?}", entry.id)));
        }
        for (kind, name) in [
            ("purpose", &entry.purpose),
            ("identifier", &entry.identifier),
        ] {
            worktree_core::validate_name(kind, name).map_err(|e| bad(e.to_string()))?;
        }
        if entry.id != format!("{}-{}", entry.purpose, entry.identifier) {
            return Err(bad("its id is not <purpose>-<identifier>".to_owned()));
        }
        let traverses = entry
            .path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !entry.path.is_absolute()
            || traverses
            || entry.path.file_name() != Some(std::ffi::OsStr::new(&entry.id))
        {
            return Err(bad(format!(
                "its path {} is not an absolute path ending in the id",
                entry.path.display()
            )));
        }
        if let Some(branch) = &entry.branch
            && (branch.is_empty() || branch.chars().any(char::is_control))
        {
            return Err(bad(format!("its branch {branch:?} is not a branch name")));
        }
        if let Some(name) = entry
            .ports
            .keys()
            .find(|n| !crate::config::looks_like_port_name(n))
        {
            return Err(bad(format!(
                "its port name {name:?} is not a variable name"
            )));
        }
        if let Some(database) = &entry.database
            && !crate::config::looks_like_database_name(database)
        {
            return Err(bad(format!(
                "its database {database:?} is not a name isolane makes"
            )));
        }
    }
    Ok(entries)
}

impl registry::Document for Worktrees {
    const VERSION: u32 = 1;
}

/// Where an entry is in its life. Every multi-step operation records its
/// intent first, so a crash leaves `Creating` or `Removing` behind for
/// `gc` / `doctor` to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    Creating,
    Ready,
    Removing,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Ready => "ready",
            Self::Removing => "removing",
        }
    }
}

/// One test worktree and everything it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) purpose: String,
    pub(crate) identifier: String,
    pub(crate) branch: Option<String>,
    /// Whether isolane created the branch (and so may delete it on remove).
    #[serde(default)]
    pub(crate) branch_created: bool,
    pub(crate) path: PathBuf,
    /// Whether something already stood at `path` when this entry was made:
    /// then it is not ours, and no rollback or removal may touch it.
    #[serde(default)]
    pub(crate) path_preexisting: bool,
    /// Seconds since the Unix epoch.
    pub(crate) created: u64,
    pub(crate) ports: BTreeMap<String, u16>,
    pub(crate) database: Option<String>,
    pub(crate) phase: Phase,
    /// The process that recorded the current phase (to tell a running
    /// create from a crashed one).
    pub(crate) actor: registry::ProcessIdentity,
    /// The `isolane run` at work in this worktree, if any (or one that was
    /// killed: then what it started is stopped by the next command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) run: Option<RunRecord>,
}

/// An `isolane run` and the process groups it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// The `isolane run` process.
    pub(crate) runner: registry::ProcessIdentity,
    /// Every process the run starts gets `ISOLANE_RUN_TOKEN=<token>` in its
    /// environment, which its descendants inherit: how a process that left
    /// the recorded groups, or one started just before it could be
    /// recorded, is still known as the run's.
    pub(crate) token: String,
    /// The groups started, each led by the process spawned for it.
    pub(crate) groups: Vec<RunGroup>,
}

/// One process group of a run: a service's or the command's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunGroup {
    /// The service's name, or `command`.
    pub(crate) name: String,
    /// The group's leader; its pid is the group id.
    pub(crate) leader: registry::ProcessIdentity,
}

impl Entry {
    /// Whether the worktree's path is a real directory: not missing, and
    /// not a symlink, whose target isolane must never write or run in.
    pub(crate) fn has_real_dir(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir())
    }

    /// Whether a `creating` / `removing` entry was left by a process that is
    /// gone (crashed), as opposed to one still at work.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.phase != Phase::Ready && !self.actor.is_alive()
    }

    /// Whether an `isolane run` is at work in this worktree now.
    pub(crate) fn is_running(&self) -> bool {
        self.run.as_ref().is_some_and(|run| run.runner.is_alive())
    }
}

/// Opens the registry of the repository whose git common dir is `common_dir`.
pub(crate) fn open(common_dir: &Path) -> Result<registry::Store<Worktrees>, registry::Error> {
    registry::Store::open(
        common_dir.join("isolane").join("registry.json"),
        registry::Options::default(),
    )
}

/// Now, in seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
