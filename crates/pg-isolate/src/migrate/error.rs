//! The error type of the migrations module, and the precise description of a
//! failed migration script.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Which way a migration script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Applying (`up.sql`, `.up.sql`, plain `.sql`).
    Up,
    /// Reverting (`down.sql`, `.down.sql`).
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// Where and why a migration script failed: the migration, the file, the
/// line and column within the file, and the server's message and SQLSTATE.
///
/// Serializes to the `error` object of the rollback report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrationFailure {
    /// The migration's version as written in the directory.
    pub version: String,
    /// The migration's name as written in the directory.
    pub name: String,
    /// Whether the up or the down script failed.
    pub direction: Direction,
    /// The script file.
    pub file: PathBuf,
    /// The 1-based line in the file, when it could be determined.
    pub line: Option<u32>,
    /// The 1-based column (in characters) in that line, when known.
    pub column: Option<u32>,
    /// The 1-based number of the failing statement within the file, when known.
    pub statement: Option<u32>,
    /// The server's SQLSTATE code (`42P01`, ...), when the server reported one.
    pub sqlstate: Option<String>,
    /// The server's message (or the client's, when the server was not reached).
    pub message: String,
    /// The server's detail, if any.
    pub detail: Option<String>,
    /// The server's hint, if any.
    pub hint: Option<String>,
    /// Whether everything the script did was rolled back (it ran in its own
    /// transaction). `false` for a non-transactional script: the statements
    /// before the failing one stay applied.
    pub rolled_back: bool,
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migration {} ({}) failed ({}) at {}",
            self.version,
            self.name,
            self.direction,
            self.file.display()
        )?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(code) = &self.sqlstate {
            write!(f, " (SQLSTATE {code})")?;
        }
        if !self.rolled_back {
            f.write_str(
                "; the script is not transactional, statements before the failing one stay applied",
            )?;
        }
        Ok(())
    }
}

/// Everything that can go wrong loading, running or verifying migrations.
///
/// Its `Debug` form is its message followed by its causes, so a test or
/// `main` returning `Result<_, Box<dyn Error>>` shows what went wrong and
/// what to do (the variant and its fields are the API to match on).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no migrations of a known format.
    #[error(
        "no migrations found in {dir}: expected diesel directories (`<version>_<name>/up.sql`) \
         or sqlx files (`<version>_<description>.sql`)"
    )]
    UnknownFormat {
        /// The migrations directory.
        dir: PathBuf,
    },
    /// The directory holds migrations of both formats.
    #[error(
        "{dir} holds both diesel migrations ({diesel}) and sqlx migrations ({sqlx}); force a format"
    )]
    AmbiguousFormat {
        /// The migrations directory.
        dir: PathBuf,
        /// One diesel migration directory found.
        diesel: PathBuf,
        /// One sqlx migration file found.
        sqlx: PathBuf,
    },
    /// A directory inside a diesel migrations directory has no `up.sql`.
    #[error("{path} is not a diesel migration: it has no up.sql")]
    NotAMigration {
        /// The directory.
        path: PathBuf,
    },
    /// A migration's version could not be parsed.
    #[error("invalid migration version in {path}: {reason}")]
    InvalidVersion {
        /// The file or directory named with the version.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Two migrations have the same version.
    #[error("duplicate migration version {version}: {first} and {second}")]
    DuplicateVersion {
        /// The version (normalized).
        version: String,
        /// The first migration found with it.
        first: PathBuf,
        /// The second one.
        second: PathBuf,
    },
    /// A reversible sqlx migration has an up script but no down script.
    #[error("reversible migration {up} has no down script (expected {expected})")]
    MissingDown {
        /// The up script.
        up: PathBuf,
        /// The down script that should exist.
        expected: PathBuf,
    },
    /// A sqlx down script has no up script.
    #[error("down script {down} has no up script (expected {expected})")]
    MissingUp {
        /// The down script.
        down: PathBuf,
        /// The up script that should exist.
        expected: PathBuf,
    },
    /// A diesel `metadata.toml` is not valid.
    #[error("invalid migration metadata {path}: {reason}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A script file is empty (diesel refuses to run empty migrations too).
    #[error("migration script {path} is empty")]
    EmptyScript {
        /// The script.
        path: PathBuf,
    },
    /// A target version names no migration of the directory.
    #[error("no migration with version {version} in {dir}")]
    UnknownVersion {
        /// The version asked for.
        version: String,
        /// The migrations directory.
        dir: PathBuf,
    },
    /// Reverting needs a down script that this migration does not have.
    #[error("migration {version} ({name}) cannot be reverted: it has no down script")]
    NotReversible {
        /// The migration's version as written.
        version: String,
        /// The migration's name.
        name: String,
    },
    /// The database records a migration that the directory does not have.
    #[error(
        "the database has migration {version} applied (in {table}) but {dir} has no such migration"
    )]
    AppliedNotFound {
        /// The version recorded in the tracking table.
        version: String,
        /// The tracking table.
        table: &'static str,
        /// The migrations directory.
        dir: PathBuf,
    },
    /// An applied migration's file changed since it was applied (sqlx checksum).
    #[error(
        "migration {version} was applied with a different checksum than {file} has now; \
         the file changed after it was applied"
    )]
    ChecksumMismatch {
        /// The migration's version as written.
        version: String,
        /// The up script.
        file: PathBuf,
    },
    /// The tracking table records a migration that failed part way (sqlx `success = false`).
    #[error(
        "migration {version} is recorded as failed (dirty) in {table}; fix the database by hand \
         and delete that row"
    )]
    Dirty {
        /// The version recorded as failed.
        version: String,
        /// The tracking table.
        table: &'static str,
    },
    /// A migration script failed on the server.
    #[error("{failure}")]
    Failed {
        /// Where and why.
        failure: Box<MigrationFailure>,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// Reading or writing the tracking table failed.
    #[error("tracking table {table}: {action} failed")]
    Tracking {
        /// The tracking table.
        table: &'static str,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// Another statement on the database failed (locking, transaction
    /// control, catalog queries).
    #[error("{action} failed")]
    Database {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// The catalog returned something the snapshot could not read.
    #[error("schema snapshot: unexpected catalog row for {object}: {reason}")]
    Snapshot {
        /// The object whose row was unreadable.
        object: String,
        /// What was wrong.
        reason: String,
    },
    /// The server (creating or dropping scratch databases) failed.
    #[error("{action} failed")]
    Server {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: Box<crate::Error>,
    },
    /// A rollback range is empty or reversed.
    #[error("invalid rollback range: {reason}")]
    InvalidRange {
        /// What is wrong.
        reason: String,
    },
}

impl MigrateError {
    pub(crate) fn database(action: impl Into<String>, source: postgres::Error) -> Self {
        MigrateError::Database {
            action: action.into(),
            source,
        }
    }

    /// The failed migration's details, when this is a script failure.
    pub fn failure(&self) -> Option<&MigrationFailure> {
        match self {
            MigrateError::Failed { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

impl std::fmt::Debug for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        message_and_causes(self, f)
    }
}

/// Writes `error`'s message and each of its causes on a line of its own:
/// the `Debug` form of pg-isolate's errors, which is what `?` into
/// `Box<dyn Error>` prints when a test or `main` fails.
pub(crate) fn message_and_causes(
    error: &dyn std::error::Error,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    write!(f, "{error}")?;
    let mut source = error.source();
    while let Some(cause) = source {
        write!(f, "\n  caused by: {cause}")?;
        source = cause.source();
    }
    Ok(())
}
