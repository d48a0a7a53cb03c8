use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::atomic;
use crate::lock::{self, Mode};

/// A document type kept in a [`Store`].
///
/// The file holds `{"schema_version": N, "data": ...}`. Bump
/// [`VERSION`](Document::VERSION) whenever the shape of the data changes
/// incompatibly and teach [`migrate`](Document::migrate) to bring the older
/// shape forward.
pub trait Document: Serialize + DeserializeOwned + Default {
    /// The schema version this program reads and writes.
    const VERSION: u32;

    /// Rewrites the `data` of an older schema version into the shape of
    /// `from + 1`. Called repeatedly until the data reaches
    /// [`VERSION`](Document::VERSION). The default knows no older versions.
    fn migrate(from: u32, data: serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = data;
        Err(format!("no migration is known from schema version {from}"))
    }
}

/// Optional settings of a [`Store`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for another process's lock before giving up with
    /// [`Error::LockTimeout`]. Default: 10 seconds.
    pub lock_timeout: Duration,
    /// Allow a store on NFS or SMB, where `flock` may silently not exclude
    /// other hosts. Default: `false` (refused with
    /// [`Error::NetworkFilesystem`]).
    pub allow_network_filesystem: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(10),
            allow_network_filesystem: false,
        }
    }
}

/// One typed JSON document on disk, shared safely between processes.
///
/// Every [`read`](Store::read) and [`update`](Store::update) takes the file
/// lock afresh, so a `Store` may be kept for the life of a program. It may
/// be shared between threads: they take turns on its lock file.
#[derive(Debug)]
pub struct Store<D> {
    path: PathBuf,
    lock_path: PathBuf,
    /// The open lock file. The mutex serializes this process's threads,
    /// which `flock` cannot tell apart on one open file.
    lock_file: Mutex<File>,
    dir: PathBuf,
    temp_prefix: OsString,
    options: Options,
    swept_temp_files: AtomicBool,
    _document: PhantomData<fn() -> D>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a, D> {
    schema_version: u32,
    data: &'a D,
}

impl<D: Document> Store<D> {
    /// Opens the store at `path`, creating its directory and the sidecar
    /// lock file `<path>.lock` if needed. The document itself is created by
    /// the first update; until then reads return `D::default()`.
    pub fn open(path: impl Into<PathBuf>, options: Options) -> Result<Self, Error> {
        let path = path.into();
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Directory {
                path: path.clone(),
                source: std::io::Error::new(ErrorKind::InvalidInput, "not a file path"),
            })?
            .to_owned();
        let dir = atomic::parent(&path).to_owned();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Directory {
            path: dir.clone(),
            source,
        })?;
        if !options.allow_network_filesystem
            && let Some(filesystem) = network_filesystem(&dir)
        {
            return Err(Error::NetworkFilesystem { path, filesystem });
        }
        let mut lock_name = file_name.clone();
        lock_name.push(".lock");
        let lock_path = dir.join(lock_name);
        let lock_file = Mutex::new(lock::open(&lock_path)?);
        let temp_prefix = atomic::temp_prefix(&file_name);
        Ok(Self {
            path,
            lock_path,
            lock_file,
            dir,
            temp_prefix,
            options,
            swept_temp_files: AtomicBool::new(false),
            _document: PhantomData,
        })
    }

    /// The path of the document.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent snapshot of the document, read under a shared lock.
    pub fn read(&self) -> Result<D, Error> {
        self.locked(Mode::Shared, || Ok(self.load()?.0))
    }

    /// Runs `change` on the current document under the exclusive lock and
    /// writes the result atomically and durably.
    ///
    /// If `change` returns an error nothing is written. If it leaves the
    /// document as it was, nothing is written either.
    pub fn update<T, E>(&self, change: impl FnOnce(&mut D) -> Result<T, E>) -> Result<T, E>
    where
        E: From<Error>,
    {
        self.locked(Mode::Exclusive, || {
            self.sweep_temp_files_once();
            let (mut document, before) = self.load()?;
            let result = change(&mut document)?;
            let after = self.serialize(&document)?;
            if before.as_deref() != Some(after.as_slice()) {
                self.write_atomically(&after)?;
            }
            Ok(result)
        })
    }

    /// Moves a corrupt document aside so that the store can be used again.
    ///
    /// The bad file is kept as `<path>.corrupt-<unix seconds>` and that path
    /// is returned. A readable document is left alone (`Ok(None)`); so is a
    /// document of a newer schema version, which is reported as an error.
    pub fn recover_corrupt(&self) -> Result<Option<PathBuf>, Error> {
        self.locked(Mode::Exclusive, || self.move_corrupt_aside())
    }

    /// Runs `f` holding this process's turn and the file lock in `mode`.
    fn locked<T, E: From<Error>>(
        &self,
        mode: Mode,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        // A thread that panicked mid-transaction left no partial write
        // behind (writes are atomic), so a poisoned turn is still usable.
        let file = self
            .lock_file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _guard = lock::acquire(&file, &self.lock_path, mode, self.options.lock_timeout)?;
        f()
    }

    fn move_corrupt_aside(&self) -> Result<Option<PathBuf>, Error> {
        match self.load() {
            Ok(_) => Ok(None),
            Err(Error::Corrupt { .. }) => {
                let seconds = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs());
                let mut target = self.sibling(&format!(".corrupt-{seconds}"));
                let mut n = 1;
                while target.exists() {
                    target = self.sibling(&format!(".corrupt-{seconds}-{n}"));
                    n += 1;
                }
                std::fs::rename(&self.path, &target).map_err(|source| Error::Write {
                    path: self.path.clone(),
                    source,
                })?;
                self.sync_dir()?;
                tracing::warn!(path = %self.path.display(), kept = %target.display(), "moved corrupt document aside");
                Ok(Some(target))
            }
            Err(other) => Err(other),
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    /// Reads and parses the document; also returns the bytes as read, so an
    /// update can tell whether anything changed.
    fn load(&self) -> Result<(D, Option<Vec<u8>>), Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok((D::default(), None)),
            Err(source) => {
                return Err(Error::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let corrupt = |source| Error::Corrupt {
            path: self.path.clone(),
            source,
        };
        let malformed = |what: &str| corrupt(serde::de::Error::custom(what));
        let serde_json::Value::Object(mut envelope) =
            serde_json::from_slice(&bytes).map_err(corrupt)?
        else {
            return Err(malformed("the document is not a JSON object"));
        };
        let found = envelope
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .and_then(|version| u32::try_from(version).ok())
            .ok_or_else(|| malformed("missing or invalid schema_version"))?;
        let mut data = envelope
            .remove("data")
            .ok_or_else(|| malformed("missing data"))?;
        if found > D::VERSION {
            return Err(Error::NewerVersion {
                path: self.path.clone(),
                found,
                supported: D::VERSION,
            });
        }
        for from in found..D::VERSION {
            data = D::migrate(from, data).map_err(|reason| Error::Migration {
                path: self.path.clone(),
                from: found,
                to: D::VERSION,
                reason,
            })?;
        }
        if found < D::VERSION {
            tracing::info!(path = %self.path.display(), from = found, to = D::VERSION, "migrated document");
        }
        let document = serde_json::from_value(data).map_err(corrupt)?;
        Ok((document, Some(bytes)))
    }

    fn serialize(&self, document: &D) -> Result<Vec<u8>, Error> {
        let mut bytes = serde_json::to_vec_pretty(&EnvelopeOut {
            schema_version: D::VERSION,
            data: document,
        })
        .map_err(|source| Error::Serialize {
            path: self.path.clone(),
            source,
        })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// See [`crate::write_atomically`]: a crash leaves the old or the new
    /// version. The document is private to its owner (mode 600).
    fn write_atomically(&self, bytes: &[u8]) -> Result<(), Error> {
        atomic::write_atomically(&self.path, bytes, 0o600).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn sync_dir(&self) -> Result<(), Error> {
        atomic::sync_dir(&self.dir).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Removes temp files left by writers that crashed mid-write. Only
    /// called under the exclusive lock, when no writer can be mid-write.
    fn sweep_temp_files_once(&self) {
        if self.swept_temp_files.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name
                .as_encoded_bytes()
                .starts_with(self.temp_prefix.as_encoded_bytes())
            {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::debug!(path = %entry.path().display(), "removed leftover temp file")
                    }
                    Err(error) => {
                        tracing::warn!(path = %entry.path().display(), %error, "cannot remove leftover temp file")
                    }
                }
            }
        }
    }
}

/// Names the filesystem holding `dir` if it is one where `flock` is unreliable.
fn network_filesystem(dir: &Path) -> Option<&'static str> {
    use nix::sys::statfs::{NFS_SUPER_MAGIC, SMB_SUPER_MAGIC, statfs};
    // Not exported by nix; f_type's width differs between platforms, and
    // these magics fit in 32 bits.
    const CIFS_MAGIC: u32 = 0xFF53_4D42;
    const SMB2_MAGIC: u32 = 0xFE53_4D42;
    let kind = statfs(dir).ok()?.filesystem_type();
    if kind == NFS_SUPER_MAGIC {
        Some("nfs")
    } else if kind == SMB_SUPER_MAGIC || kind.0 as u32 == CIFS_MAGIC || kind.0 as u32 == SMB2_MAGIC
    {
        Some("smb/cifs")
    } else {
        None
    }
}
