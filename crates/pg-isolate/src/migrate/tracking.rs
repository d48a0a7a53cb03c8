//! The tracking tables of diesel and sqlx, written exactly as those tools
//! write them so that either tool can take over a database afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use postgres::Client;

use super::error::MigrateError;
use super::format::{Format, Migration};

/// diesel's tracking table.
pub(crate) const DIESEL_TABLE: &str = "__diesel_schema_migrations";
/// sqlx's tracking table.
pub(crate) const SQLX_TABLE: &str = "_sqlx_migrations";

/// The layout diesel creates (`diesel_migrations`, PostgreSQL backend).
const DIESEL_CREATE: &str = "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (\
     version VARCHAR(50) PRIMARY KEY NOT NULL, \
     run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)";

/// The layout sqlx creates (`sqlx-postgres`, `ensure_migrations_table`).
const SQLX_CREATE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (\
     version BIGINT PRIMARY KEY, \
     description TEXT NOT NULL, \
     installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
     success BOOLEAN NOT NULL, \
     checksum BYTEA NOT NULL, \
     execution_time BIGINT NOT NULL)";

/// One row of a tracking table.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub(crate) checksum: Option<Vec<u8>>,
    pub(crate) success: bool,
}

/// The tracking table of one format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracking {
    format: Format,
}

impl Tracking {
    pub(crate) fn new(format: Format) -> Self {
        Tracking { format }
    }

    pub(crate) fn table(self) -> &'static str {
        match self.format {
            Format::Sqlx => SQLX_TABLE,
            _ => DIESEL_TABLE,
        }
    }

    fn error(self, action: &'static str) -> impl FnOnce(postgres::Error) -> MigrateError {
        move |source| MigrateError::Tracking {
            table: self.table(),
            action,
            source,
        }
    }

    /// The advisory lock key held while migrating. For sqlx it is the key
    /// `sqlx migrate run` takes, so the two never run at the same time on one
    /// database.
    pub(crate) fn lock_key(self, database: &str) -> i64 {
        let crc = i64::from(crc32(database.as_bytes()));
        match self.format {
            Format::Sqlx => 0x3d32_ad9e * crc,
            _ => 0x2f1b_6c4d * crc,
        }
    }

    /// Creates the table if it does not exist yet.
    pub(crate) fn ensure(self, client: &mut Client) -> Result<(), MigrateError> {
        let sql = match self.format {
            Format::Sqlx => SQLX_CREATE,
            _ => DIESEL_CREATE,
        };
        client.batch_execute(sql).map_err(self.error("creating"))
    }

    /// The applied versions (as tracked), with sqlx's checksum and success flag.
    pub(crate) fn applied(
        self,
        client: &mut Client,
    ) -> Result<BTreeMap<String, Applied>, MigrateError> {
        let mut out = BTreeMap::new();
        match self.format {
            Format::Sqlx => {
                let rows = client
                    .query(
                        "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
                        &[],
                    )
                    .map_err(self.error("reading"))?;
                for row in rows {
                    let version: i64 = row.get(0);
                    out.insert(
                        version.to_string(),
                        Applied {
                            checksum: Some(row.get(1)),
                            success: row.get(2),
                        },
                    );
                }
            }
            _ => {
                let rows = client
                    .query("SELECT version FROM __diesel_schema_migrations", &[])
                    .map_err(self.error("reading"))?;
                for row in rows {
                    out.insert(
                        row.get(0),
                        Applied {
                            checksum: None,
                            success: true,
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Records `migration` as applied.
    pub(crate) fn record(
        self,
        client: &mut Client,
        migration: &Migration,
        elapsed: Duration,
    ) -> Result<(), MigrateError> {
        match (self.format, migration.sqlx_version()) {
            (Format::Sqlx, Some(version)) => {
                let nanos = i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
                client
                    .execute(
                        "INSERT INTO _sqlx_migrations \
                         (version, description, success, checksum, execution_time) \
                         VALUES ($1, $2, TRUE, $3, $4)",
                        &[
                            &version,
                            &migration.sqlx_description(),
                            &migration.sqlx_checksum(),
                            &nanos,
                        ],
                    )
                    .map_err(self.error("recording"))?;
            }
            _ => {
                client
                    .execute(
                        "INSERT INTO __diesel_schema_migrations (version) VALUES ($1)",
                        &[&migration.tracked_version()],
                    )
                    .map_err(self.error("recording"))?;
            }
        }
        Ok(())
    }

    /// Records `migration` as reverted (both tools delete the row).
    pub(crate) fn remove(
        self,
        client: &mut Client,
        migration: &Migration,
    ) -> Result<(), MigrateError> {
        match (self.format, migration.sqlx_version()) {
            (Format::Sqlx, Some(version)) => client
                .execute(
                    "DELETE FROM _sqlx_migrations WHERE version = $1",
                    &[&version],
                )
                .map_err(self.error("removing")),
            _ => client
                .execute(
                    "DELETE FROM __diesel_schema_migrations WHERE version = $1",
                    &[&migration.tracked_version()],
                )
                .map_err(self.error("removing")),
        }
        .map(|_| ())
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and the `crc` crate's
/// `CRC_32_ISO_HDLC` compute it).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }
}
