//! Migrations in the formats projects already use (diesel, sqlx): loading,
//! migrating up or down to a target, schema snapshots from the catalogs, and
//! rollback verification.
//!
//! The compatibility rules with diesel and sqlx are documented on
//! [`Migrations`].

mod diff;
mod error;
mod format;
mod rollback;
mod runner;
mod snapshot;
mod split;
mod templates;
mod tracking;

pub use diff::{Change, Difference, SchemaDiff};
pub(crate) use error::message_and_causes;
pub use error::{Direction, MigrateError, MigrationFailure};
pub use format::{Format, Migration, Migrations};
pub use rollback::{
    CheckedDifference, RollbackEntry, RollbackOptions, RollbackReport, RollbackStatus,
    RollbackStep, RollbackSummary, StepError, verify_rollbacks,
};
pub use runner::{MigrateReport, Phase, Progress, Target};
pub use snapshot::SchemaSnapshot;
