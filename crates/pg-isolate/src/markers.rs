//! The embedded server's pool markers: a file per ready pool clone, which
//! a process claims by renaming it, with no round trip to the server.
//!
//! ```text
//! <state dir>/pools/<template key>/ready/<clone>          written by the refill after the clone is committed
//! <state dir>/pools/<template key>/taken/<clone>.<pid>.<start time>   renamed there by the claiming process
//! <state dir>/pools/<template key>/trash/<clone>.<pid>.<start time>   released by its test, for the refill to drop
//! <state dir>/pools/<template key>/refill                 pid and start time of the last refill's psql
//! <state dir>/pools/<template key>/locked                 pid of the refill holding the pool's lock
//! ```
//!
//! A rename has exactly one winner, so a clone is never handed out twice.
//! A ready marker holds the clone's oid (written after its creation
//! committed, so a marker never names a clone that was not made); a claim
//! checks that the database's directory still exists, so a marker that
//! outlived its clone (a cluster made anew) is skipped and removed. gc keeps
//! a claimed clone while the process named by its taken marker runs and
//! drops it once that process is gone, as any test database.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use registry::ProcessIdentity;

use crate::Server;

/// The markers of one template's pool.
#[derive(Debug, Clone)]
pub(crate) struct Markers {
    dir: PathBuf,
    /// `data/base` of the cluster, where a database's files live.
    base: PathBuf,
}

impl Markers {
    /// The markers of the pool of template `key` on `server`: only for the
    /// embedded server (whose refill can write them), and only where the
    /// path can be written into a `psql` script as it is.
    pub(crate) fn of(server: &Server, key: &str) -> Option<Self> {
        let base = server.embedded_base_dir()?;
        let dir = server.state_dir()?.join("pools").join(key);
        let plain = dir
            .to_str()
            .is_some_and(|d| !d.contains(['\'', '\\', ':', '`', '\n', '\r']));
        plain.then_some(Self { dir, base })
    }

    pub(crate) fn ready_dir(&self) -> PathBuf {
        self.dir.join("ready")
    }

    fn taken_dir(&self) -> PathBuf {
        self.dir.join("taken")
    }

    fn trash_dir(&self) -> PathBuf {
        self.dir.join("trash")
    }

    /// Makes the directories, readable by the server account (the refill
    /// counts the ready markers with `pg_ls_dir`).
    pub(crate) fn ensure(&self) -> std::io::Result<()> {
        for dir in [self.ready_dir(), self.taken_dir(), self.trash_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        Ok(())
    }

    /// The number of ready markers.
    pub(crate) fn ready(&self) -> usize {
        fs::read_dir(self.ready_dir()).map_or(0, |entries| entries.count())
    }

    /// Claims a ready clone for this process: its name and taken marker.
    pub(crate) fn claim(&self) -> Option<(String, PathBuf)> {
        let mut names: Vec<String> = fs::read_dir(self.ready_dir())
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        // Processes claiming at once start at different clones.
        let start = crate::names::token().bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        if !names.is_empty() {
            let len = names.len();
            names.rotate_left(start % len);
        }
        let me = ProcessIdentity::current();
        for name in names {
            let ready = self.ready_dir().join(&name);
            let taken = self
                .taken_dir()
                .join(format!("{name}.{}.{}", me.pid, me.start_time));
            if fs::rename(&ready, &taken).is_err() {
                continue;
            }
            if !self.clone_gone(&taken) {
                return Some((name, taken));
            }
            tracing::debug!(clone = %name, "skipping the marker of a clone that is gone");
            let _ = fs::remove_file(&taken);
        }
        None
    }

    /// Whether the clone of `marker` is gone: the database directory of the
    /// oid the marker holds does not exist. (An empty marker is one being
    /// written: its clone was committed before the file was made.)
    fn clone_gone(&self, marker: &Path) -> bool {
        let oid = fs::read_to_string(marker).unwrap_or_default();
        let oid = oid.trim();
        !oid.is_empty() && !self.base.join(oid).is_dir()
    }

    /// Whether the last refill started for this pool is still waiting for
    /// the pool's lock.
    ///
    /// Refills wait for the pool's lock in turn, so a refill started while
    /// another runs still counts the pool after it; a new one is needed
    /// only when the last one started has taken the lock (it may be past
    /// its last count) or is gone.
    pub(crate) fn refill_queued(&self) -> bool {
        let Some(last) = fs::read_to_string(self.dir.join("refill"))
            .ok()
            .and_then(|text| {
                let (pid, start) = text.trim().split_once(' ')?;
                identity(pid, start)
            })
        else {
            return false;
        };
        let locked = fs::read_to_string(self.locked_file()).unwrap_or_default();
        last.is_alive() && locked.trim() != last.pid.to_string()
    }

    /// The file a refill writes its pid into once it holds the lock.
    pub(crate) fn locked_file(&self) -> PathBuf {
        self.dir.join("locked")
    }

    /// Records the refill `psql` just started.
    pub(crate) fn note_refill(&self, refill: ProcessIdentity) {
        let path = self.dir.join("refill");
        let text = format!("{} {}", refill.pid, refill.start_time);
        if let Err(error) = registry::write_atomically(&path, text.as_bytes(), 0o644) {
            tracing::debug!(path = %path.display(), %error, "cannot record the pool's refill");
        }
    }

    /// The taken marker of clone `name` and the process it names, if the
    /// clone was claimed.
    pub(crate) fn holder(&self, name: &str) -> Option<(ProcessIdentity, PathBuf)> {
        Self::named(&self.taken_dir(), name)
    }

    /// The marker `<name>.<pid>.<start time>` of clone `name` in `dir`
    /// (`taken/` or `trash/`) and the process it names.
    fn named(dir: &Path, name: &str) -> Option<(ProcessIdentity, PathBuf)> {
        let prefix = format!("{name}.");
        fs::read_dir(dir).ok()?.find_map(|entry| {
            let entry = entry.ok()?;
            let file = entry.file_name().into_string().ok()?;
            let (pid, start) = file.strip_prefix(&prefix)?.split_once('.')?;
            Some((identity(pid, start)?, entry.path()))
        })
    }

    /// Removes every marker of clone `name` (dropped).
    pub(crate) fn forget(&self, name: &str) {
        let _ = fs::remove_file(self.ready_dir().join(name));
        for dir in [self.taken_dir(), self.trash_dir()] {
            if let Some((_, marker)) = Self::named(&dir, name) {
                let _ = fs::remove_file(marker);
            }
        }
    }

    /// Releases a claimed clone (its taken marker `taken`) for the refill
    /// to drop: the marker moves to `trash/`.
    pub(crate) fn release(taken: &Path) -> std::io::Result<()> {
        let file = taken
            .file_name()
            .ok_or_else(|| std::io::Error::other("a marker without a name"))?;
        let pool = taken
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| std::io::Error::other("a marker outside a pool"))?;
        fs::rename(taken, pool.join("trash").join(file))
    }

    /// Whether clone `name` was released.
    pub(crate) fn released(&self, name: &str) -> bool {
        Self::named(&self.trash_dir(), name).is_some()
    }

    /// Released clones (name, marker) whose database still exists (as far
    /// as their marker tells); the markers of those already gone are
    /// removed.
    pub(crate) fn trash(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.trash_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let file = entry.file_name().into_string().ok()?;
                // `<clone>.<pid>.<start>`: clone names hold no `.`.
                let name = file.split('.').next()?.to_owned();
                if self.clone_gone(&entry.path()) {
                    let _ = fs::remove_file(entry.path());
                    return None;
                }
                Some((name, entry.path()))
            })
            .collect()
    }

    /// Removes ready markers older than `before` whose clone is not among
    /// `existing` (dropped behind the pool's back).
    pub(crate) fn sweep(&self, existing: &dyn Fn(&str) -> bool, before: std::time::SystemTime) {
        let Ok(entries) = fs::read_dir(self.ready_dir()) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < before);
            if old && !existing(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// `path` as a single-quoted `psql` meta-command argument (the paths
    /// [`Markers::of`] accepts need no escaping).
    pub(crate) fn psql_arg(path: &Path) -> String {
        format!("'{}'", path.display())
    }
}

/// The process of a marker or record: its pid and start time, in decimal.
fn identity(pid: &str, start: &str) -> Option<ProcessIdentity> {
    Some(ProcessIdentity {
        pid: pid.parse().ok()?,
        start_time: start.parse().ok()?,
    })
}
