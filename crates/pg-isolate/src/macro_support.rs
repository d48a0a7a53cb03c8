//! What `#[pg_isolate::test]` expands to calls: not a public API (hidden,
//! may change in any release).
//!
//! Per process, each distinct setup (migrations directory and fixtures) is
//! loaded, hashed and turned into a template and a warm [`Pool`] once; every
//! test then claims a ready clone from the pool.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::{
    Error, Format, MigrateError, Migrations, Pool, PoolOptions, Server, Target, TestDatabase,
};

/// Why a test's database could not be prepared.
#[derive(Debug, thiserror::Error)]
enum SetupFailed {
    #[error(transparent)]
    Server(#[from] Error),
    #[error(transparent)]
    Migrations(#[from] MigrateError),
    #[error("reading fixture {path}: {source}")]
    Fixture {
        path: PathBuf,
        source: std::io::Error,
    },
}

thread_local! {
    /// How long this thread's last [`Guard::new`] took.
    static LAST_HANDOUT: std::cell::Cell<Option<std::time::Duration>> =
        const { std::cell::Cell::new(None) };
}

/// How long the database hand-out of the test running on this thread took
/// (everything `#[pg_isolate::test]` does before the arguments are made:
/// in a fresh process also attaching to the server and finding the
/// template); for benchmarks.
pub fn last_handout() -> Option<std::time::Duration> {
    LAST_HANDOUT.with(std::cell::Cell::get)
}

/// One process-wide setup: its pool, or why it failed (every test of the
/// setup fails with the same message).
type Setup = Arc<OnceLock<Result<Pool, String>>>;

/// The setups of this process, by migrations directory and fixtures.
type Setups = Mutex<HashMap<(PathBuf, Vec<PathBuf>), Setup>>;

fn setups() -> &'static Setups {
    static SETUPS: OnceLock<Setups> = OnceLock::new();
    SETUPS.get_or_init(Mutex::default)
}

/// A fixture named in the attribute: relative to the crate's root, else to
/// its `fixtures/` directory.
fn fixture_path(manifest_dir: &Path, name: &str) -> PathBuf {
    let direct = manifest_dir.join(name);
    if direct.exists() {
        return direct;
    }
    let in_fixtures = manifest_dir.join("fixtures").join(name);
    if in_fixtures.exists() {
        in_fixtures
    } else {
        direct
    }
}

fn build(migrations: Option<&Path>, fixtures: &[PathBuf]) -> Result<Pool, SetupFailed> {
    let server = Server::shared()?;
    let loaded = match migrations {
        Some(dir) => Some(Migrations::load(dir, Format::Auto)?),
        None => None,
    };
    let mut scripts = Vec::with_capacity(fixtures.len());
    for path in fixtures {
        let sql = std::fs::read_to_string(path).map_err(|source| SetupFailed::Fixture {
            path: path.clone(),
            source,
        })?;
        scripts.push(sql);
    }
    let mut key = b"pg-isolate test macro v1\0".to_vec();
    if let Some(m) = &loaded {
        key.extend_from_slice(&m.key_material());
    }
    for sql in &scripts {
        key.extend_from_slice(b"\0fixture\0");
        key.extend_from_slice(&(sql.len() as u64).to_le_bytes());
        key.extend_from_slice(sql.as_bytes());
    }
    let template = server.template(&key, |client| {
        if let Some(m) = &loaded {
            m.migrate(client, Target::Latest, |_| {})?;
        }
        for sql in &scripts {
            client.batch_execute(sql)?;
        }
        Ok(())
    })?;
    Ok(template.pool(PoolOptions::default())?)
}

/// The private database of one test, dropped (or kept, for a failed test
/// with `PG_ISOLATE_KEEP_FAILED`) when the test ends.
#[derive(Debug)]
pub struct Guard {
    db: Option<TestDatabase>,
    url: String,
}

impl Guard {
    /// Claims a database for a test; panics (failing the test) with the
    /// error's message when it cannot.
    pub fn new(
        manifest_dir: &str,
        migrations: &str,
        default_migrations: bool,
        fixtures: &[&str],
    ) -> Self {
        let started = std::time::Instant::now();
        match Self::try_new(manifest_dir, migrations, default_migrations, fixtures) {
            Ok(guard) => {
                LAST_HANDOUT.with(|last| last.set(Some(started.elapsed())));
                guard
            }
            Err(message) => panic!("pg-isolate: {message}"),
        }
    }

    fn try_new(
        manifest_dir: &str,
        migrations: &str,
        default_migrations: bool,
        fixtures: &[&str],
    ) -> Result<Self, String> {
        let manifest_dir = Path::new(manifest_dir);
        let dir = manifest_dir.join(migrations);
        // Without `migrations = ...` a crate without a `migrations/`
        // directory gets an empty database (plus fixtures).
        let dir = (!default_migrations || dir.is_dir()).then_some(dir);
        let fixtures: Vec<PathBuf> = fixtures
            .iter()
            .map(|name| fixture_path(manifest_dir, name))
            .collect();
        let key = (dir.clone().unwrap_or_default(), fixtures.clone());
        let setup = Arc::clone(
            setups()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default(),
        );
        let pool = setup
            .get_or_init(|| build(dir.as_deref(), &fixtures).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)?;
        let db = pool.test_database().map_err(|e| e.to_string())?;
        Ok(Self {
            url: db.url(),
            db: Some(db),
        })
    }

    /// After the test returned: a failed one keeps its database when
    /// `PG_ISOLATE_KEEP_FAILED` is set (a panicking one is handled by the
    /// database's own drop).
    pub fn finish<T: Outcome>(&mut self, outcome: &T) {
        if !outcome.failed() {
            return;
        }
        if let Some(db) = self.db.take()
            && db.server().inner.options.keep_failed
        {
            let name = db.keep();
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "pg-isolate: kept database {name} of the failed test ({})",
                    crate::url::redact(&self.url)
                );
            }
        }
    }

    /// A handle for the test; the guard keeps the owning one, so that it
    /// can keep the database of a test that returned `Err`.
    fn handle(&self) -> TestDatabase {
        match &self.db {
            Some(db) => db.view(),
            None => panic!("pg-isolate: the test's database is gone"),
        }
    }
}

/// Whether a test's return value says it failed.
pub trait Outcome {
    /// `true` for an `Err`.
    fn failed(&self) -> bool;
}

impl Outcome for () {
    fn failed(&self) -> bool {
        false
    }
}

impl<T, E> Outcome for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}

/// Runs an async test on a current-thread runtime of its own.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => panic!("pg-isolate: cannot start a tokio runtime for the test: {error}"),
    }
}

fn fail<T>(what: &str, error: impl std::fmt::Display) -> T {
    panic!("pg-isolate: {what}: {error}")
}

/// An argument a sync `#[pg_isolate::test]` can be given.
#[diagnostic::on_unimplemented(
    message = "`#[pg_isolate::test]` cannot give a `fn` test a `{Self}`",
    note = "a `fn` test takes `pg_isolate::TestDatabase`, `String` (the URL), `postgres::Client`, or `diesel::PgConnection` (feature `diesel`)"
)]
pub trait FromTestDatabase: Sized {
    /// Makes the argument from the test's database.
    fn from_test_database(guard: &mut Guard) -> Self;
}

impl FromTestDatabase for TestDatabase {
    fn from_test_database(guard: &mut Guard) -> Self {
        guard.handle()
    }
}

impl FromTestDatabase for String {
    fn from_test_database(guard: &mut Guard) -> Self {
        guard.url.clone()
    }
}

impl FromTestDatabase for postgres::Client {
    fn from_test_database(guard: &mut Guard) -> Self {
        postgres::Client::connect(&guard.url, postgres::NoTls)
            .unwrap_or_else(|e| fail("connecting to the test database", e))
    }
}

#[cfg(feature = "diesel")]
impl FromTestDatabase for diesel::PgConnection {
    fn from_test_database(guard: &mut Guard) -> Self {
        <diesel::PgConnection as diesel::Connection>::establish(&guard.url)
            .unwrap_or_else(|e| fail("connecting to the test database", e))
    }
}

/// An argument an `async fn` `#[pg_isolate::test]` can be given.
#[diagnostic::on_unimplemented(
    message = "`#[pg_isolate::test]` cannot give an `async fn` test a `{Self}`",
    note = "an `async fn` test takes `pg_isolate::TestDatabase`, `String` (the URL), `tokio_postgres::Client` (feature `tokio`), or `sqlx::PgPool` / `sqlx::PgConnection` (feature `sqlx`); a `postgres::Client` must not be used inside a runtime"
)]
pub trait FromTestDatabaseAsync: Sized {
    /// Makes the argument from the test's database.
    fn from_test_database(guard: &mut Guard) -> impl Future<Output = Self>;
}

impl FromTestDatabaseAsync for TestDatabase {
    fn from_test_database(guard: &mut Guard) -> impl Future<Output = Self> {
        std::future::ready(guard.handle())
    }
}

impl FromTestDatabaseAsync for String {
    fn from_test_database(guard: &mut Guard) -> impl Future<Output = Self> {
        std::future::ready(guard.url.clone())
    }
}

#[cfg(feature = "tokio")]
impl FromTestDatabaseAsync for tokio_postgres::Client {
    fn from_test_database(guard: &mut Guard) -> impl Future<Output = Self> {
        let url = guard.url.clone();
        async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| fail("connecting to the test database", e));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "test database connection ended");
                }
            });
            client
        }
    }
}

#[cfg(feature = "sqlx")]
impl FromTestDatabaseAsync for sqlx::PgPool {
    fn from_test_database(guard: &mut Guard) -> impl Future<Output = Self> {
        let url = guard.url.clone();
        async move {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect(&url)
                .await
                .unwrap_or_else(|e| fail("connecting to the test database", e))
        }
    }
}

#[cfg(feature = "sqlx")]
impl FromTestDatabaseAsync for sqlx::PgConnection {
    fn from_test_database(guard: &mut Guard) -> impl Future<Output = Self> {
        let url = guard.url.clone();
        async move {
            <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap_or_else(|e| fail("connecting to the test database", e))
        }
    }
}
