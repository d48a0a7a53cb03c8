//! The sidecar lock file: `flock` with a bounded wait, and the pid of the
//! last exclusive holder written into it for error messages.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::Error;

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct Guard<'a> {
    file: Held<'a>,
}

/// The open file description that holds the lock: the store's own, or the
/// one a waiter thread got the lock on.
#[derive(Debug)]
enum Held<'a> {
    Borrowed(&'a File),
    Owned(File),
}

impl Guard<'_> {
    fn file(&self) -> &File {
        match &self.file {
            Held::Borrowed(file) => file,
            Held::Owned(file) => file,
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // Closing the file would release the lock too, but the store keeps
        // its lock file open between transactions.
        if let Err(error) = self.file().unlock() {
            tracing::warn!(%error, "cannot release a file lock");
        }
    }
}

/// Opens (creating if needed, never truncating or deleting) the lock file.
///
/// On a read-only filesystem an existing lock file is opened read-only
/// (`flock` does not need write access), so the document can still be read
/// and an update fails where it writes, with [`Error::Write`] naming the
/// document.
pub(crate) fn open(path: &Path) -> Result<File, Error> {
    let lock_error = |source| Error::Lock {
        path: path.to_owned(),
        source,
    };
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(file) => Ok(file),
        Err(error) if error.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
            match File::open(path) {
                Ok(file) => {
                    tracing::debug!(path = %path.display(), "lock file on a read-only filesystem; opened read-only");
                    Ok(file)
                }
                // No lock file to share: report the read-only filesystem.
                Err(_) => Err(lock_error(error)),
            }
        }
        Err(error) => Err(lock_error(error)),
    }
}

/// Takes the lock on `file` (the lock file at `path`), waiting at most
/// `timeout`.
///
/// `flock` locks belong to the open file description, so two threads using
/// the same `file` would both "hold" the exclusive lock: the caller must
/// serialize the threads of its own process (the store does, with a mutex).
pub(crate) fn acquire<'a>(
    file: &'a File,
    path: &Path,
    mode: Mode,
    timeout: Duration,
) -> Result<Guard<'a>, Error> {
    let lock_error = |source| Error::Lock {
        path: path.to_owned(),
        source,
    };
    let attempt = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    let guard = match attempt {
        Ok(()) => Guard {
            file: Held::Borrowed(file),
        },
        Err(TryLockError::WouldBlock) => match wait_blocking(path, mode, timeout)? {
            Some(owned) => Guard {
                file: Held::Owned(owned),
            },
            None => {
                return Err(Error::LockTimeout {
                    path: path.to_owned(),
                    waited: timeout,
                    holder: recorded_holder(file),
                });
            }
        },
        Err(TryLockError::Error(source)) => return Err(lock_error(source)),
    };
    if mode == Mode::Exclusive {
        record_holder(guard.file(), path);
    }
    Ok(guard)
}

/// What became of a blocking lock request handed to a waiter thread.
#[derive(Debug)]
enum Wait {
    Pending,
    Acquired(File),
    Failed(std::io::Error),
    Abandoned,
}

/// Waits for the lock in a blocking `flock` on a waiter thread, so that the
/// kernel wakes us the moment it is released (polling with sleeps lets a
/// busy writer starve everyone else), while this thread gives up after
/// `timeout`. Returns the file that holds the lock, or `None` on timeout.
///
/// The waiter opens the lock file afresh (its own open file description):
/// if we gave up first, it releases what it then gets without touching the
/// store's file, which by then may be locked by another of our threads. A
/// holder that never lets go leaves the waiter blocked until it does or the
/// process exits.
fn wait_blocking(path: &Path, mode: Mode, timeout: Duration) -> Result<Option<File>, Error> {
    let waiter_file = open(path)?;
    let shared = Arc::new((Mutex::new(Wait::Pending), Condvar::new()));
    let waiter_shared = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("registry-lock-wait".to_owned())
        .spawn(move || {
            let result = match mode {
                Mode::Shared => waiter_file.lock_shared(),
                Mode::Exclusive => waiter_file.lock(),
            };
            let (state, woken) = &*waiter_shared;
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(*state, Wait::Abandoned) {
                // Nobody waits for it any more; dropping the file unlocks.
                return;
            }
            *state = match result {
                Ok(()) => Wait::Acquired(waiter_file),
                Err(error) => Wait::Failed(error),
            };
            woken.notify_one();
        });
    spawned.map_err(|source| Error::Lock {
        path: path.to_owned(),
        source,
    })?;
    let (state, woken) = &*shared;
    let state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut state, _) = woken
        .wait_timeout_while(state, timeout, |s| matches!(s, Wait::Pending))
        .unwrap_or_else(PoisonError::into_inner);
    match std::mem::replace(&mut *state, Wait::Abandoned) {
        Wait::Acquired(file) => Ok(Some(file)),
        Wait::Failed(source) => Err(Error::Lock {
            path: path.to_owned(),
            source,
        }),
        Wait::Pending | Wait::Abandoned => Ok(None),
    }
}

/// Width of the pid record: fixed, so that one positioned write replaces it.
const RECORD_WIDTH: usize = 11;

/// Records our pid in the lock file, for [`Error::LockTimeout`] messages of
/// others. Best effort: the record only improves a message, so a full or
/// read-only filesystem must not fail the transaction here; the document's
/// own write reports that, naming the document.
fn record_holder(file: &File, path: &Path) {
    let record = format!("{:>width$}\n", std::process::id(), width = RECORD_WIDTH - 1);
    if let Err(error) = file.write_all_at(record.as_bytes(), 0) {
        tracing::debug!(path = %path.display(), %error, "cannot record the lock holder");
    }
}

fn recorded_holder(file: &File) -> Option<u32> {
    let mut record = [0u8; RECORD_WIDTH];
    let read = file.read_at(&mut record, 0).ok()?;
    std::str::from_utf8(&record[..read])
        .ok()?
        .trim()
        .parse()
        .ok()
}
