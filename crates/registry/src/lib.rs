//! Crash-safe, lock-protected state documents shared between processes.
//!
//! A [`Store`] keeps one typed document (anything [`serde`] can read and
//! write) in a JSON file. Every change is a read-modify-write transaction run
//! under an exclusive OS file lock on a sidecar lock file, and is written
//! atomically (temp file, fsync, rename, fsync of the directory), so:
//!
//! - concurrent updates from many processes never lose each other's changes;
//! - a process killed at any moment leaves either the old or the new
//!   document, never a torn one;
//! - a corrupt file is reported, never silently replaced by an empty one
//!   (see [`Store::recover_corrupt`]);
//! - lock waits are bounded ([`Options::lock_timeout`]) and the error names
//!   the process that held the lock.
//!
//! The same durable replacement of one file is available on its own as
//! [`write_atomically`], and [`fault_point`] is the crash injection every
//! crate's `kill -9` tests use.
//!
//! The crate knows nothing of git, ports or SQL; `port-alloc` and the
//! `isolane` CLI build their state on it.
//!
//! ```
//! use registry::{Document, Options, Store};
//!
//! #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
//! struct Counter {
//!     value: u64,
//! }
//!
//! impl Document for Counter {
//!     const VERSION: u32 = 1;
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let store: Store<Counter> = Store::open(dir.path().join("counter.json"), Options::default())?;
//! let after = store.update(|doc| {
//!     doc.value += 1;
//!     Ok::<_, registry::Error>(doc.value)
//! })?;
//! assert_eq!(after, 1);
//! assert_eq!(store.read()?.value, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod atomic;
mod error;
mod fault;
mod lock;
mod process;
mod store;

pub use atomic::write_atomically;
pub use error::Error;
pub use fault::{FAULT_ENV, fault_point};
pub use process::{ProcessIdentity, RUN_TOKEN_ENV};
pub use store::{Document, Options, Store};
