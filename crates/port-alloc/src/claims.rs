//! Host-wide port claims: one file per leased port in a directory that every
//! user of the host shares, so that leases kept in different documents (two
//! users' state directories, or two state directories of one user) never
//! share a port.
//!
//! The directory is sticky (mode 1777, like `/tmp`): anyone may add a claim,
//! and only a claim's owner (or root) may remove it, so one user can neither
//! delete nor rewrite another's. A claim is made complete and atomically:
//! its content goes to a private temp file first, which is then hard-linked
//! to the port's name (`link` fails if the name exists). It names the uid and
//! the lease document that holds the port, so the holder's own allocator can
//! tell its leftovers (a crash between claim and lease) from live claims.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The default claims directory: survives reboots (leases of worktrees do)
/// and exists on every Linux host.
const DEFAULT_DIR: &str = "/var/tmp/isolane-ports";

/// How long the replacement of a stale claim waits for the directory lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What a claim file says.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    uid: u32,
    /// The lease document that holds the port.
    document: PathBuf,
    owner: String,
    name: String,
}

/// Who holds an existing claim, as seen by this allocator.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// Our uid and our document.
    Us,
    /// Our uid, but a lease document whose state directory no longer
    /// exists.
    OursStale,
    /// Anyone else (another user, or another live document of ours).
    Other,
}

/// The claims directory as one allocator uses it.
#[derive(Debug)]
pub(crate) struct Claims {
    dir: PathBuf,
    uid: u32,
    document: PathBuf,
}

/// `$ISOLANE_PORT_CLAIMS_DIR`, else [`DEFAULT_DIR`].
pub(crate) fn default_dir() -> PathBuf {
    std::env::var_os("ISOLANE_PORT_CLAIMS_DIR")
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

impl Claims {
    /// Opens (creating it, sticky and world-writable) the claims directory
    /// for the allocator whose lease document is `document`.
    pub(crate) fn open(dir: PathBuf, document: PathBuf) -> Result<Self, Error> {
        let uid = nix::unistd::geteuid().as_raw();
        let unsafe_dir = |reason: String, source| Error::ClaimsDir {
            dir: dir.clone(),
            reason,
            source,
        };
        match fs::create_dir(&dir) {
            Ok(()) => {
                // Not through the umask: every user must be able to claim.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777))
                    .map_err(|e| unsafe_dir("cannot make it sticky".to_owned(), Some(e)))?;
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => return Err(unsafe_dir("cannot create it".to_owned(), Some(error))),
        }
        let meta = fs::symlink_metadata(&dir)
            .map_err(|e| unsafe_dir("cannot read it".to_owned(), Some(e)))?;
        if !meta.is_dir() {
            return Err(unsafe_dir(
                "it is not a directory (a symlink is refused)".to_owned(),
                None,
            ));
        }
        if meta.mode() & 0o1000 == 0 {
            if meta.uid() != uid {
                return Err(unsafe_dir(
                    format!(
                        "it is not sticky (mode {:o}), so its owner uid {} lets anyone \
                         delete any claim; make it mode 1777",
                        meta.mode() & 0o7777,
                        meta.uid()
                    ),
                    None,
                ));
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777))
                .map_err(|e| unsafe_dir("cannot make it sticky".to_owned(), Some(e)))?;
        }
        if meta.uid() != 0 && meta.uid() != uid {
            tracing::warn!(dir = %dir.display(), owner_uid = meta.uid(), "the port claims directory is owned by another user, who can remove any claim in it; have root own it");
        }
        Ok(Self { dir, uid, document })
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, port: u16) -> PathBuf {
        self.dir.join(port.to_string())
    }

    fn claim_error(&self, path: PathBuf) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Claim { path, source }
    }

    /// Claims `port` for `owner`'s `name`. `Ok(false)` when someone else
    /// holds it. A claim of ours on the port (a leftover, or the lease being
    /// extended) is taken over.
    pub(crate) fn claim(&self, port: u16, owner: &str, name: &str) -> Result<bool, Error> {
        let target = self.path(port);
        // Already ours as it would be written (a lease extended, whose
        // existing ports are claimed again): nothing to write.
        if self.record(&target).is_some_and(|record| {
            record.uid == self.uid
                && record.document == self.document
                && record.owner == owner
                && record.name == name
        }) {
            return Ok(true);
        }
        let temp = self.write_temp(port, owner, name)?;
        let outcome = self.link_or_take_over(&temp, &target);
        // The temp name is ours alone; the claim, if made, is the link.
        let _ = fs::remove_file(&temp);
        outcome
    }

    fn link_or_take_over(&self, temp: &Path, target: &Path) -> Result<bool, Error> {
        match fs::hard_link(temp, target) {
            Ok(()) => return Ok(true),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(Error::Claim {
                    path: target.to_owned(),
                    source: error,
                });
            }
        }
        match self.holder(target) {
            Holder::Other => Ok(false),
            // Our document is locked by the caller: nobody else changes our
            // claims meanwhile, so a rename over it is safe.
            Holder::Us => {
                fs::rename(temp, target).map_err(self.claim_error(target.to_owned()))?;
                Ok(true)
            }
            Holder::OursStale => {
                // Another allocator of ours (another document) may judge the
                // same claim stale at the same moment: replace it under the
                // directory's lock, judging again once the lock is held.
                let _lock = self.lock()?;
                if self.holder(target) != Holder::OursStale {
                    return Ok(false);
                }
                fs::rename(temp, target).map_err(self.claim_error(target.to_owned()))?;
                tracing::info!(claim = %target.display(), "took over a stale port claim");
                Ok(true)
            }
        }
    }

    fn write_temp(&self, port: u16, owner: &str, name: &str) -> Result<PathBuf, Error> {
        let record = Record {
            uid: self.uid,
            document: self.document.clone(),
            owner: owner.to_owned(),
            name: name.to_owned(),
        };
        let bytes = serde_json::to_vec(&record).expect("a claim record always serialises");
        let temp = self
            .dir
            .join(format!(".{port}.{}.{}.tmp", std::process::id(), unique()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .map_err(self.claim_error(temp.clone()))?;
        file.write_all(&bytes)
            .map_err(self.claim_error(temp.clone()))?;
        Ok(temp)
    }

    /// The record of the claim at `path` if it is a file of our uid that
    /// reads as one (`None` when it is gone meanwhile, another user's, or
    /// unreadable).
    fn record(&self, path: &Path) -> Option<Record> {
        let meta = fs::symlink_metadata(path).ok()?;
        if meta.uid() != self.uid || !meta.is_file() {
            return None;
        }
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    fn holder(&self, path: &Path) -> Holder {
        match self.record(path) {
            Some(record) if record.uid == self.uid && record.document == self.document => {
                Holder::Us
            }
            // Our uid, and the state directory of its document is gone (a
            // deleted CI workspace). Not the document itself: it is only
            // written after the first lease's claims.
            Some(record) if record.document.parent().is_some_and(|dir| !dir.exists()) => {
                Holder::OursStale
            }
            // A live document's, or a claim that cannot be read (never
            // taken over: its holder may still lease the port).
            _ => Holder::Other,
        }
    }

    /// Removes our claim on `port`, if it is ours.
    pub(crate) fn release(&self, port: u16) -> Result<(), Error> {
        let path = self.path(port);
        if self.holder(&path) == Holder::Us {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(Error::Claim {
                        path,
                        source: error,
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes every claim of our document on a port it does not hold
    /// (leftovers of a crash between claim and lease), and our stale temp
    /// files; returns the ports freed.
    pub(crate) fn sweep(&self, held: &HashSet<u16>) -> Result<Vec<u16>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|source| Error::ClaimsDir {
            dir: self.dir.clone(),
            reason: "cannot list it".to_owned(),
            source: Some(source),
        })?;
        let mut freed = Vec::new();
        let own_temp = format!(".{}.", std::process::id());
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if let Ok(port) = name.parse::<u16>() {
                if !held.contains(&port) && self.holder(&path) == Holder::Us {
                    fs::remove_file(&path).map_err(self.claim_error(path.clone()))?;
                    freed.push(port);
                }
            } else if name.ends_with(".tmp") && !name.contains(&own_temp) {
                // A temp file of a crashed claim: ours to remove only if
                // ours, and only once it is clearly not being linked.
                let stale = entry.metadata().is_ok_and(|meta| {
                    meta.uid() == self.uid
                        && meta
                            .modified()
                            .ok()
                            .and_then(|m| m.elapsed().ok())
                            .is_some_and(|age| age.as_secs() > 60)
                });
                if stale {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        if !freed.is_empty() {
            tracing::info!(ports = ?freed, "removed port claims no lease holds");
        }
        Ok(freed)
    }

    /// Makes the claims made so far durable.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| Error::ClaimsDir {
                dir: self.dir.clone(),
                reason: "cannot sync it".to_owned(),
                source: Some(source),
            })
    }

    /// Locks the claims directory itself (flock on its descriptor: nothing
    /// to create, and every user can open it), giving up after
    /// [`LOCK_WAIT`] so that another user holding it cannot hang us.
    fn lock(&self) -> Result<Flock<File>, Error> {
        let deadline = Instant::now() + LOCK_WAIT;
        let mut dir = File::open(&self.dir).map_err(self.claim_error(self.dir.clone()))?;
        loop {
            match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((file, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    dir = file;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((_, errno)) => {
                    return Err(Error::Claim {
                        path: self.dir.clone(),
                        source: std::io::Error::from(errno),
                    });
                }
            }
        }
    }
}

/// A number no other temp file of this process has had.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
