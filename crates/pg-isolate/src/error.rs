use std::path::PathBuf;

/// The error type of a caller-supplied template setup step.
pub type SetupError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in pg-isolate.
///
/// Connection URLs in these errors never carry a password: they are shown
/// with the password replaced by `***`. Its `Debug` form is its message and
/// causes (what `?` into `Box<dyn Error>` prints when a test fails).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No PostgreSQL server binaries were found.
    #[error(
        "no PostgreSQL server binaries (postgres, initdb) found; looked in: {searched}; \
         install them (Debian/Ubuntu: `apt-get install postgresql`), put their directory on PATH, \
         set PG_ISOLATE_BINDIR, or pass a server URL (PG_ISOLATE_URL)"
    )]
    NoBinaries {
        /// The places searched, in order, separated by `, `.
        searched: String,
    },
    /// Running as root, but there is no unprivileged account to run the server as.
    #[error(
        "running as root, but PostgreSQL refuses to run as root and there is no `{account}` system user to run it as; \
         create that user (e.g. install the Debian `postgresql` package), run as a normal user, or pass a server URL (PG_ISOLATE_URL)"
    )]
    NoServerAccount {
        /// The account looked for.
        account: String,
    },
    /// A file system operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done (`creating directory`, `reading`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cluster directory is not safe or not reachable for the server account.
    #[error("cluster directory {path} cannot be used: {reason}")]
    UnusableDirectory {
        /// The directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A helper program (initdb, postgres, pg_config) failed.
    #[error("{program} failed ({status}): {output}")]
    Program {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: String,
        /// The tail of its output.
        output: String,
    },
    /// The embedded server did not become ready.
    #[error(
        "embedded PostgreSQL server in {data_dir} did not start: {reason}; server log tail:\n{log_tail}"
    )]
    ServerStart {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// Why starting was given up.
        reason: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server's state file could not be read or written.
    #[error("embedded server state {path} is unreadable")]
    State {
        /// The state file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A server URL could not be used.
    #[error("invalid server URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting to the server failed.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// A statement on the server failed.
    #[error("{action} (database {database})")]
    Sql {
        /// What was being done.
        action: &'static str,
        /// The database involved.
        database: String,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// A database name or prefix was refused.
    #[error("invalid database name {name:?}: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A database to create already exists.
    #[error("database {database} already exists")]
    DatabaseExists {
        /// The database.
        database: String,
    },
    /// A database does not exist.
    #[error("database {database} does not exist")]
    DatabaseNotFound {
        /// The database.
        database: String,
    },
    /// A database has no pg-isolate owner record, so pg-isolate will not drop or change it.
    #[error(
        "database {database} was not created by pg-isolate (no owner record); refusing to touch it"
    )]
    NotOwned {
        /// The database.
        database: String,
    },
    /// The caller's template setup step failed.
    #[error("setting up template {template} failed")]
    Setup {
        /// The template database.
        template: String,
        /// The caller's error.
        #[source]
        source: SetupError,
    },
    /// A database was to be handed over to a process that is not running.
    #[error("process {pid} is not running; a database cannot be handed over to it")]
    HolderGone {
        /// The process id.
        pid: u32,
    },
    /// A template setup step panicked.
    #[error("setting up template {template} panicked")]
    SetupPanicked {
        /// The template database.
        template: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::migrate::message_and_causes(self, f)
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sql(action: &'static str, database: &str, source: postgres::Error) -> Self {
        Self::Sql {
            action,
            database: database.to_owned(),
            source,
        }
    }
}

impl Error {
    /// Whether the error is about the caller's input (a refused name or
    /// URL, a database that exists already, is missing, or is not ours)
    /// rather than the state of the server or the machine.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidUrl { .. }
                | Self::InvalidName { .. }
                | Self::DatabaseExists { .. }
                | Self::DatabaseNotFound { .. }
                | Self::NotOwned { .. }
        )
    }
}
