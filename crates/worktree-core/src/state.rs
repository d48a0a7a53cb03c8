//! This crate's own bookkeeping under `<git common dir>/isolane/worktree-core/`:
//! per-worktree lock files, the short repository lock, and intent records
//! that let the next call roll back an operation a crash interrupted.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io};

/// An exclusive OS file lock, released on drop or when the process dies.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Blocks until the lock at `path` is held.
    pub(crate) fn acquire(path: &Path) -> Result<Self> {
        Self::lock(path, true).map(|lock| lock.expect("a blocking lock is always acquired"))
    }

    /// Takes the lock if nobody holds it.
    pub(crate) fn try_acquire(path: &Path) -> Result<Option<Self>> {
        Self::lock(path, false)
    }

    fn lock(path: &Path, block: bool) -> Result<Option<Self>> {
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(io("open lock file", path))?;
            if block {
                file.lock().map_err(io("lock", path))?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", path)(e)),
                }
            }
            // The file may have been unlinked by its previous holder while we
            // waited: only a lock on the file still at `path` counts.
            let held = file.metadata().map_err(io("stat lock file", path))?;
            match std::fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(Self {
                        _file: file,
                        path: path.to_owned(),
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("stat lock file", path)(e)),
            }
        }
    }

    /// Deletes the lock file while still holding it.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What an interrupted operation had begun, for [`crate::Worktrees::recover`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Intent {
    /// A full create: roll back everything it made.
    Create {
        id: String,
        path: PathBuf,
        admin: PathBuf,
        /// A branch it created and the commit it was created at.
        branch_created: Option<(String, String)>,
    },
    /// A pooled worktree being handed out: discard the pooled worktree.
    Handout {
        id: String,
        slot: PathBuf,
        path: PathBuf,
        admin: PathBuf,
        branch_created: Option<(String, String)>,
    },
    /// A worktree moving into the pool: finish the move.
    Release {
        id: String,
        path: PathBuf,
        slot: PathBuf,
        admin: PathBuf,
        /// The commit the pooled worktree's HEAD is detached at.
        head: String,
        /// A branch to delete once the worktree is pooled, and the commit
        /// it was at when checked (as for a remove).
        #[serde(default)]
        delete_branch: Option<(String, String)>,
    },
    /// A worktree being removed: its directory is renamed to `trash` (a
    /// tombstone) before anything is deleted. Finished when the directory
    /// is gone from `path`; dropped (the worktree is whole) when it is
    /// still there.
    Remove {
        id: String,
        path: PathBuf,
        trash: PathBuf,
        admin: PathBuf,
        /// The branch to delete and the commit it was at when checked.
        delete_branch: Option<(String, String)>,
    },
}

impl Intent {
    pub(crate) fn id(&self) -> &str {
        match self {
            Intent::Create { id, .. }
            | Intent::Handout { id, .. }
            | Intent::Release { id, .. }
            | Intent::Remove { id, .. } => id,
        }
    }
}

/// Paths of the bookkeeping directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub(crate) fn new(common_dir: &Path) -> Self {
        Self {
            root: common_dir.join("isolane").join("worktree-core"),
        }
    }

    pub(crate) fn ensure(&self) -> Result<()> {
        for dir in [self.locks(), self.intents()] {
            std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        }
        Ok(())
    }

    fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub(crate) fn intents(&self) -> PathBuf {
        self.root.join("intents")
    }

    /// The short repository-wide lock: branch checks, admin names, the pool.
    pub(crate) fn repo_lock(&self) -> Result<FileLock> {
        FileLock::acquire(&self.root.join("repo.lock"))
    }

    pub(crate) fn id_lock_path(&self, id: &str) -> PathBuf {
        self.locks().join(format!("{id}.lock"))
    }

    pub(crate) fn id_lock(&self, id: &str) -> Result<FileLock> {
        FileLock::acquire(&self.id_lock_path(id))
    }

    fn intent_path(&self, id: &str) -> PathBuf {
        self.intents().join(format!("{id}.json"))
    }

    /// Records an intent (atomic, durable replace): it survives a killed
    /// process and a power loss.
    pub(crate) fn write_intent(&self, intent: &Intent) -> Result<()> {
        let path = self.intent_path(intent.id());
        let json = serde_json::to_vec_pretty(intent).expect("an intent always serializes");
        write_atomic(&path, &json)
    }

    /// Whether an intent for `id` is (still) recorded.
    pub(crate) fn has_intent(&self, id: &str) -> bool {
        self.intent_path(id).exists()
    }

    pub(crate) fn clear_intent(&self, id: &str) -> Result<()> {
        let path = self.intent_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove intent", path)(e)),
        }
    }

    /// All recorded intents (unreadable ones are skipped with a warning).
    pub(crate) fn intents_recorded(&self) -> Result<Vec<Intent>> {
        let dir = self.intents();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read directory", dir)(e)),
        };
        let mut intents = Vec::new();
        for entry in entries {
            let path = entry.map_err(io("read directory", &dir))?.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read intent", path)(e)),
            };
            match serde_json::from_slice::<Intent>(&bytes) {
                Ok(intent) => intents.push(intent),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring unreadable intent");
                }
            }
        }
        Ok(intents)
    }
}

/// Writes `bytes` to `path` atomically and durably (see
/// [`registry::write_atomically`]), so that a process killed or a power loss
/// at any moment leaves the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // 666 before the umask, as `File::create` gives.
    registry::write_atomically(path, bytes, 0o666).map_err(|source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}
