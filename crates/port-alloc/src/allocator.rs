//! The allocator: leasing, releasing, reclaiming and listing.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use registry::{ProcessIdentity, Store};

use crate::Error;
use crate::claims::{self, Claims};
use crate::document::{Leases, Record, StoredHolder, now_unix_ms};
use crate::probe::Families;
use crate::range;

/// The file name of the lease document inside the state directory.
const DOCUMENT_NAME: &str = "ports.json";

/// Preferred blocks are aligned to this many ports, so that owners with up
/// to this many ports each get disjoint blocks unless their hashes collide.
const BLOCK: usize = 8;

/// Longest accepted owner or port name, in bytes.
const MAX_NAME_LEN: usize = 255;

/// Optional settings of a [`PortAllocator`]. The defaults are safe.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directory holding `ports.json`. Default: `$ISOLANE_STATE_DIR`, else
    /// `$XDG_STATE_HOME/isolane`, else `~/.local/state/isolane`.
    pub state_dir: Option<PathBuf>,
    /// Directory of the host-wide port claims that keep leases of
    /// different documents (other users, other state directories) apart.
    /// Default: `$ISOLANE_PORT_CLAIMS_DIR`, else `/var/tmp/isolane-ports`;
    /// created sticky and world-writable (mode 1777) when missing.
    pub claims_dir: Option<PathBuf>,
    /// Ports to lease from (`start..=end`, both included). Default:
    /// 20000-29999, or when that overlaps the kernel's
    /// [`ephemeral_range`](crate::ephemeral_range), the larger unprivileged
    /// gap below or above it.
    pub range: Option<RangeInclusive<u16>>,
    /// Accept a configured `range` that overlaps the ephemeral range.
    /// Default: `false` ([`Error::EphemeralOverlap`]).
    pub allow_ephemeral_overlap: bool,
    /// Settings of the underlying store (lock timeout, network filesystems).
    pub registry: registry::Options,
}

/// What keeps a lease alive; anything else is reclaimed automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// Alive while this process runs; reclaimed once it has exited or its
    /// pid belongs to another process. See [`Holder::current_process`].
    Process(ProcessIdentity),
    /// Alive for `ttl` after the lease or the last
    /// [`heartbeat`](PortAllocator::heartbeat).
    Expires {
        /// How long the lease lives without a heartbeat.
        ttl: Duration,
    },
    /// Alive until released; never reclaimed automatically (for owners such
    /// as worktrees, whose cleanup is someone else's job).
    Manual,
    /// Alive while this path exists on the host (a repository, a CI
    /// workspace); reclaimed once it is gone, so an owner deleted without
    /// releasing its lease does not keep its ports forever. A path that
    /// cannot be checked (no permission) counts as present.
    Path(PathBuf),
}

impl Holder {
    /// The calling process as holder.
    pub fn current_process() -> Self {
        Self::Process(ProcessIdentity::current())
    }

    fn stored(&self, now_ms: u64) -> StoredHolder {
        match self {
            Self::Process(identity) => StoredHolder::process(*identity),
            Self::Expires { ttl } => StoredHolder::expires(*ttl, now_ms),
            Self::Manual => StoredHolder::Manual,
            Self::Path(path) => StoredHolder::Path { path: path.clone() },
        }
    }

    fn from_stored(stored: &StoredHolder) -> Self {
        match *stored {
            StoredHolder::Process { pid, start_time } => {
                Self::Process(ProcessIdentity { pid, start_time })
            }
            StoredHolder::Expires { ttl_ms, .. } => Self::Expires {
                ttl: Duration::from_millis(ttl_ms),
            },
            StoredHolder::Manual => Self::Manual,
            StoredHolder::Path { ref path } => Self::Path(path.clone()),
        }
    }
}

/// The ports leased to one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The owner.
    pub owner: String,
    /// Every port the owner holds, by name (not only the names of the
    /// latest request).
    pub ports: BTreeMap<String, u16>,
}

impl Lease {
    /// The port leased under `name`.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports.get(name).copied()
    }
}

/// A lease together with listeners already bound to the requested ports, so
/// that no other program can take a port between allocation and use.
#[derive(Debug)]
#[non_exhaustive]
pub struct BoundLease {
    /// The lease.
    pub lease: Lease,
    /// A bound listener for every requested name.
    pub listeners: BTreeMap<String, TcpListener>,
}

/// Whether a lease is still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// The holding process runs.
    Running,
    /// The TTL has not run out yet.
    Fresh {
        /// Time left before it expires.
        remaining: Duration,
    },
    /// Held until released.
    Manual,
    /// Held while its path exists, and it does.
    PathExists,
    /// No longer held; the next lease or [`reclaim`](PortAllocator::reclaim)
    /// frees it.
    Stale(StaleReason),
}

/// Why a lease is no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StaleReason {
    /// The holding process has exited.
    Exited {
        /// Its pid.
        pid: u32,
    },
    /// The holding process has exited and its pid now belongs to another
    /// process.
    PidReused {
        /// The pid.
        pid: u32,
    },
    /// The TTL ran out without a heartbeat.
    Expired {
        /// How long ago it expired.
        ago: Duration,
    },
    /// The path that held it ([`Holder::Path`]) no longer exists.
    PathGone,
}

/// One lease as listed by [`PortAllocator::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The owner.
    pub owner: String,
    /// Its ports, by name.
    pub ports: BTreeMap<String, u16>,
    /// What keeps it alive.
    pub holder: Holder,
    /// The holding pid, for process holders.
    pub pid: Option<u32>,
    /// Time since the lease was first granted.
    pub age: Duration,
    /// Whether it is still held.
    pub liveness: Liveness,
}

/// A lease freed by reclaim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reclaimed {
    /// The owner.
    pub owner: String,
    /// The ports it held, by name.
    pub ports: BTreeMap<String, u16>,
    /// Why it was freed.
    pub reason: StaleReason,
}

/// Hands out named TCP ports, unique across every process on the host.
///
/// Every operation is one transaction on the host-wide lease document, under
/// its lock, so an allocator may be shared between threads and any number of
/// processes may use their own at once.
#[derive(Debug)]
pub struct PortAllocator {
    store: Store<Leases>,
    claims: Claims,
    range: RangeInclusive<u16>,
    families: Families,
}

impl PortAllocator {
    /// Opens the host-wide lease document (creating its directory) and
    /// checks the range.
    pub fn open(options: Options) -> Result<Self, Error> {
        let ephemeral = crate::ephemeral_range();
        let range = range::resolve(options.range, &ephemeral, options.allow_ephemeral_overlap)?;
        let dir = match options.state_dir {
            Some(dir) => dir,
            None => default_state_dir()?,
        };
        refuse_foreign(&dir)?;
        let store = Store::open(dir.join(DOCUMENT_NAME), options.registry)?;
        // The claims name the document: one spelling of its path for all.
        let document = std::fs::canonicalize(&dir)
            .unwrap_or(dir)
            .join(DOCUMENT_NAME);
        let claims = Claims::open(
            options.claims_dir.unwrap_or_else(claims::default_dir),
            document,
        )?;
        tracing::debug!(path = %store.path().display(), claims = %claims.dir().display(), start = range.start(), end = range.end(), "opened port allocator");
        Ok(Self {
            store,
            claims,
            range,
            families: Families::detect(),
        })
    }

    /// The lease document.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// The range new ports are taken from (`start..=end`, both included).
    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    /// The host-wide claims directory.
    pub fn claims_dir(&self) -> &Path {
        self.claims.dir()
    }

    /// Leases a port for each of `names` to `owner`.
    ///
    /// Idempotent: names the owner already holds keep their ports, and new
    /// names extend the lease. New ports are free in the lease document and
    /// bindable right now; they come from a block preferred by the owner's
    /// name (so re-creating an owner usually gets the same ports), probing
    /// onwards when that is taken. `holder` replaces the lease's previous
    /// holder. Stale leases of every owner are reclaimed first.
    pub fn lease(&self, owner: &str, names: &[&str], holder: Holder) -> Result<Lease, Error> {
        validate(owner, names, &self.range)?;
        let now_ms = now_unix_ms();
        self.store.update(|doc| {
            self.reclaim_stale(doc, now_ms)?;
            let families = self.families;
            let (lease, _) = self.allocate(doc, owner, names, holder, now_ms, |port| {
                families.is_free(port)
            })?;
            Ok(lease)
        })
    }

    /// Like [`lease`](Self::lease), and also binds a TCP listener on `ip`
    /// for each of `names` before the lease is recorded, handing the bound
    /// sockets over so that nothing can take the ports in between.
    ///
    /// A name the owner already held is bound again; if that fails (the
    /// owner still listens on it) nothing changes and [`Error::Bind`] says so.
    pub fn lease_bound(
        &self,
        owner: &str,
        names: &[&str],
        holder: Holder,
        ip: IpAddr,
    ) -> Result<BoundLease, Error> {
        validate(owner, names, &self.range)?;
        TcpListener::bind(SocketAddr::new(ip, 0))
            .map_err(|source| Error::BindAddress { ip, source })?;
        let now_ms = now_unix_ms();
        self.store.update(|doc| {
            self.reclaim_stale(doc, now_ms)?;
            let families = self.families;
            let mut fresh = BTreeMap::new();
            let (lease, claimed) = self.allocate(doc, owner, names, holder, now_ms, |port| {
                if !families.is_free(port) {
                    return false;
                }
                match TcpListener::bind(SocketAddr::new(ip, port)) {
                    Ok(listener) => {
                        fresh.insert(port, listener);
                        true
                    }
                    Err(_) => false,
                }
            })?;
            let mut listeners = BTreeMap::new();
            for name in names {
                let port = lease
                    .port(name)
                    .expect("allocate leases every requested name");
                let listener = match fresh.remove(&port) {
                    Some(listener) => listener,
                    None => match TcpListener::bind(SocketAddr::new(ip, port)) {
                        Ok(listener) => listener,
                        Err(source) => {
                            // The document is not written: neither are the
                            // claims of this request.
                            self.release_claims(&claimed);
                            return Err(Error::Bind {
                                owner: owner.to_owned(),
                                name: (*name).to_owned(),
                                port,
                                ip,
                                source,
                            });
                        }
                    },
                };
                listeners.insert((*name).to_owned(), listener);
            }
            Ok(BoundLease { lease, listeners })
        })
    }

    /// Renews an [`Expires`](Holder::Expires) lease for another TTL. Other
    /// holders need no heartbeat; for them this only checks that the lease
    /// still exists ([`Error::NotLeased`] otherwise).
    pub fn heartbeat(&self, owner: &str) -> Result<(), Error> {
        let now_ms = now_unix_ms();
        self.store.update(|doc| {
            let record = doc.owners.get_mut(owner).ok_or_else(|| Error::NotLeased {
                owner: owner.to_owned(),
            })?;
            if let StoredHolder::Expires {
                ttl_ms,
                expires_unix_ms,
            } = &mut record.holder
            {
                if *expires_unix_ms <= now_ms {
                    // Expired but not reclaimed yet: gone all the same, as
                    // `list` and the next `reclaim` already say.
                    return Err(Error::NotLeased {
                        owner: owner.to_owned(),
                    });
                }
                *expires_unix_ms = now_ms.saturating_add(*ttl_ms);
            }
            Ok(())
        })
    }

    /// Releases every port of `owner` and returns them (empty when the owner
    /// held none: releasing what is not leased is not an error).
    pub fn release_owner(&self, owner: &str) -> Result<Vec<u16>, Error> {
        let ports = self.store.update(|doc| {
            let ports = doc
                .owners
                .remove(owner)
                .map(|record| record.ports.into_values().collect::<Vec<_>>())
                .unwrap_or_default();
            for port in &ports {
                self.claims.release(*port)?;
            }
            Ok::<_, Error>(ports)
        })?;
        if !ports.is_empty() {
            tracing::debug!(owner, ?ports, "released lease");
        }
        Ok(ports)
    }

    /// Releases one port, whoever holds it; `false` when it was not leased.
    /// An owner left without ports is removed.
    pub fn release_port(&self, port: u16) -> Result<bool, Error> {
        self.store.update(|doc| {
            let found = doc.owners.iter().find_map(|(owner, record)| {
                record
                    .ports
                    .iter()
                    .find(|(_, p)| **p == port)
                    .map(|(name, _)| (owner.clone(), name.clone()))
            });
            let Some((owner, name)) = found else {
                return Ok::<_, Error>(false);
            };
            if let Some(record) = doc.owners.get_mut(&owner) {
                record.ports.remove(&name);
                if record.ports.is_empty() {
                    doc.owners.remove(&owner);
                }
            }
            self.claims.release(port)?;
            tracing::debug!(owner, name, port, "released port");
            Ok(true)
        })
    }

    /// Frees every lease whose process is gone (exited, or its pid reused)
    /// or whose TTL ran out, and reports what was freed. Also removes the
    /// host-wide claims of this document that no lease holds (left by a
    /// crash between claim and lease).
    pub fn reclaim(&self) -> Result<Vec<Reclaimed>, Error> {
        let now_ms = now_unix_ms();
        self.store.update(|doc| {
            let reclaimed = self.reclaim_stale(doc, now_ms)?;
            self.claims.sweep(&leased_ports(doc))?;
            Ok::<_, Error>(reclaimed)
        })
    }

    /// Every lease, stale ones included, ordered by owner.
    pub fn list(&self) -> Result<Vec<LeaseInfo>, Error> {
        let doc = self.store.read()?;
        let now_ms = now_unix_ms();
        Ok(doc
            .owners
            .into_iter()
            .map(|(owner, record)| {
                let pid = match record.holder {
                    StoredHolder::Process { pid, .. } => Some(pid),
                    _ => None,
                };
                LeaseInfo {
                    liveness: liveness(&record.holder, now_ms),
                    holder: Holder::from_stored(&record.holder),
                    pid,
                    age: Duration::from_millis(now_ms.saturating_sub(record.created_unix_ms)),
                    ports: record.ports,
                    owner,
                }
            })
            .collect())
    }
}

/// The directory of the lease document when [`Options::state_dir`] is not
/// set: `$ISOLANE_STATE_DIR`, else `$XDG_STATE_HOME/isolane`, else
/// `$HOME/.local/state/isolane` (empty variables count as unset).
pub fn default_state_dir() -> Result<PathBuf, Error> {
    let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = var("ISOLANE_STATE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("isolane"));
    }
    if let Some(home) = var("HOME") {
        return Ok(PathBuf::from(home).join(".local/state/isolane"));
    }
    Err(Error::NoStateDir)
}

fn validate(owner: &str, names: &[&str], range: &RangeInclusive<u16>) -> Result<(), Error> {
    let bad_owner = |reason| Error::InvalidOwner {
        owner: owner.to_owned(),
        reason,
    };
    if owner.is_empty() {
        return Err(bad_owner("it is empty"));
    }
    if owner.len() > MAX_NAME_LEN {
        return Err(bad_owner("it is longer than 255 bytes"));
    }
    if owner.chars().any(char::is_control) {
        return Err(bad_owner("it contains control characters"));
    }
    if names.is_empty() {
        return Err(Error::NoNames {
            owner: owner.to_owned(),
        });
    }
    let mut seen = HashSet::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let bad_name = |reason| Error::InvalidName {
            owner: owner.to_owned(),
            name: (*name).to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(Error::EmptyName {
                owner: owner.to_owned(),
                index,
            });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad_name("it is longer than 255 bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(bad_name("it contains control characters"));
        }
        if !seen.insert(*name) {
            return Err(Error::DuplicateName {
                owner: owner.to_owned(),
                name: (*name).to_owned(),
            });
        }
    }
    if names.len() > range::len(range) {
        return Err(Error::TooManyNames {
            owner: owner.to_owned(),
            requested: names.len(),
            capacity: range::len(range),
            start: *range.start(),
            end: *range.end(),
        });
    }
    Ok(())
}

impl PortAllocator {
    /// Gives `owner` a port for every name it does not hold yet, taking
    /// ports that no lease of this document holds, that `accept` approves
    /// and that no other document has claimed host-wide, starting at the
    /// owner's preferred block. Returns the lease and the ports newly
    /// claimed for it.
    fn allocate(
        &self,
        doc: &mut Leases,
        owner: &str,
        names: &[&str],
        holder: Holder,
        now_ms: u64,
        mut accept: impl FnMut(u16) -> bool,
    ) -> Result<(Lease, Vec<u16>), Error> {
        let range = &self.range;
        let existing = doc.owners.get(owner);
        // Ports leased before claims existed get theirs now (idempotent).
        for (name, port) in existing.map(|r| &r.ports).into_iter().flatten() {
            if !self.claims.claim(*port, owner, name)? {
                tracing::warn!(
                    owner,
                    name,
                    port,
                    "a port of this lease is claimed by another user or state directory"
                );
            }
        }
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| existing.is_none_or(|record| !record.ports.contains_key(*name)))
            .collect();
        let mut fresh = Vec::with_capacity(missing.len());
        if !missing.is_empty() {
            let leased = leased_ports(doc);
            let len = range::len(range);
            let blocks = len.div_ceil(BLOCK);
            let first = usize::try_from(preference_hash(owner) % blocks as u64)
                .expect("a block index is below the block count, a usize")
                * BLOCK;
            for step in 0..len {
                let port = range.start()
                    + u16::try_from((first + step) % len).expect("an offset inside a u16 range");
                if leased.contains(&port) || !accept(port) {
                    continue;
                }
                match self.claims.claim(port, owner, missing[fresh.len()]) {
                    Ok(true) => fresh.push(port),
                    Ok(false) => continue,
                    Err(error) => {
                        self.release_claims(&fresh);
                        return Err(error);
                    }
                }
                if fresh.len() == missing.len() {
                    break;
                }
            }
            if fresh.len() < missing.len() {
                self.release_claims(&fresh);
                let leased_in_range = leased.iter().filter(|port| range.contains(port)).count();
                return Err(Error::Exhausted {
                    owner: owner.to_owned(),
                    requested: missing.len(),
                    available: fresh.len(),
                    leased: leased_in_range,
                    start: *range.start(),
                    end: *range.end(),
                });
            }
            // The claims must outlive a power loss as the lease does.
            if let Err(error) = self.claims.sync() {
                self.release_claims(&fresh);
                return Err(error);
            }
        }
        let record = doc
            .owners
            .entry(owner.to_owned())
            .or_insert_with(|| Record {
                ports: BTreeMap::new(),
                holder: StoredHolder::Manual,
                created_unix_ms: now_ms,
            });
        record.holder = holder.stored(now_ms);
        for (name, port) in missing.iter().zip(&fresh) {
            record.ports.insert((*name).to_owned(), *port);
        }
        if !fresh.is_empty() {
            tracing::debug!(owner, ports = ?record.ports, "leased ports");
        }
        let lease = Lease {
            owner: owner.to_owned(),
            ports: record.ports.clone(),
        };
        Ok((lease, fresh))
    }

    /// Drops the claims of a request that failed before its lease was
    /// recorded. Best effort: a claim left behind is ours, and the next
    /// [`reclaim`](Self::reclaim) removes it.
    fn release_claims(&self, ports: &[u16]) {
        for port in ports {
            if let Err(error) = self.claims.release(*port) {
                tracing::warn!(port, %error, "cannot release the claim of a failed lease");
            }
        }
    }

    /// Removes every stale lease (and its claims) from the document and
    /// reports them.
    fn reclaim_stale(&self, doc: &mut Leases, now_ms: u64) -> Result<Vec<Reclaimed>, Error> {
        let mut reclaimed = Vec::new();
        doc.owners
            .retain(|owner, record| match liveness(&record.holder, now_ms) {
                Liveness::Stale(reason) => {
                    tracing::info!(owner, ports = ?record.ports, ?reason, "reclaimed stale port lease");
                    reclaimed.push(Reclaimed {
                        owner: owner.clone(),
                        ports: std::mem::take(&mut record.ports),
                        reason,
                    });
                    false
                }
                _ => true,
            });
        for port in reclaimed.iter().flat_map(|r| r.ports.values()) {
            self.claims.release(*port)?;
        }
        Ok(reclaimed)
    }
}

/// Every port the document leases.
fn leased_ports(doc: &Leases) -> HashSet<u16> {
    doc.owners
        .values()
        .flat_map(|record| record.ports.values().copied())
        .collect()
}

/// Refuses a state directory (or lease document) that belongs to another
/// user: the leases there are theirs, and files we wrote there would be
/// ours in their directory.
fn refuse_foreign(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    for path in [dir.to_owned(), dir.join(DOCUMENT_NAME)] {
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.uid() != uid
        {
            return Err(Error::ForeignStateDir {
                dir: dir.to_owned(),
                owner_uid: meta.uid(),
                uid,
            });
        }
    }
    Ok(())
}

/// FNV-1a: stable across runs, platforms and Rust versions, unlike std's
/// hasher, so an owner's preferred block never moves.
fn preference_hash(owner: &str) -> u64 {
    owner.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn liveness(holder: &StoredHolder, now_ms: u64) -> Liveness {
    match *holder {
        StoredHolder::Process { pid, start_time } => {
            if (ProcessIdentity { pid, start_time }).is_alive() {
                Liveness::Running
            } else if ProcessIdentity::pid_exists(pid) {
                Liveness::Stale(StaleReason::PidReused { pid })
            } else {
                Liveness::Stale(StaleReason::Exited { pid })
            }
        }
        StoredHolder::Expires {
            expires_unix_ms, ..
        } => {
            if expires_unix_ms > now_ms {
                Liveness::Fresh {
                    remaining: Duration::from_millis(expires_unix_ms - now_ms),
                }
            } else {
                Liveness::Stale(StaleReason::Expired {
                    ago: Duration::from_millis(now_ms - expires_unix_ms),
                })
            }
        }
        StoredHolder::Manual => Liveness::Manual,
        StoredHolder::Path { ref path } => match path.try_exists() {
            Ok(false) => Liveness::Stale(StaleReason::PathGone),
            Ok(true) | Err(_) => Liveness::PathExists,
        },
    }
}
