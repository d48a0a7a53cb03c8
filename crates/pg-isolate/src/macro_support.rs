//! What `#[pg_isolate::test]` expands to calls: not a public API (hidden,
//! may change in any release).
//!
//! Per process, each distinct setup (migrations directory and fixtures) is
//! turned into a template and a warm [`Pool`] once; every test then claims
//! a ready clone from the pool. Across processes (nextest runs each test in
//! a process of its own) the setup's template key is remembered with the
//! metadata of every file and directory it was made from (in
//! [`Server::state_dir`]'s `setups/`): a process whose files all still
//! match skips reading and hashing the migrations and claims a clone in
//! one round trip.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
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

/// A setup's migrations directory (when it has one) and fixture files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SetupFiles {
    migrations: Option<PathBuf>,
    fixtures: Vec<PathBuf>,
}

/// The pool of one setup, once prepared.
#[derive(Debug)]
struct Prepared {
    pool: Pool,
    /// Made from a remembered key, without loading the migrations.
    remembered: bool,
}

/// One process-wide setup: its pool, or why it failed (every test of the
/// setup fails with the same message). Replaced once when a remembered
/// template turns out to be gone.
type Setup = Arc<Mutex<Option<Result<Arc<Prepared>, String>>>>;

/// The setups of this process.
type Setups = Mutex<HashMap<SetupFiles, Setup>>;

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

/// What a remembered setup's key is valid for: the key derivation of this
/// module and of templates.
fn key_version() -> String {
    format!(
        "pg-isolate test macro v1, template format {}",
        crate::TEMPLATE_FORMAT_VERSION
    )
}

/// A setup's template key with the metadata of every file and directory
/// it was made from, as remembered in the server's state directory: lines
/// of text (a JSON parse of some 900 stamps takes longer in a debug build
/// than checking them), the version, the key, then a stamp per line.
#[derive(Debug, PartialEq, Eq)]
struct Remembered {
    version: String,
    key: String,
    stamps: Vec<Stamp>,
}

impl Remembered {
    fn to_text(&self) -> Option<String> {
        let mut text = format!("{}\n{}\n", self.version, self.key);
        for stamp in &self.stamps {
            let path = stamp.path.to_str().filter(|p| !p.contains(['\n', '\r']))?;
            text.push_str(&format!(
                "{} {} {} {} {path}\n",
                stamp.len, stamp.ino, stamp.mtime_ns, stamp.ctime_ns
            ));
        }
        Some(text)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let version = lines.next()?.to_owned();
        let key = lines.next()?.to_owned();
        let stamps = lines
            .map(|line| {
                let mut fields = line.splitn(5, ' ');
                Some(Stamp {
                    len: fields.next()?.parse().ok()?,
                    ino: fields.next()?.parse().ok()?,
                    mtime_ns: fields.next()?.parse().ok()?,
                    ctime_ns: fields.next()?.parse().ok()?,
                    path: PathBuf::from(fields.next()?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            version,
            key,
            stamps,
        })
    }
}

/// The id of the nextest run this process is a test of.
fn nextest_run() -> Option<String> {
    std::env::var("NEXTEST_RUN_ID")
        .ok()
        .filter(|id| !id.is_empty())
}

/// What changes when a file or directory does: a directory's `mtime`
/// moves when an entry is added, removed or renamed in it, a file's
/// `ctime` on any write (or `touch`, or replacement).
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<(Self, bool)> {
        let meta = std::fs::metadata(path)?;
        let nanos = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        Ok((
            Self {
                path: path.to_owned(),
                len: meta.len(),
                ino: meta.ino(),
                mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
                ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            },
            meta.is_dir(),
        ))
    }

    /// Whether the file or directory is unchanged (a `stat`, no read).
    fn holds(&self) -> bool {
        Self::of(&self.path).is_ok_and(|(now, _)| now == *self)
    }
}

impl SetupFiles {
    /// Stamps of the migrations directory, everything under it, and the
    /// fixtures.
    fn stamps(&self) -> std::io::Result<Vec<Stamp>> {
        fn walk(path: &Path, out: &mut Vec<Stamp>) -> std::io::Result<()> {
            let (stamp, is_dir) = Stamp::of(path)?;
            out.push(stamp);
            if is_dir {
                let mut entries = std::fs::read_dir(path)?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<std::io::Result<Vec<_>>>()?;
                entries.sort();
                for entry in entries {
                    walk(&entry, out)?;
                }
            }
            Ok(())
        }
        let mut stamps = Vec::new();
        if let Some(dir) = &self.migrations {
            walk(dir, &mut stamps)?;
        }
        for fixture in &self.fixtures {
            stamps.push(Stamp::of(fixture)?.0);
        }
        Ok(stamps)
    }

    /// Where the key of this setup is remembered on `server`.
    fn memo(&self, server: &Server) -> Option<PathBuf> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for path in self.migrations.iter().chain(&self.fixtures) {
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
        }
        let digest = hasher.finalize();
        Some(
            server
                .state_dir()?
                .join("setups")
                .join(format!("{}.memo", crate::names::hex(&digest[..8]))),
        )
    }

    /// The remembered key, when every stamp still holds, or when this
    /// nextest run checked them already: its first test writes
    /// `<memo>.run` (the run id and the key), and the other tests of the
    /// run (each a process of its own) skip the check, as every test of a
    /// `cargo test` process does.
    fn remembered_key(&self, server: &Server) -> Option<String> {
        let path = self.memo(server)?;
        if let Some(run) = nextest_run()
            && let Ok(text) = std::fs::read_to_string(path.with_extension("run"))
            && let Some((checked, key)) = text.split_once(' ')
            && checked == run
        {
            return Some(key.to_owned());
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let memo = Remembered::parse(&text)?;
        if memo.version != key_version() || !memo.stamps.iter().all(Stamp::holds) {
            return None;
        }
        remember_run(&path, &memo.key);
        Some(memo.key)
    }

    fn remember(&self, server: &Server, key: &str, stamps: Vec<Stamp>) {
        let Some(path) = self.memo(server) else {
            return;
        };
        let memo = Remembered {
            version: key_version(),
            key: key.to_owned(),
            stamps,
        };
        write_memo(&path, &memo);
        remember_run(&path, key);
    }

    /// The setup's pool: from the remembered key when its files are
    /// unchanged (unless `fresh`), else by loading and hashing the
    /// migrations and fixtures and finding (or building) the template.
    fn prepare(&self, fresh: bool) -> Result<Prepared, SetupFailed> {
        let server = Server::shared()?;
        if !fresh && let Some(key) = self.remembered_key(&server) {
            return Ok(Prepared {
                pool: Pool::of_key(&server, &key, PoolOptions::default()),
                remembered: true,
            });
        }
        // Stamped before reading: a file changed while it is read no
        // longer matches its stamp next time.
        let stamps = self.stamps().ok();
        let loaded = match &self.migrations {
            Some(dir) => Some(Migrations::load(dir, Format::Auto)?),
            None => None,
        };
        let mut scripts = Vec::with_capacity(self.fixtures.len());
        for path in &self.fixtures {
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
        if let Some(stamps) = stamps {
            self.remember(&server, template.key(), stamps);
        }
        Ok(Prepared {
            pool: template.pool(PoolOptions::default())?,
            remembered: false,
        })
    }
}

/// Under nextest, writes `<memo>.run`: this run has checked the files and
/// uses template `key`.
fn remember_run(memo: &Path, key: &str) {
    let Some(run) = nextest_run() else {
        return;
    };
    let path = memo.with_extension("run");
    if let Err(error) = replace(&path, format!("{run} {key}").as_bytes()) {
        tracing::debug!(path = %path.display(), %error, "cannot remember the checked run");
    }
}

/// Replaces `path` atomically (a reader sees the old or the new), not
/// durably: a memo lost to a crash is only made again.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", crate::names::token()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes a setup's memo (atomically: a reader sees the old or the new).
fn write_memo(path: &Path, memo: &Remembered) {
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let text = memo
                .to_text()
                .ok_or_else(|| std::io::Error::other("a path with a line break"))?;
            replace(path, text.as_bytes())
        });
    if let Err(error) = result {
        tracing::debug!(path = %path.display(), %error, "cannot remember the test setup");
    }
}

/// The prepared pool of `files` in this process (made by the first test
/// of the setup; the others wait for it), or made again from the files
/// when `stale` is the one that failed.
fn prepared(files: &SetupFiles, stale: Option<&Arc<Prepared>>) -> Result<Arc<Prepared>, String> {
    let setup = Arc::clone(
        setups()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(files.clone())
            .or_default(),
    );
    let mut slot = setup.lock().unwrap_or_else(PoisonError::into_inner);
    let replace = match (&*slot, stale) {
        (None, _) => true,
        (Some(Ok(current)), Some(stale)) => Arc::ptr_eq(current, stale),
        _ => false,
    };
    if replace {
        *slot = Some(
            files
                .prepare(stale.is_some())
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        );
    }
    slot.clone()
        .unwrap_or_else(|| Err("the setup was not prepared".to_owned()))
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
        let files = SetupFiles {
            migrations: (!default_migrations || dir.is_dir()).then_some(dir),
            fixtures: fixtures
                .iter()
                .map(|name| fixture_path(manifest_dir, name))
                .collect(),
        };
        let prepared_now = prepared(&files, None)?;
        let db = match prepared_now.pool.test_database() {
            Ok(db) => db,
            // The remembered template is gone (gc, a dropped server): once
            // more from the files.
            Err(Error::DatabaseNotFound { .. }) if prepared_now.remembered => {
                prepared(&files, Some(&prepared_now))?
                    .pool
                    .test_database()
                    .map_err(|e| e.to_string())?
            }
            Err(error) => return Err(error.to_string()),
        };
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
        if let Some(mut db) = self.db.take()
            && db.server().inner.options.keep_failed
        {
            db.keep_failed();
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

impl Drop for Guard {
    /// The test is over: its database is released for the pool's refill
    /// to drop (see `TestDatabase::release`), unless the test is panicking
    /// (then the database's own drop keeps it, with
    /// `PG_ISOLATE_KEEP_FAILED`, or drops it).
    fn drop(&mut self) {
        if let Some(db) = self.db.take()
            && !std::thread::panicking()
        {
            db.release();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_reads_back_as_written() {
        let memo = Remembered {
            version: key_version(),
            key: "00ff00ff00ff00ff".to_owned(),
            stamps: vec![
                Stamp {
                    path: PathBuf::from("/a dir/with spaces/up.sql"),
                    len: 12,
                    ino: 99,
                    mtime_ns: 1_700_000_000_123_456_789,
                    ctime_ns: -5,
                },
                Stamp {
                    path: PathBuf::from("/m"),
                    len: 0,
                    ino: 1,
                    mtime_ns: 0,
                    ctime_ns: 0,
                },
            ],
        };
        let text = memo.to_text().expect("plain paths");
        assert_eq!(Remembered::parse(&text), Some(memo));
        assert_eq!(Remembered::parse("v\nkey\n1 2 x 4 /p\n"), None);
        let broken = Remembered {
            version: String::new(),
            key: String::new(),
            stamps: vec![Stamp {
                path: PathBuf::from("a\nb"),
                len: 0,
                ino: 0,
                mtime_ns: 0,
                ctime_ns: 0,
            }],
        };
        assert_eq!(broken.to_text(), None, "a line break is not remembered");
    }
}
