//! The warm pool: clones of a template pre-created on the server, shared by
//! every process, claimed atomically by renaming.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{Client, SimpleQueryMessage};

use crate::owner::{DatabaseKind, OwnerRecord, TOOL};
use crate::testdb::TestDatabase;
use crate::{Error, Server, Template, names};

/// Optional settings of [`Template::pool`].
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// How many clones to keep ready (default 4).
    pub size: usize,
    /// The most disk the ready clones may use together, estimated from the
    /// template's size (default 2 GiB); caps `size` for big templates.
    pub max_bytes: u64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            size: 4,
            max_bytes: 2 << 30,
        }
    }
}

/// A warm pool of clones of one template.
///
/// The clones live on the server (named `<prefix>p_<template key>_<random>`
/// and carrying owner records of kind [`DatabaseKind::Pool`]), so every
/// process using the same template shares them. [`Pool::test_database`]
/// claims one by renaming it to a fresh test database name in one
/// transaction with its new owner record: a rename fails if another process
/// got the clone first, so a clone is never handed out twice. A background
/// thread per pool handle refills the pool; across processes one refills at
/// a time (an advisory lock), and a refill never goes beyond
/// [`PoolOptions::size`] or [`PoolOptions::max_bytes`]. When the pool is
/// empty a clone is made on the spot.
#[derive(Debug)]
pub struct Pool {
    template: Template,
    shared: Arc<Shared>,
    filler: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<FillState>,
    wake: Condvar,
    /// `LIKE` pattern matching this template's pool clones.
    pattern: String,
    /// Name prefix of this template's pool clones.
    name_prefix: String,
    /// Two-key advisory lock of the refill (a separate space from the
    /// template build lock).
    lock: (i32, i32),
    options: PoolOptions,
}

#[derive(Debug, Default)]
struct FillState {
    stop: bool,
    wanted: bool,
    last_error: Option<String>,
}

/// How often a filler looks at the pool without being woken (others
/// processes claim from it too).
const RECHECK: Duration = Duration::from_millis(500);

impl Template {
    /// A warm pool of clones of this template, refilled in the background
    /// while the returned handle lives.
    pub fn pool(&self, options: PoolOptions) -> Result<Pool, Error> {
        let name_prefix = names::fit(&format!("{}p_{}_", self.server().prefix(), self.key()));
        let pattern = format!("{}%", names::like_escape(&name_prefix));
        let key = u64::from_str_radix(self.key(), 16).unwrap_or(0);
        let lock = (
            i32::from_be_bytes(((key >> 32) as u32).to_be_bytes()),
            i32::from_be_bytes((key as u32).to_be_bytes()),
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(FillState {
                wanted: true,
                ..FillState::default()
            }),
            wake: Condvar::new(),
            pattern,
            name_prefix,
            lock,
            options,
        });
        let filler = {
            let shared = Arc::clone(&shared);
            let template = self.clone();
            std::thread::Builder::new()
                .name("pg-isolate-pool".to_owned())
                .spawn(move || fill_loop(&template, &shared))
                .map_err(|e| Error::io("starting the pool filler thread for", self.name(), e))?
        };
        Ok(Pool {
            template: self.clone(),
            shared,
            filler: Some(filler),
        })
    }
}

impl Pool {
    /// A private database cloned from the template: a ready clone from the
    /// pool when there is one, else a fresh clone.
    pub fn test_database(&self) -> Result<TestDatabase, Error> {
        let server = self.template.server();
        let claimed = self.claim(server);
        self.wake();
        match claimed? {
            Some(db) => Ok(db),
            None => self.template.test_database(),
        }
    }

    /// Claims a ready clone in one round trip: a `DO` block tries up to
    /// eight candidates in random order, renaming one to a fresh test
    /// database name and writing its owner record in the same transaction;
    /// a candidate another process renamed first fails with
    /// `undefined_database` (or `object_in_use`) and the next is tried.
    /// Only a database whose owner record is a pg-isolate record of kind
    /// [`DatabaseKind::Pool`] is a candidate: a database that merely has a
    /// matching name (a named database, one without a record, one being
    /// created) is never claimed.
    fn claim(&self, server: &Server) -> Result<Option<TestDatabase>, Error> {
        let mut record = OwnerRecord::new(DatabaseKind::Test, None);
        record.template_key = Some(self.template.key().to_owned());
        let name = TestDatabase::fresh_name(server);
        let sql = format!(
            "DO $pg_isolate$ DECLARE candidate text; note text; BEGIN \
               FOR candidate, note IN SELECT datname, shobj_description(oid, 'pg_database') \
                 FROM pg_database \
                 WHERE datname LIKE {pattern} AND NOT datistemplate \
                   AND shobj_description(oid, 'pg_database') LIKE {kind_like} \
                 ORDER BY random() LIMIT 8 LOOP \
                 BEGIN \
                   IF note::jsonb ->> 'tool' IS DISTINCT FROM {tool} \
                     OR note::jsonb ->> 'kind' IS DISTINCT FROM {kind} THEN \
                     CONTINUE; \
                   END IF; \
                   EXECUTE format('ALTER DATABASE %I RENAME TO %I', candidate, {name}); \
                   EXECUTE format('COMMENT ON DATABASE %I IS %L', {name}, {record}); \
                   PERFORM set_config('pg_isolate.claimed', candidate, true); \
                   RETURN; \
                 EXCEPTION WHEN SQLSTATE '3D000' OR SQLSTATE '55006' OR SQLSTATE '42P04' \
                   OR SQLSTATE '22P02' THEN NULL; \
                 END; \
               END LOOP; \
             END $pg_isolate$; \
             SELECT coalesce(current_setting('pg_isolate.claimed', true), '')",
            pattern = names::literal(&self.shared.pattern),
            name = names::literal(&name),
            record = names::literal(&record.to_json()),
            kind_like = names::literal(POOL_KIND_LIKE),
            tool = names::literal(TOOL),
            kind = names::literal(POOL_KIND),
        );
        let claimed = server.with_admin(|client| {
            let messages = client
                .simple_query(&sql)
                .map_err(|e| Error::sql("claiming a pool clone of", self.template.name(), e))?;
            Ok(messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            }))
        })?;
        match claimed.filter(|c| !c.is_empty()) {
            Some(clone) => {
                tracing::debug!(database = %name, %clone, "claimed pool clone");
                Ok(Some(TestDatabase::adopt(server, name)))
            }
            None => Ok(None),
        }
    }

    fn wake(&self) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.wanted = true;
        self.shared.wake.notify_all();
    }

    /// The number of ready clones of this template on the server.
    pub fn ready(&self) -> Result<usize, Error> {
        let server = self.template.server();
        count_clones(server, &self.shared.pattern, self.template.name())
    }

    /// Waits until the pool holds its full size of ready clones (capped by
    /// [`PoolOptions::max_bytes`]) or `timeout` passes; returns the number
    /// ready. Useful before timing-sensitive work.
    pub fn wait_filled(&self, timeout: Duration) -> Result<usize, Error> {
        if crate::rt::in_runtime() {
            return crate::rt::off_runtime(|| self.wait_filled(timeout));
        }
        let deadline = Instant::now() + timeout;
        let target = self.target()?;
        loop {
            let ready = self.ready()?;
            if ready >= target || Instant::now() >= deadline {
                return Ok(ready);
            }
            self.wake();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last error of the background filler, if its last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_error
            .clone()
    }

    fn target(&self) -> Result<usize, Error> {
        let server = self.template.server();
        let per_clone = server.with_admin(|client| template_size(client, self.template.name()))?;
        Ok(target_size(&self.shared.options, per_clone))
    }

    /// The template the pool clones.
    pub fn template(&self) -> &Template {
        &self.template
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut state = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(filler) = self.filler.take() {
            // The filler may be in the middle of a clone.
            crate::rt::off_runtime(|| {
                let _ = filler.join();
            });
        }
    }
}

fn target_size(options: &PoolOptions, per_clone: u64) -> usize {
    let by_bytes = options.max_bytes / per_clone.max(1);
    options
        .size
        .min(usize::try_from(by_bytes).unwrap_or(usize::MAX))
}

fn template_size(client: &mut Client, template: &str) -> Result<u64, Error> {
    let size: i64 = client
        .query_one("SELECT pg_database_size($1::text)", &[&template])
        .map_err(|e| Error::sql("measuring template", template, e))?
        .get(0);
    Ok(u64::try_from(size).unwrap_or(0))
}

/// The `kind` value of a pool clone's owner record.
const POOL_KIND: &str = "pool";

/// A `LIKE` pattern matching the comments of pool clones: their owner
/// records, serialised with `tool` and `kind` first (checked by a unit
/// test). The claim also checks the parsed JSON.
const POOL_KIND_LIKE: &str = r#"{"tool":"pg-isolate","kind":"pool",%"#;

fn count_clones(server: &Server, pattern: &str, template: &str) -> Result<usize, Error> {
    server.with_admin(|client| {
        let count: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname LIKE $1 AND NOT datistemplate \
                 AND shobj_description(oid, 'pg_database') LIKE $2",
                &[&pattern, &POOL_KIND_LIKE],
            )
            .map_err(|e| Error::sql("counting pool clones of", template, e))?
            .get(0);
        Ok(usize::try_from(count).unwrap_or(0))
    })
}

fn fill_loop(template: &Template, shared: &Shared) {
    let mut client: Option<Client> = None;
    loop {
        {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !state.stop && !state.wanted {
                state = shared
                    .wake
                    .wait_timeout(state, RECHECK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if state.stop {
                return;
            }
            state.wanted = false;
        }
        let result = fill_once(template, shared, &mut client);
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => state.last_error = None,
            Err(error) => {
                tracing::warn!(template = template.name(), error = %error, "refilling the pool failed");
                state.last_error = Some(error.to_string());
                client = None;
            }
        }
    }
}

fn stopping(shared: &Shared) -> bool {
    shared
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .stop
}

fn fill_once(
    template: &Template,
    shared: &Shared,
    client: &mut Option<Client>,
) -> Result<(), Error> {
    let server = template.server();
    let conn = match client {
        Some(conn) if !conn.is_closed() => conn,
        _ => client.insert(server.admin_client()?),
    };
    let (k1, k2) = shared.lock;
    let got: bool = conn
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&k1, &k2])
        .map_err(|e| Error::sql("locking the pool of", template.name(), e))?
        .get(0);
    if !got {
        return Ok(());
    }
    let result = (|| {
        let per_clone = template_size(conn, template.name())?;
        let target = target_size(&shared.options, per_clone);
        while !stopping(shared) {
            let ready = count_clones(server, &shared.pattern, template.name())?;
            if ready >= target {
                break;
            }
            let name = names::fit(&format!("{}{}", shared.name_prefix, names::token()));
            let mut record = OwnerRecord::new(DatabaseKind::Pool, None);
            record.template_key = Some(template.key().to_owned());
            match server.create_with_record(&name, Some(template.name()), None, &record) {
                Ok(()) | Err(Error::DatabaseExists { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    })();
    let _ = conn.execute("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2]);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clone_pattern_matches_exactly_pool_records() {
        let like = |text: &str| {
            let prefix = POOL_KIND_LIKE.strip_suffix('%').unwrap_or(POOL_KIND_LIKE);
            !POOL_KIND_LIKE.contains('_') && text.starts_with(prefix)
        };
        let mut record = OwnerRecord::new(DatabaseKind::Pool, None);
        record.template_key = Some("00ff".to_owned());
        assert!(like(&record.to_json()), "{}", record.to_json());
        for kind in [
            DatabaseKind::Named,
            DatabaseKind::Test,
            DatabaseKind::Template,
        ] {
            assert!(!like(&OwnerRecord::new(kind, Some("pool")).to_json()));
        }
        assert_eq!(
            serde_json::to_value(DatabaseKind::Pool).ok(),
            Some(serde_json::Value::from(POOL_KIND))
        );
    }
}
