//! The host-wide lease document kept in `ports.json` through `registry`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry::ProcessIdentity;
use serde::{Deserialize, Serialize};

/// Every lease on the host, by owner.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Leases {
    pub(crate) owners: BTreeMap<String, Record>,
}

impl registry::Document for Leases {
    /// 2: leases held by a path (`Holder::Path`). A program that knows only
    /// version 1 refuses the document as newer instead of taking a lease it
    /// cannot parse for damage.
    const VERSION: u32 = 2;

    fn migrate(from: u32, data: serde_json::Value) -> Result<serde_json::Value, String> {
        match from {
            // Every version-1 lease reads as it is.
            1 => Ok(data),
            _ => Err(format!("no migration is known from schema version {from}")),
        }
    }
}

/// One owner's lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Port name to port.
    pub(crate) ports: BTreeMap<String, u16>,
    /// What keeps the lease alive.
    pub(crate) holder: StoredHolder,
    /// When the lease was first granted, in milliseconds since the epoch.
    pub(crate) created_unix_ms: u64,
}

/// The holder as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum StoredHolder {
    /// Alive while this process runs.
    Process { pid: u32, start_time: u64 },
    /// Alive until `expires_unix_ms`; a heartbeat moves it `ttl_ms` ahead.
    Expires { ttl_ms: u64, expires_unix_ms: u64 },
    /// Alive until released.
    Manual,
    /// Alive while `path` exists.
    Path { path: std::path::PathBuf },
}

impl StoredHolder {
    pub(crate) fn process(identity: ProcessIdentity) -> Self {
        Self::Process {
            pid: identity.pid,
            start_time: identity.start_time,
        }
    }

    pub(crate) fn expires(ttl: Duration, now_ms: u64) -> Self {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Self::Expires {
            ttl_ms,
            expires_unix_ms: now_ms.saturating_add(ttl_ms),
        }
    }
}

/// Milliseconds since the epoch (0 if the clock is before it).
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
