use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while opening, reading or updating a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory holding the document could not be created or read.
    #[error("cannot prepare state directory {path}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The sidecar lock file could not be opened, locked or written.
    #[error("cannot use lock file {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process held the lock for longer than the configured timeout.
    #[error(
        "timed out after {waited:?} waiting for the lock on {path} ({})",
        describe_holder(*holder)
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The pid recorded by the last exclusive holder, if any.
        holder: Option<u32>,
    },
    /// The document lives on a filesystem where `flock` is not reliable.
    #[error(
        "{path} is on a network filesystem ({filesystem}) where file locks are unreliable; \
         use a local state directory or set allow_network_filesystem"
    )]
    NetworkFilesystem {
        /// The document.
        path: PathBuf,
        /// The filesystem kind that was detected.
        filesystem: &'static str,
    },
    /// The document could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The document.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The document exists but is not a valid document of this kind.
    #[error(
        "{path} is corrupt and was left untouched; inspect it, or move it aside with \
         Store::recover_corrupt (isolane doctor --fix)"
    )]
    Corrupt {
        /// The document.
        path: PathBuf,
        /// Why it could not be parsed.
        #[source]
        source: serde_json::Error,
    },
    /// The document was written by a newer program than this one.
    #[error(
        "{path} has schema version {found}, newer than the {supported} this program understands; \
         upgrade isolane"
    )]
    NewerVersion {
        /// The document.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this program knows.
        supported: u32,
    },
    /// Migrating an older document forward failed.
    #[error("cannot migrate {path} from schema version {from} to {to}: {reason}")]
    Migration {
        /// The document.
        path: PathBuf,
        /// The version in the file.
        from: u32,
        /// The version this program writes.
        to: u32,
        /// What the migration reported.
        reason: String,
    },
    /// The document could not be serialized.
    #[error("cannot serialize the document for {path}")]
    Serialize {
        /// The document.
        path: PathBuf,
        /// Why serialization failed.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the new version failed; the previous version is intact.
    #[error("cannot write {path}; the previous version is intact")]
    Write {
        /// The document.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn describe_holder(holder: Option<u32>) -> String {
    match holder {
        Some(pid) if crate::ProcessIdentity::pid_exists(pid) => {
            format!("last taken by pid {pid}, which is still running")
        }
        Some(pid) => format!("last taken by pid {pid}, which has exited"),
        None => "holder unknown".to_owned(),
    }
}
