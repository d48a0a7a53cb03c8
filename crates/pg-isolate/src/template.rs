//! Templates: built once per distinct setup, by exactly one process.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use postgres::Client;
use sha2::{Digest, Sha256};

use crate::databases::comment_sql;
use crate::owner::{DatabaseKind, OwnerRecord, now};
use crate::testdb::TestDatabase;
use crate::{Error, Server, SetupError, names};

/// The version of pg-isolate's template format; part of every template key,
/// so a change in how templates are built never reuses an old one.
pub const TEMPLATE_FORMAT_VERSION: u32 = 1;

/// How often (seconds) a template's `last_used` is refreshed at most: the
/// resolution of the least-recently-used order of the template budget.
const TOUCH_INTERVAL: u64 = 60;

/// A complete template database; clone it with [`Template::test_database`]
/// or [`Server::create_database`] with [`crate::CreateOptions::template`].
#[derive(Debug, Clone)]
pub struct Template {
    server: Server,
    name: String,
    key: String,
    /// How long building it took, when this handle's call built it.
    built_in: Option<std::time::Duration>,
}

/// Options of [`Server::template_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TemplateOptions {
    /// Drop a complete template of the same key and build it again (under
    /// the build lock, so concurrent callers still see exactly one build).
    pub rebuild: bool,
}

/// The key of a template: a hash of what defines its schema.
pub(crate) struct Key {
    pub(crate) hex: String,
    pub(crate) lock: i64,
}

impl Key {
    fn new(key_material: &[u8], major: u32) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"pg-isolate template\0");
        hasher.update(TEMPLATE_FORMAT_VERSION.to_be_bytes());
        hasher.update(major.to_be_bytes());
        hasher.update(key_material);
        let digest = hasher.finalize();
        let mut lock = [0u8; 8];
        lock.copy_from_slice(&digest[..8]);
        Self {
            hex: names::hex(&digest[..8]),
            lock: i64::from_be_bytes(lock),
        }
    }
}

/// The build lock ([`Key::lock`]) of the template with key `hex`
/// ([`Key::hex`]).
pub(crate) fn lock_of(hex: &str) -> Option<i64> {
    u64::from_str_radix(hex, 16)
        .ok()
        .map(|k| i64::from_be_bytes(k.to_be_bytes()))
}

/// The advisory lock a process holds (shared) on a template for as long as
/// its [`Server`] handle lives, so gc never drops a template a running
/// process may still clone; derived from the build lock `lock`.
pub(crate) fn hold_lock(lock: i64) -> i64 {
    !lock
}

/// The name of the template with key `hex`.
pub(crate) fn template_name(prefix: &str, hex: &str) -> String {
    names::fit(&format!("{prefix}tpl_{hex}"))
}

impl Server {
    /// The template for `key_material`, building it with `setup` if it does
    /// not exist yet.
    ///
    /// `key_material` is everything that defines the schema (for example
    /// the migration files' names and contents and a salt); it is hashed
    /// together with the server's major version and
    /// [`TEMPLATE_FORMAT_VERSION`]. Across all processes on the server one
    /// builds the template (under a PostgreSQL advisory lock) while the
    /// others wait. `setup` receives a connection to the new database; the
    /// database is marked as a template only after it returns `Ok`, so a
    /// crash mid-setup leaves a half-built database that the next call
    /// detects, drops and rebuilds. If `setup` fails or panics, the
    /// half-built database is dropped and the error (or panic) passed on.
    pub fn template<F>(&self, key_material: &[u8], setup: F) -> Result<Template, Error>
    where
        F: FnOnce(&mut Client) -> Result<(), SetupError> + Send,
    {
        self.template_inner(key_material, false, |name| {
            let mut client = self.client(name)?;
            Ok(setup(&mut client))
        })
    }

    /// The template for `key_material`, built if it does not exist yet (or
    /// when [`TemplateOptions::rebuild`]) by `build`, which receives the
    /// new database's connection URL (with its password) and fills it by
    /// any means: a migration tool's own command, a restore, a script.
    ///
    /// Everything else is as in [`Server::template`]: the key, exactly one
    /// builder on the host while the others wait, the budget, and a failed
    /// or panicking `build` leaving no database behind. Connections that
    /// `build` left open are closed before the database becomes a template.
    pub fn template_with<F>(
        &self,
        key_material: &[u8],
        options: TemplateOptions,
        build: F,
    ) -> Result<Template, Error>
    where
        F: FnOnce(&str) -> Result<(), SetupError> + Send,
    {
        self.template_inner(key_material, options.rebuild, |name| {
            Ok(build(&self.url(name)))
        })
    }

    /// The key (hex) and database name [`Server::template`] and
    /// [`Server::template_with`] give `key_material` on this server,
    /// without building anything.
    pub fn template_key(&self, key_material: &[u8]) -> (String, String) {
        let key = Key::new(key_material, self.major_version());
        let name = template_name(self.prefix(), &key.hex);
        (key.hex, name)
    }

    /// The complete template for `key_material`, if one exists; nothing is
    /// built, held or refreshed.
    pub fn find_template(&self, key_material: &[u8]) -> Result<Option<Template>, Error> {
        let (key, name) = self.template_key(key_material);
        let found = self.database_info(&name)?;
        Ok(found.as_ref().and_then(ready_owner).map(|_| Template {
            server: self.clone(),
            name,
            key,
            built_in: None,
        }))
    }

    fn template_inner<F>(
        &self,
        key_material: &[u8],
        rebuild: bool,
        setup: F,
    ) -> Result<Template, Error>
    where
        F: FnOnce(&str) -> Result<Result<(), SetupError>, Error> + Send,
    {
        if crate::rt::in_runtime() {
            return crate::rt::off_runtime(|| self.template_inner(key_material, rebuild, setup));
        }
        let key = Key::new(key_material, self.major_version());
        let name = template_name(self.prefix(), &key.hex);
        let mut template = Template {
            server: self.clone(),
            name: name.clone(),
            key: key.hex.clone(),
            built_in: None,
        };
        if !rebuild && self.held_ready(&name, key.lock)? {
            return Ok(template);
        }
        let mut locker = self.admin_client()?;
        locker
            .execute("SELECT pg_advisory_lock($1)", &[&key.lock])
            .map_err(|e| Error::sql("waiting for the template build lock of", &name, e))?;
        let result = self.build_locked(&name, &key, rebuild, setup);
        // Closing the connection releases the lock in any case.
        let _ = locker.execute("SELECT pg_advisory_unlock($1)", &[&key.lock]);
        template.built_in = result?;
        Ok(template)
    }

    /// Holds the template `name` (build lock `lock`) and tells whether it
    /// is complete, refreshing its `last_used`. Held before it is looked
    /// at: from here on gc leaves it alone.
    fn held_ready(&self, name: &str, lock: i64) -> Result<bool, Error> {
        self.hold(hold_lock(lock))?;
        match self.database_info(name)?.as_ref().and_then(ready_owner) {
            Some(owner) => {
                self.touch(name, owner)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The complete template of key `key` (hex, from [`Template::key`]),
    /// held and refreshed as [`Server::template`] does; `None` when it does
    /// not exist (or is not complete). Nothing is built.
    pub(crate) fn template_by_key(&self, key: &str) -> Result<Option<Template>, Error> {
        if crate::rt::in_runtime() {
            return crate::rt::off_runtime(|| self.template_by_key(key));
        }
        let Some(lock) = lock_of(key) else {
            return Ok(None);
        };
        let template = Template::known(self, key);
        Ok(self.held_ready(template.name(), lock)?.then_some(template))
    }

    fn build_locked<F>(
        &self,
        name: &str,
        key: &Key,
        rebuild: bool,
        setup: F,
    ) -> Result<Option<std::time::Duration>, Error>
    where
        F: FnOnce(&str) -> Result<Result<(), SetupError>, Error>,
    {
        if let Some(info) = self.database_info(name)? {
            if ready_owner(&info).is_some() && !rebuild {
                return Ok(None);
            }
            if info.owner.is_none() {
                return Err(Error::NotOwned {
                    database: name.to_owned(),
                });
            }
            // We hold the build lock, so nobody is building it: it is the
            // remains of a crashed build (or a complete one to rebuild).
            if ready_owner(&info).is_some() {
                tracing::info!(database = name, "dropping template to rebuild it");
            } else {
                tracing::warn!(database = name, "dropping half-built template");
            }
            self.drop_owned(name, info.is_template)?;
        }
        let started = std::time::Instant::now();
        let mut record = OwnerRecord::new(DatabaseKind::Template, None);
        record.template_key = Some(key.hex.clone());
        self.create_with_record(name, None, None, &record)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| setup(name)));
        match outcome {
            Ok(Ok(Ok(()))) => {}
            Ok(Err(error)) => {
                let _ = self.drop_owned(name, false);
                return Err(error);
            }
            Ok(Ok(Err(source))) => {
                let _ = self.drop_owned(name, false);
                return Err(Error::Setup {
                    template: name.to_owned(),
                    source,
                });
            }
            Err(panic) => {
                let _ = self.drop_owned(name, false);
                resume_unwind(panic);
            }
        }
        record.ready = true;
        record.last_used = Some(now());
        let ident = names::ident(name);
        self.with_admin(|client| {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .map_err(|e| Error::sql("closing setup connections to", name, e))?;
            client
                .batch_execute(&format!("ALTER DATABASE {ident} ALLOW_CONNECTIONS false"))
                .map_err(|e| Error::sql("closing template to connections", name, e))?;
            client
                .batch_execute(&comment_sql(name, &record))
                .map_err(|e| Error::sql("writing the owner record of", name, e))?;
            client
                .batch_execute(&format!("ALTER DATABASE {ident} IS_TEMPLATE true"))
                .map_err(|e| Error::sql("marking template", name, e))
        })?;
        tracing::info!(
            database = name,
            elapsed_ms = started.elapsed().as_millis(),
            "built template"
        );
        Ok(Some(started.elapsed()))
    }

    /// Refreshes `last_used` of a template when it is older than an hour.
    fn touch(&self, name: &str, mut owner: OwnerRecord) -> Result<(), Error> {
        let now = now();
        if owner
            .last_used
            .is_some_and(|t| now.saturating_sub(t) < TOUCH_INTERVAL)
        {
            return Ok(());
        }
        owner.last_used = Some(now);
        self.with_admin(|client| {
            client
                .batch_execute(&comment_sql(name, &owner))
                .map_err(|e| Error::sql("writing the owner record of", name, e))
        })
    }
}

/// The owner record of a complete template.
pub(crate) fn ready_owner(info: &crate::DatabaseInfo) -> Option<OwnerRecord> {
    let owner = info.owner.as_ref()?;
    (info.is_template && owner.kind == DatabaseKind::Template && owner.ready).then(|| owner.clone())
}

impl Template {
    /// A handle on the template of key `key` (hex) on `server`, which may
    /// not exist.
    pub(crate) fn known(server: &Server, key: &str) -> Self {
        Self {
            server: server.clone(),
            name: template_name(server.prefix(), key),
            key: key.to_owned(),
            built_in: None,
        }
    }

    /// The template database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template key (hex), recorded in its owner record.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long building the template took, when the call that returned
    /// this handle built it (`None`: it existed already).
    pub fn build_time(&self) -> Option<std::time::Duration> {
        self.built_in
    }

    /// The server the template lives on.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// A new private database cloned from this template, dropped when the
    /// handle is dropped.
    pub fn test_database(&self) -> Result<TestDatabase, Error> {
        TestDatabase::create(&self.server, Some(&self.name), Some(&self.key))
    }
}
