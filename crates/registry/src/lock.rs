//! The sidecar lock file: `flock` with a bounded wait, and the pid of the
//! last exclusive holder written into it for error messages.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; released when dropped (closing the file releases the flock).
#[derive(Debug)]
pub(crate) struct Guard {
    _file: File,
}

/// Opens (creating if needed, never truncating or deleting) the lock file.
pub(crate) fn open(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Lock {
            path: path.to_owned(),
            source,
        })
}

/// Takes the lock, polling with a growing pause until `timeout` has passed.
///
/// Each call opens its own file description: `flock` locks belong to the
/// open file description, so sharing one between threads would let two
/// threads of one process hold the "exclusive" lock at once.
pub(crate) fn acquire(path: &Path, mode: Mode, timeout: Duration) -> Result<Guard, Error> {
    let file = open(path)?;
    let started = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        let attempt = match mode {
            Mode::Shared => file.try_lock_shared(),
            Mode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(source)) => {
                return Err(Error::Lock {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(Error::LockTimeout {
                path: path.to_owned(),
                waited,
                holder: recorded_holder(&file),
            });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(4));
    }
    if mode == Mode::Exclusive {
        record_holder(&file, path)?;
    }
    Ok(Guard { _file: file })
}

/// Width of the pid record: fixed, so that one positioned write replaces it.
const RECORD_WIDTH: usize = 11;

fn record_holder(file: &File, path: &Path) -> Result<(), Error> {
    let record = format!("{:>width$}\n", std::process::id(), width = RECORD_WIDTH - 1);
    file.write_all_at(record.as_bytes(), 0)
        .map_err(|source| Error::Lock {
            path: PathBuf::from(path),
            source,
        })
}

fn recorded_holder(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
