//! Named TCP port leases, collision-free across every process on the host.
//!
//! A [`PortAllocator`] leases a set of named ports (`APP_PORT`, `API_PORT`,
//! ...) to an owner — a worktree id, a test, any string — in one call.
//! Every lease lives in one host-wide document (`ports.json` in the state
//! directory, see [`Options::state_dir`]) changed only under the `registry`
//! crate's lock, so two processes, two repositories or two CI jobs on one
//! host never get the same port. On top of that:
//!
//! - every new port is bindable right now on each address family the
//!   machine has (IPv6 being disabled does not make every port look busy);
//! - the range stays clear of the kernel's [`ephemeral_range`] unless told
//!   otherwise;
//! - an owner prefers the same block of ports each time (derived from its
//!   name), probing onwards when that block is taken — never sharing;
//! - leases are idempotent and extensible, and held by a process, a TTL with
//!   heartbeats, or manually ([`Holder`]); leases whose process is gone (or
//!   whose pid was reused) or whose TTL ran out are reclaimed automatically;
//! - [`PortAllocator::lease_bound`] hands over already-bound listeners,
//!   which removes the check-then-bind race entirely.
//!
//! A lease held by [`Holder::Process`] ends when that process exits (even
//! by `kill -9`); [`Holder::Expires`] needs a
//! [`heartbeat`](PortAllocator::heartbeat) within its TTL;
//! [`Holder::Manual`] leases (a worktree's, say) stay until released.
//! [`PortAllocator::list`] shows every lease with its pid, age and
//! [`Liveness`]; a corrupt lease document is reported
//! ([`Error::Registry`]), never silently replaced.
//!
//! ```
//! use port_alloc::{Holder, Options, PortAllocator};
//!
//! let state = tempfile::tempdir()?;
//! let ports = PortAllocator::open(Options {
//!     state_dir: Some(state.path().to_owned()),
//!     // Host-wide claims belong in the shared default; a doc test keeps its own.
//!     claims_dir: Some(state.path().join("claims")),
//!     ..Options::default()
//! })?;
//! let lease = ports.lease("test-integration-api", &["APP_PORT", "API_PORT"], Holder::current_process())?;
//! let app = lease.port("APP_PORT").expect("leased");
//! assert_ne!(Some(app), lease.port("API_PORT"));
//!
//! // Asking again gives the same ports; more names extend the lease.
//! let again = ports.lease("test-integration-api", &["APP_PORT", "REDIS_PORT"], Holder::current_process())?;
//! assert_eq!(again.port("APP_PORT"), Some(app));
//! assert_eq!(again.ports.len(), 3);
//!
//! assert_eq!(ports.release_owner("test-integration-api")?.len(), 3);
//! assert!(ports.list()?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod allocator;
mod claims;
mod document;
mod error;
mod probe;
mod range;

pub use allocator::{
    BoundLease, Holder, Lease, LeaseInfo, Liveness, Options, PortAllocator, Reclaimed, StaleReason,
    default_state_dir,
};
pub use error::Error;
pub use range::ephemeral_range;
