use std::net::IpAddr;
use std::path::PathBuf;

/// Everything that can go wrong while leasing, releasing or listing ports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host-wide lease document could not be opened, read or written
    /// (a corrupt document is reported here and left untouched).
    #[error("cannot use the port lease registry")]
    Registry(#[from] registry::Error),
    /// No state directory was configured and none could be derived.
    #[error(
        "cannot find a state directory for port leases: set Options::state_dir, \
         ISOLANE_STATE_DIR, XDG_STATE_HOME or HOME"
    )]
    NoStateDir,
    /// The state directory belongs to another user: writing leases there
    /// would leave files that user cannot change, and reading theirs would
    /// hand out ports as if they were ours.
    #[error(
        "the port lease state directory {} belongs to uid {owner_uid}, not to uid {uid}; \
         set ISOLANE_STATE_DIR (or Options::state_dir) to a directory of your own",
        dir.display()
    )]
    ForeignStateDir {
        /// The state directory.
        dir: PathBuf,
        /// Its owner.
        owner_uid: u32,
        /// The calling user.
        uid: u32,
    },
    /// The host-wide claims directory cannot be created or is unsafe to
    /// share (a symlink, not a directory, or not sticky).
    #[error("cannot use {} as the host-wide port claims directory: {reason}", dir.display())]
    ClaimsDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The underlying I/O error, if any.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A claim file could not be written, read or removed.
    #[error("cannot update the port claim {}", path.display())]
    Claim {
        /// The claim file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The owner name is empty or unusable.
    #[error("invalid lease owner {owner:?}: {reason}")]
    InvalidOwner {
        /// The owner as given.
        owner: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A lease was asked for without any port names.
    #[error("lease for {owner:?} names no ports")]
    NoNames {
        /// The owner.
        owner: String,
    },
    /// One of the port names is the empty string.
    #[error("lease for {owner:?}: port name number {index} is empty")]
    EmptyName {
        /// The owner.
        owner: String,
        /// The position of the empty name (0-based).
        index: usize,
    },
    /// A port name is unusable (too long or containing control characters).
    #[error("lease for {owner:?}: invalid port name {name:?}: {reason}")]
    InvalidName {
        /// The owner.
        owner: String,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same port name appears twice in one request.
    #[error("lease for {owner:?} names port {name:?} more than once")]
    DuplicateName {
        /// The owner.
        owner: String,
        /// The repeated name.
        name: String,
    },
    /// The configured range ends before it starts.
    #[error("port range {start}-{end} is inverted: it ends before it starts")]
    InvertedRange {
        /// First port of the range.
        start: u16,
        /// Last port of the range (inclusive).
        end: u16,
    },
    /// The configured range includes port 0, which means "any port" to the
    /// kernel and cannot be leased.
    #[error("port range {start}-{end} includes port 0, which cannot be leased")]
    RangeIncludesZero {
        /// First port of the range.
        start: u16,
        /// Last port of the range (inclusive).
        end: u16,
    },
    /// The configured range overlaps the kernel's ephemeral range, from which
    /// outgoing connections take their local ports at any moment.
    #[error(
        "port range {start}-{end} overlaps the kernel's ephemeral port range \
         {ephemeral_start}-{ephemeral_end}, whose ports any outgoing connection may take; \
         choose a range outside it or set allow_ephemeral_overlap"
    )]
    EphemeralOverlap {
        /// First port of the range.
        start: u16,
        /// Last port of the range (inclusive).
        end: u16,
        /// First ephemeral port (inclusive).
        ephemeral_start: u16,
        /// Last ephemeral port (inclusive).
        ephemeral_end: u16,
    },
    /// No range was configured and the ephemeral range leaves no room for a
    /// default one.
    #[error(
        "the kernel's ephemeral port range {ephemeral_start}-{ephemeral_end} leaves no room \
         for a default lease range; configure Options::range"
    )]
    NoDefaultRange {
        /// First ephemeral port (inclusive).
        ephemeral_start: u16,
        /// Last ephemeral port (inclusive).
        ephemeral_end: u16,
    },
    /// More ports were asked for than the whole range holds.
    #[error(
        "lease for {owner:?} asks for {requested} ports but the range {start}..{end} \
         holds only {capacity}"
    )]
    TooManyNames {
        /// The owner.
        owner: String,
        /// How many names were asked for.
        requested: usize,
        /// How many ports the range holds.
        capacity: usize,
        /// First port of the range.
        start: u16,
        /// Last port of the range (inclusive).
        end: u16,
    },
    /// Not enough free ports are left in the range.
    #[error(
        "port range {start}-{end} is exhausted: {owner:?} needs {requested} more ports but \
         only {available} are free ({leased} are leased, the rest are in use by other programs)"
    )]
    Exhausted {
        /// The owner.
        owner: String,
        /// How many new ports were needed.
        requested: usize,
        /// How many free, bindable ports were found.
        available: usize,
        /// How many ports of the range are leased.
        leased: usize,
        /// First port of the range.
        start: u16,
        /// Last port of the range (inclusive).
        end: u16,
    },
    /// A heartbeat named an owner that holds no lease (it was released or
    /// reclaimed).
    #[error("{owner:?} holds no port lease")]
    NotLeased {
        /// The owner.
        owner: String,
    },
    /// The address given to [`lease_bound`](crate::PortAllocator::lease_bound)
    /// cannot be bound at all on this machine.
    #[error("cannot bind to address {ip}")]
    BindAddress {
        /// The address.
        ip: IpAddr,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A port already leased to the owner could not be bound for hand-over
    /// (the owner probably still listens on it).
    #[error("cannot bind port {port} ({name}) leased to {owner:?} on {ip}")]
    Bind {
        /// The owner.
        owner: String,
        /// The port name.
        name: String,
        /// The port.
        port: u16,
        /// The address.
        ip: IpAddr,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the error is about the caller's input (names, ranges, a
    /// request larger than the range) rather than the state of the host.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidOwner { .. }
                | Self::NoNames { .. }
                | Self::EmptyName { .. }
                | Self::InvalidName { .. }
                | Self::DuplicateName { .. }
                | Self::InvertedRange { .. }
                | Self::RangeIncludesZero { .. }
                | Self::EphemeralOverlap { .. }
                | Self::TooManyNames { .. }
        )
    }
}
