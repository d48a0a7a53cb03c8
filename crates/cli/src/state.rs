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
    pub(crate) entries: BTreeMap<String, Entry>,
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
}

impl Entry {
    /// Whether a `creating` / `removing` entry was left by a process that is
    /// gone (crashed), as opposed to one still at work.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.phase != Phase::Ready && !self.actor.is_alive()
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
