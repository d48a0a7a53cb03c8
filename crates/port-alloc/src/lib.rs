//! Named TCP port leases, collision-free across every process on the host.
//!
//! Not implemented yet: this crate is a placeholder that the port-alloc issue
//! fills in. It exposes nothing so that nothing can pretend to work.
#![deny(missing_docs)]
