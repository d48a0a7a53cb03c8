//! Named databases with owner records: create, reset, drop, list, exists.

use postgres::error::SqlState;

use crate::owner::{DatabaseKind, OwnerRecord};
use crate::server::CloneStrategy;
use crate::{Error, Server, birth, names};

/// Optional settings of [`Server::create_database`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions<'a> {
    /// Clone this template database instead of creating an empty database.
    pub template: Option<&'a str>,
    /// What the database is for (recorded in its owner record).
    pub kind: DatabaseKind,
    /// A free-form label recorded in the owner record.
    pub label: Option<&'a str>,
    /// Overrides [`crate::ServerOptions::clone_strategy`] for this clone.
    pub strategy: Option<CloneStrategy>,
    /// Recorded as [`OwnerRecord::owner_path`]: a path the owner lives in.
    pub owner_path: Option<&'a std::path::Path>,
}

impl<'a> CreateOptions<'a> {
    /// Options cloning `template`.
    pub fn from_template(template: &'a str) -> Self {
        Self {
            template: Some(template),
            ..Self::default()
        }
    }
}

/// A database on the server and its owner record, if it is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatabaseInfo {
    /// The database name.
    pub name: String,
    /// The pg-isolate owner record; `None` for databases pg-isolate did not
    /// create (which it never drops).
    pub owner: Option<OwnerRecord>,
    /// Whether the database is marked as a template.
    pub is_template: bool,
}

impl DatabaseInfo {
    /// For a database still under its birth name (created, but its owner
    /// record and final name not yet written; see the crate docs): whether
    /// the creating process is gone, so the create was interrupted for
    /// good (`Some(true)`), or still runs or ran on another host
    /// (`Some(false)`). `None` for every other database.
    pub fn interrupted_create(&self) -> Option<bool> {
        if self.owner.is_some() {
            return None;
        }
        let creator = birth::parse(&self.name)?;
        Some(creator.gone() == Some(true))
    }
}

pub(crate) fn is_code(error: &postgres::Error, code: &SqlState) -> bool {
    error.code() == Some(code)
}

/// Whether `error` says a database name is taken: `duplicate_database`, or
/// the unique violation on `pg_database`'s name index that the loser of
/// two concurrent renames (or creates) to one name gets.
pub(crate) fn is_duplicate(error: &postgres::Error) -> bool {
    is_code(error, &SqlState::DUPLICATE_DATABASE)
        || (is_code(error, &SqlState::UNIQUE_VIOLATION)
            && error
                .as_db_error()
                .and_then(|db| db.constraint())
                .is_some_and(|c| c == "pg_database_datname_index"))
}

impl Server {
    /// The full name of database `name`: validated, with the configured
    /// prefix added unless it already starts with it, and cut to
    /// PostgreSQL's 63 bytes with a deterministic hash suffix.
    ///
    /// Every method taking a database name to create, reset, drop or check
    /// resolves it this way, so callers may pass the short or the full name.
    pub fn database_name(&self, name: &str) -> Result<String, Error> {
        names::validate(name)?;
        let prefix = self.prefix();
        let full = if name.starts_with(prefix) {
            name.to_owned()
        } else {
            format!("{prefix}{name}")
        };
        Ok(names::fit(&full))
    }

    /// Creates database `name` (see [`Server::database_name`]) with an
    /// owner record, optionally cloned from a template. Returns the full
    /// name. Fails with [`Error::DatabaseExists`] if it exists.
    pub fn create_database(&self, name: &str, options: CreateOptions<'_>) -> Result<String, Error> {
        let name = self.database_name(name)?;
        let mut record = OwnerRecord::new(options.kind, options.label);
        record.owner_path = options.owner_path.map(std::path::Path::to_owned);
        self.create_with_record(&name, options.template, options.strategy, &record)?;
        Ok(name)
    }

    /// Creates database `name` owned from birth (see the `birth` module):
    /// `CREATE DATABASE` under a birth name naming this process, then the
    /// owner record and the rename to `name` in one transaction. A rename
    /// that finds `name` taken (by a concurrent create, say) drops the new
    /// database again and fails with [`Error::DatabaseExists`].
    ///
    /// Each step may be re-run by [`Server::with_admin`] on a new
    /// connection after the server restarted; a re-run that finds the step
    /// already done (the birth name taken or gone) carries on.
    pub(crate) fn create_with_record(
        &self,
        name: &str,
        template: Option<&str>,
        strategy: Option<CloneStrategy>,
        record: &OwnerRecord,
    ) -> Result<(), Error> {
        let birth = birth::birth_name(self.prefix());
        let (sql, finish) = self.creation_sql(&birth, name, template, strategy, record);
        let mut attempt = 0;
        self.with_admin(|client| {
            attempt += 1;
            match client.batch_execute(&sql) {
                Ok(()) => Ok(()),
                // The first attempt's CREATE committed before the
                // connection was lost: the birth name is ours alone.
                Err(e) if attempt > 1 && is_code(&e, &SqlState::DUPLICATE_DATABASE) => Ok(()),
                Err(e) => Err(Error::sql("creating database", name, e)),
            }
        })?;
        registry::fault_point("pg_isolate.create.after_create");
        let mut attempt = 0;
        let finished = self.with_admin(|client| {
            attempt += 1;
            match client.batch_execute(&finish) {
                Ok(()) => Ok(()),
                // The first attempt committed before the connection was
                // lost: nobody else renames a birth name.
                Err(e) if attempt > 1 && is_code(&e, &SqlState::UNDEFINED_DATABASE) => Ok(()),
                Err(e) if is_duplicate(&e) => Err(Error::DatabaseExists {
                    database: name.to_owned(),
                }),
                Err(e) => Err(Error::sql("writing the owner record of", name, e)),
            }
        });
        if let Err(error) = finished {
            // Ours by its birth name; gc would drop it after this process
            // exits, but a long-lived process should not keep it till then.
            let _ = self.with_admin(|client| {
                client
                    .batch_execute(&drop_sql(&birth, self.major_version()))
                    .map_err(|e| Error::sql("dropping database", &birth, e))
            });
            return Err(error);
        }
        tracing::debug!(database = name, template, kind = ?record.kind, "created database");
        Ok(())
    }

    /// The two steps of creating database `name` under birth name `birth`:
    /// the `CREATE DATABASE`, and the owner record with the rename to
    /// `name` as one simple query (one implicit transaction: the record
    /// and the final name appear together or not at all).
    pub(crate) fn creation_sql(
        &self,
        birth: &str,
        name: &str,
        template: Option<&str>,
        strategy: Option<CloneStrategy>,
        record: &OwnerRecord,
    ) -> (String, String) {
        let mut create = format!("CREATE DATABASE {}", names::ident(birth));
        if let Some(template) = template {
            create.push_str(&self.template_clause(template, strategy));
        }
        let finish = format!(
            "{}; ALTER DATABASE {} RENAME TO {}",
            comment_sql(birth, record),
            names::ident(birth),
            names::ident(name)
        );
        (create, finish)
    }

    /// Drops database `name` (see [`Server::database_name`]), terminating
    /// its connections. Refuses ([`Error::NotOwned`]) a database without a
    /// pg-isolate owner record.
    pub fn drop_database(&self, name: &str) -> Result<(), Error> {
        let name = self.database_name(name)?;
        let info = self
            .database_info(&name)?
            .ok_or_else(|| Error::DatabaseNotFound {
                database: name.clone(),
            })?;
        if info.owner.is_none() {
            return Err(Error::NotOwned { database: name });
        }
        self.drop_owned(&name, info.is_template)
    }

    /// Drops database `name` (exactly as listed) if, looked at again while
    /// holding a server-wide lock on the name, it is still ours and
    /// `still` holds for it. Returns whether it was dropped.
    ///
    /// For taking over what another owner left (a database of a deleted
    /// repository): two processes that both saw the old owner's database
    /// must not both drop "it", or the second drops the fresh database the
    /// first created under the same name. Waits at most a minute for the
    /// lock.
    pub fn drop_database_if(
        &self,
        name: &str,
        still: impl Fn(&DatabaseInfo) -> bool,
    ) -> Result<bool, Error> {
        let key = name_lock(name);
        let mut locker = self.admin_client()?;
        locker
            .batch_execute("SET lock_timeout = '60s'")
            .and_then(|()| locker.execute("SELECT pg_advisory_lock($1)", &[&key]))
            .map_err(|e| Error::sql("locking the name of", name, e))?;
        let dropped = match self.database_info(name) {
            Ok(Some(info)) if info.owner.is_some() && still(&info) => {
                self.drop_owned(name, info.is_template).map(|()| true)
            }
            Ok(_) => Ok(false),
            Err(error) => Err(error),
        };
        // Closing the connection would release it as well.
        let _ = locker.execute("SELECT pg_advisory_unlock($1)", &[&key]);
        dropped
    }

    /// Drops database `name` (exactly as listed) left under its birth name
    /// by a create whose process is gone
    /// ([`DatabaseInfo::interrupted_create`]); refuses any other database
    /// with [`Error::NotOwned`]. [`Server::gc`] does the same for all of
    /// them.
    pub fn drop_interrupted_create(&self, name: &str) -> Result<(), Error> {
        let info = self
            .database_info(name)?
            .ok_or_else(|| Error::DatabaseNotFound {
                database: name.to_owned(),
            })?;
        if info.interrupted_create() != Some(true) {
            return Err(Error::NotOwned {
                database: name.to_owned(),
            });
        }
        self.drop_owned(name, info.is_template)
    }

    /// Drops a database already known to be ours.
    pub(crate) fn drop_owned(&self, name: &str, is_template: bool) -> Result<(), Error> {
        let major = self.major_version();
        self.with_admin(|client| {
            if is_template {
                client
                    .batch_execute(&format!(
                        "ALTER DATABASE {} IS_TEMPLATE false",
                        names::ident(name)
                    ))
                    .or_else(|e| {
                        if is_code(&e, &SqlState::UNDEFINED_DATABASE) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| Error::sql("unmarking template", name, e))?;
            }
            if major < 13 {
                client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                        &[&name],
                    )
                    .map_err(|e| Error::sql("terminating connections to", name, e))?;
            }
            client
                .batch_execute(&drop_sql(name, major))
                .map_err(|e| Error::sql("dropping database", name, e))
        })?;
        tracing::debug!(database = name, "dropped database");
        Ok(())
    }

    /// Drops database `name` if it exists (it must be ours) and creates it
    /// afresh, from `template` when given: the "clean database before each
    /// run" step. Keeps the label and owner path of the old owner record. Returns the full
    /// name.
    pub fn reset_database(&self, name: &str, template: Option<&str>) -> Result<String, Error> {
        let name = self.database_name(name)?;
        let mut label = None;
        let mut kind = DatabaseKind::Named;
        let mut owner_path = None;
        if let Some(info) = self.database_info(&name)? {
            let Some(owner) = info.owner else {
                return Err(Error::NotOwned { database: name });
            };
            label = owner.label;
            kind = owner.kind;
            owner_path = owner.owner_path;
            self.drop_owned(&name, info.is_template)?;
        }
        let mut record = OwnerRecord::new(kind, label.as_deref());
        record.owner_path = owner_path;
        self.create_with_record(&name, template, None, &record)?;
        Ok(name)
    }

    /// Every database on the server, with the owner record of those
    /// pg-isolate created.
    pub fn list_databases(&self) -> Result<Vec<DatabaseInfo>, Error> {
        self.query_databases(None)
    }

    /// Whether database `name` (see [`Server::database_name`]) exists.
    pub fn database_exists(&self, name: &str) -> Result<bool, Error> {
        let name = self.database_name(name)?;
        Ok(self.database_info(&name)?.is_some())
    }

    /// The database called exactly `name`, if it exists.
    pub(crate) fn database_info(&self, name: &str) -> Result<Option<DatabaseInfo>, Error> {
        Ok(self.query_databases(Some(name))?.pop())
    }

    fn query_databases(&self, only: Option<&str>) -> Result<Vec<DatabaseInfo>, Error> {
        let admin = self.prefix().to_owned();
        self.with_admin(|client| {
            let rows = client
                .query(
                    "SELECT datname::text, shobj_description(oid, 'pg_database'), datistemplate \
                     FROM pg_database WHERE $1::text IS NULL OR datname = $1 ORDER BY datname",
                    &[&only],
                )
                .map_err(|e| Error::sql("listing databases", &admin, e))?;
            Ok(rows
                .iter()
                .map(|row| {
                    let comment: Option<String> = row.get(1);
                    DatabaseInfo {
                        name: row.get(0),
                        owner: OwnerRecord::parse(comment.as_deref()),
                        is_template: row.get(2),
                    }
                })
                .collect())
        })
    }
}

/// Writes the owner record, committed synchronously whatever the server's
/// `synchronous_commit` (the embedded server's is off): `CREATE DATABASE`
/// always commits synchronously, and a record lost to a server crash right
/// after would leave a database nobody may drop.
/// The advisory lock key (one-key space) serialising look-then-drop of
/// database `name`.
fn name_lock(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest([b"pg-isolate name\0".as_slice(), name.as_bytes()].concat());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

pub(crate) fn comment_sql(name: &str, record: &OwnerRecord) -> String {
    format!(
        // One simple query of two statements is one implicit transaction:
        // SET LOCAL holds for it, and an error leaves no transaction open.
        "SET LOCAL synchronous_commit = on; COMMENT ON DATABASE {} IS {}",
        names::ident(name),
        names::literal(&record.to_json())
    )
}

pub(crate) fn drop_sql(name: &str, major: u32) -> String {
    if major >= 13 {
        format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            names::ident(name)
        )
    } else {
        format!("DROP DATABASE IF EXISTS {}", names::ident(name))
    }
}
