//! [`Server`]: a handle to the PostgreSQL server, embedded or given by URL.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::embedded::{self, EmbeddedOptions, Recovery};
use crate::gc::TemplateBudget;
use crate::url::{ServerUrl, redact};
use crate::{Error, names, rt};

/// The variable holding an admin URL of the server to use instead of the
/// embedded one.
pub const URL_ENV: &str = "PG_ISOLATE_URL";

/// How `CREATE DATABASE ... TEMPLATE` copies a template (PostgreSQL 15+;
/// older servers have only the file copy and ignore this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CloneStrategy {
    /// `STRATEGY WAL_LOG`: copies block by block through the WAL
    /// (PostgreSQL's own default since 15).
    WalLog,
    /// `STRATEGY FILE_COPY`: copies the files, with a checkpoint before and
    /// after. Measured faster on the test-tuned server (fsync off) for
    /// application-sized templates, so it is the default here.
    #[default]
    FileCopy,
}

impl CloneStrategy {
    fn sql(self) -> &'static str {
        match self {
            Self::WalLog => "WAL_LOG",
            Self::FileCopy => "FILE_COPY",
        }
    }
}

/// How to find or start the server and how to name databases on it.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// An admin connection URL (`postgres://user:password@host:port/db`).
    /// Precedence: this field, then the `PG_ISOLATE_URL` variable, then the
    /// embedded server.
    pub url: Option<String>,
    /// The prefix of every database pg-isolate creates (default `testdb_`).
    pub prefix: String,
    /// How templates are cloned.
    pub clone_strategy: CloneStrategy,
    /// Keep the database of a test that fails (panics, or returns `Err`
    /// under `#[pg_isolate::test]`) and print its name, instead of dropping
    /// it; gc leaves it for [`crate::GcOptions::kept_failed_max_age`] (a
    /// day). Default: whether `PG_ISOLATE_KEEP_FAILED` is set to something
    /// other than `0` or empty.
    pub keep_failed: bool,
    /// The embedded server's settings (used when no URL is given).
    pub embedded: EmbeddedOptions,
    /// How many templates [`Server::gc`] keeps (least recently used out).
    pub template_budget: TemplateBudget,
    /// [`Server::connect`] runs [`Server::gc`] (default options) by itself
    /// at most once per this interval per server and prefix on the host
    /// (default once a minute; a stamp file says when it last ran).
    /// `None`: never by itself.
    pub auto_gc: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "testdb_".to_owned(),
            clone_strategy: CloneStrategy::default(),
            keep_failed: std::env::var("PG_ISOLATE_KEEP_FAILED")
                .is_ok_and(|v| !v.is_empty() && v != "0"),
            embedded: EmbeddedOptions::default(),
            template_budget: TemplateBudget::default(),
            auto_gc: Some(Duration::from_secs(60)),
        }
    }
}

/// A handle to a running PostgreSQL server; cheap to clone and share
/// between threads.
///
/// It keeps a few idle admin connections for its own statements; while any
/// handle lives, the embedded server counts as in use and does not stop.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    url: RwLock<ServerUrl>,
    /// The embedded server over its unix socket, when it can be reached so.
    socket: RwLock<Option<ServerUrl>>,
    admin_database: String,
    major: u32,
    pub(crate) options: ServerOptions,
    idle: Mutex<Vec<Client>>,
    embedded: Option<Embedded>,
    /// The connection holding this handle's template hold locks.
    holds: Mutex<Holds>,
}

#[derive(Default)]
struct Holds {
    client: Option<Client>,
    locks: std::collections::HashSet<i64>,
}

struct Embedded {
    dir: PathBuf,
    /// The `psql` of the server's binaries.
    psql: PathBuf,
    pid: RwLock<u32>,
    /// The last crash recovery one of this handle's attaches performed.
    recovery: Mutex<Option<Recovery>>,
}

/// Idle admin connections kept per server handle.
const IDLE_ADMIN: usize = 8;

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.redacted_url())
            .field("major", &self.inner.major)
            .field("embedded", &self.inner.embedded.is_some())
            .finish_non_exhaustive()
    }
}

fn connect_url(url: &str) -> Result<Client, Error> {
    rt::off_runtime(|| {
        Client::connect(url, NoTls).map_err(|source| Error::Connect {
            url: redact(url),
            source,
        })
    })
}

impl Server {
    /// Connects to the server: the URL in `options`, else the one in
    /// `PG_ISOLATE_URL`, else the host's embedded server (attached when
    /// running, started when not).
    pub fn connect(options: ServerOptions) -> Result<Self, Error> {
        Self::open(options, false)
    }

    /// [`Server::connect`]; with `lazy`, the embedded server's first admin
    /// connection is opened on a thread of its own (holding the start lock
    /// until it is, so the idle watchdog cannot stop the server meanwhile)
    /// and the caller goes on at once: what needs no connection (a pool
    /// claim of the embedded server, a URL) costs none, and the connection
    /// is ready for what comes later (dropping the test's database).
    fn open(options: ServerOptions, lazy: bool) -> Result<Self, Error> {
        if rt::in_runtime() {
            return rt::off_runtime(|| Self::open(options, lazy));
        }
        names::validate_prefix(&options.prefix)?;
        let given = options
            .url
            .clone()
            .or_else(|| std::env::var(URL_ENV).ok().filter(|u| !u.trim().is_empty()));
        let (url, admin_database, client, embedded, major, socket) = if let Some(given) = given {
            let url = ServerUrl::parse(&given)?;
            let admin_database = url.path_database().unwrap_or_else(|| "postgres".to_owned());
            let mut client = connect_url(&url.database(&admin_database))?;
            let major = server_major(&mut client, &admin_database)?;
            (url, admin_database, client, None, major, None)
        } else {
            let attached = embedded::attach(&options.embedded)?;
            let url = ServerUrl::parse(&attached.url)?;
            let admin_database = "postgres".to_owned();
            let embedded = Embedded {
                dir: attached.dir.clone(),
                psql: attached.psql.clone(),
                pid: RwLock::new(attached.pid),
                recovery: Mutex::new(attached.recovery.clone()),
            };
            let major = attached.major;
            if lazy && let Some(socket) = attached.socket_url.as_deref() {
                let socket = ServerUrl::parse(socket)?;
                let server = Self::new(
                    url,
                    Some(socket),
                    admin_database,
                    major,
                    options,
                    None,
                    Some(embedded),
                );
                server.connect_behind(attached);
                return Ok(server);
            }
            // Connect while the start lock is still held (see `Attached`):
            // over the socket when it answers, else over TCP.
            let (client, socket) = match socket_client(&attached, &admin_database) {
                Some((client, socket)) => (client, Some(socket)),
                None => (connect_url(&url.database(&admin_database))?, None),
            };
            drop(attached);
            (url, admin_database, client, Some(embedded), major, socket)
        };
        let server = Self::new(
            url,
            socket,
            admin_database,
            major,
            options,
            Some(client),
            embedded,
        );
        server.auto_gc();
        Ok(server)
    }

    fn new(
        url: ServerUrl,
        socket: Option<ServerUrl>,
        admin_database: String,
        major: u32,
        options: ServerOptions,
        client: Option<Client>,
        embedded: Option<Embedded>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                url: RwLock::new(url),
                socket: RwLock::new(socket),
                admin_database,
                major,
                options,
                idle: Mutex::new(client.into_iter().collect()),
                embedded,
                holds: Mutex::new(Holds::default()),
            }),
        }
    }

    /// The lazy attach's first connection and automatic gc, on a thread
    /// that holds the start lock (`attached`) until it has connected.
    fn connect_behind(&self, attached: embedded::Attached) {
        let server = self.clone();
        let spawned = std::thread::Builder::new()
            .name("pg-isolate-connect".to_owned())
            .spawn(move || {
                match connect_url(&server.fast_url(&server.inner.admin_database)) {
                    Ok(client) => server
                        .inner
                        .idle
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(client),
                    Err(error) => {
                        tracing::debug!(%error, "the embedded server's first connection failed")
                    }
                }
                drop(attached);
                server.auto_gc();
            });
        if let Err(error) = spawned {
            tracing::debug!(%error, "cannot connect in the background; connecting on first use");
        }
    }

    /// The process-wide handle for [`ServerOptions::default()`], made on
    /// first use and shared by every later caller (for example every test
    /// of a `cargo test` binary), so a process attaches only once. The
    /// embedded server is attached (started when not running) before this
    /// returns, but its first connection is opened in the background.
    pub fn shared() -> Result<Self, Error> {
        static SHARED: Mutex<Option<Server>> = Mutex::new(None);
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(server) = shared.as_ref() {
            return Ok(server.clone());
        }
        let server = Self::open(ServerOptions::default(), true)?;
        *shared = Some(server.clone());
        Ok(server)
    }

    /// Stops the host's embedded server for `options` (fast shutdown:
    /// connected clients are disconnected) and waits until it is gone.
    /// Returns whether one was running.
    pub fn stop_embedded(options: &EmbeddedOptions) -> Result<bool, Error> {
        embedded::stop(options)
    }

    /// The cluster directory the embedded server for `options` uses.
    pub fn embedded_dir(options: &EmbeddedOptions) -> Result<PathBuf, Error> {
        embedded::dir(options)
    }

    /// The server's major version (e.g. 15).
    pub fn major_version(&self) -> u32 {
        self.inner.major
    }

    /// The pid of the embedded server this handle attached to, `None` for a
    /// server given by URL.
    pub fn embedded_pid(&self) -> Option<u32> {
        let embedded = self.inner.embedded.as_ref()?;
        Some(
            *embedded
                .pid
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Whether this handle found the embedded server crashed (killed with
    /// SIGKILL, say) and cleaned up its stale `postmaster.pid` and socket
    /// files before starting it again: on [`Server::connect`], or when it
    /// re-attached after losing its connections. `None` when every server
    /// it attached to was running or had shut down cleanly, and for a
    /// server given by URL. The same news is a `WARN` tracing event.
    ///
    /// Only the process that restarts the server sees this; others that
    /// merely attach to the restarted server do not.
    pub fn recovery(&self) -> Option<Recovery> {
        self.inner
            .embedded
            .as_ref()?
            .recovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The connection URL of `database` on this server, usable by any
    /// client (sqlx, diesel, tokio-postgres, psql). It contains the
    /// password; do not log it.
    pub fn url(&self, database: &str) -> String {
        self.read_url().database(database)
    }

    /// The URL of `database` that pg-isolate's own connections and test
    /// databases use: over the embedded server's unix socket when it has
    /// one (no TCP, no password exchange), else [`Server::url`].
    pub(crate) fn fast_url(&self, database: &str) -> String {
        let socket = self
            .inner
            .socket
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|socket| socket.database(database));
        socket.unwrap_or_else(|| self.url(database))
    }

    /// The server's URL with the password hidden, for messages.
    pub fn redacted_url(&self) -> String {
        redact(&self.url(&self.inner.admin_database))
    }

    /// A new connection to the admin database (`postgres`, or the one named
    /// in the given URL).
    pub fn admin_client(&self) -> Result<Client, Error> {
        self.client(&self.inner.admin_database.clone())
    }

    /// A new connection to `database`.
    pub fn client(&self, database: &str) -> Result<Client, Error> {
        match connect_url(&self.fast_url(database)) {
            Ok(client) => Ok(client),
            Err(error) => {
                // The server answered (wrong database, ...): not a restart.
                let answered = matches!(&error, Error::Connect { source, .. } if source.as_db_error().is_some());
                if !answered && self.reattach()? {
                    connect_url(&self.fast_url(database))
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The file whose modification time says when leak cleanup last ran
    /// for this server and prefix, in [`Server::state_dir`].
    pub(crate) fn gc_stamp(&self) -> Option<PathBuf> {
        Some(
            self.state_dir()?
                .join(format!("gc-{}.stamp", self.prefix())),
        )
    }

    /// A directory of this user's own for what pg-isolate remembers about
    /// this server on this host (the gc stamp, the setups of
    /// `#[pg_isolate::test]`, the demand on warm pools): the embedded
    /// cluster's directory, or (for a server given by URL) a directory
    /// named after the server in `PG_ISOLATE_CACHE_DIR`, else
    /// `$XDG_RUNTIME_DIR/pg-isolate`, else `$XDG_CACHE_HOME/pg-isolate`
    /// (never a shared temp directory, where another user could plant
    /// files). `None` when there is no such directory.
    pub(crate) fn state_dir(&self) -> Option<PathBuf> {
        match &self.inner.embedded {
            Some(embedded) => Some(embedded.dir.clone()),
            None => {
                use sha2::{Digest, Sha256};
                use std::os::unix::fs::DirBuilderExt;
                let url = self.read_url().database("");
                let digest = Sha256::digest(url.as_bytes());
                let base = match std::env::var_os("PG_ISOLATE_CACHE_DIR") {
                    Some(dir) => PathBuf::from(dir),
                    None => std::env::var_os("XDG_RUNTIME_DIR")
                        .or_else(|| std::env::var_os("XDG_CACHE_HOME"))
                        .map(PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache"))
                        })?
                        .join("pg-isolate"),
                };
                let dir = base.join(format!("server-{}", names::hex(&digest[..6])));
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .ok()?;
                Some(dir)
            }
        }
    }

    /// `data/base` of the embedded cluster (where each database's files
    /// live, in a directory named by its oid); `None` for a server given
    /// by URL.
    pub(crate) fn embedded_base_dir(&self) -> Option<PathBuf> {
        Some(self.inner.embedded.as_ref()?.dir.join("data").join("base"))
    }

    /// A `psql` ready to run a script (on its standard input) against the
    /// admin database of the embedded server, over its unix socket (no
    /// password on any command line); `None` for a server given by URL.
    pub(crate) fn psql(&self) -> Option<std::process::Command> {
        let embedded = self.inner.embedded.as_ref()?;
        let port = embedded::remembered_port(&embedded.dir)?;
        let mut command = std::process::Command::new(&embedded.psql);
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(embedded.dir.join("run"))
            .arg("-p")
            .arg(port.to_string())
            .args(["-U", "postgres", "-d"])
            .arg(&self.inner.admin_database)
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGOPTIONS")
            .env_remove(registry::RUN_TOKEN_ENV);
        Some(command)
    }

    /// The configured prefix of generated database names.
    pub fn prefix(&self) -> &str {
        &self.inner.options.prefix
    }

    fn read_url(&self) -> ServerUrl {
        self.inner
            .url
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a failed connection to the embedded server: if it was
    /// restarted (it crashed, or stopped when idle), attach to the new one.
    /// Returns whether the URL changed.
    fn reattach(&self) -> Result<bool, Error> {
        let Some(embedded) = &self.inner.embedded else {
            return Ok(false);
        };
        let attached = embedded::attach(&self.inner.options.embedded)?;
        let url = ServerUrl::parse(&attached.url)?;
        let socket = socket_client(&attached, &self.inner.admin_database).map(|(_, s)| s);
        *self
            .inner
            .socket
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = socket;
        *embedded
            .pid
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = attached.pid;
        if let Some(recovery) = &attached.recovery {
            *embedded
                .recovery
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(recovery.clone());
        }
        let changed = {
            let mut current = self
                .inner
                .url
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = current.database("") != url.database("");
            *current = url;
            changed
        };
        tracing::info!(dir = %embedded.dir.display(), changed, "re-attached to the embedded server");
        Ok(true)
    }

    /// Takes the shared advisory lock `lock` for as long as this handle
    /// lives (on a connection of its own; closing it, or the process dying,
    /// releases it). Re-taken on a new connection when the old one was lost.
    pub(crate) fn hold(&self, lock: i64) -> Result<(), Error> {
        if rt::in_runtime() {
            return rt::off_runtime(|| self.hold(lock));
        }
        let mut holds = self
            .inner
            .holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let healthy = holds.client.as_ref().is_some_and(|c| !c.is_closed());
        if healthy && holds.locks.contains(&lock) {
            return Ok(());
        }
        holds.locks.insert(lock);
        let take = |client: &mut Client, locks: Vec<i64>| {
            client
                .execute(
                    "SELECT pg_advisory_lock_shared(k) FROM unnest($1::bigint[]) AS k",
                    &[&locks],
                )
                .map_err(|e| Error::sql("holding template", &self.inner.admin_database, e))
        };
        if healthy
            && let Some(client) = holds.client.as_mut()
            && take(client, vec![lock]).is_ok()
        {
            return Ok(());
        }
        let mut client = self.admin_client()?;
        take(&mut client, holds.locks.iter().copied().collect())?;
        holds.client = Some(client);
        Ok(())
    }

    /// Runs `f` on a pooled admin connection.
    pub(crate) fn with_admin<T: Send>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, Error> + Send,
    ) -> Result<T, Error> {
        if rt::in_runtime() {
            return rt::off_runtime(|| self.with_admin(f));
        }
        let pooled = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let (mut client, from_pool) = match pooled {
            Some(client) if !client.is_closed() => (client, true),
            _ => (self.admin_client()?, false),
        };
        let mut result = f(&mut client);
        if from_pool && result.as_ref().is_err_and(connection_lost) {
            // An idle pooled connection to a server that has since been
            // restarted (crash, explicit stop): once more on a fresh one,
            // and the other idle ones are stale too. An embedded server
            // usually comes back on the same port, so a new connection
            // could simply succeed: re-attach first to learn the new
            // server's pid (and port, should it have moved).
            self.inner
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
            self.reattach()?;
            client = self.admin_client()?;
            result = f(&mut client);
        }
        if !client.is_closed() {
            let mut idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < IDLE_ADMIN {
                idle.push(client);
            }
        }
        result
    }

    /// The `TEMPLATE ... STRATEGY ...` clause for cloning `template`.
    pub(crate) fn template_clause(
        &self,
        template: &str,
        strategy: Option<CloneStrategy>,
    ) -> String {
        let mut clause = format!(" TEMPLATE {}", names::ident(template));
        if self.inner.major >= 15 {
            let strategy = strategy.unwrap_or(self.inner.options.clone_strategy);
            clause.push_str(" STRATEGY ");
            clause.push_str(strategy.sql());
        }
        clause
    }
}

impl Drop for Inner {
    /// The idle connections each own a runtime of the `postgres` crate,
    /// which must not be dropped inside the caller's runtime.
    fn drop(&mut self) {
        if !rt::in_runtime() {
            return;
        }
        let idle = std::mem::take(
            self.idle
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let holds = self
            .holds
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .client
            .take();
        rt::off_runtime(move || drop((idle, holds)));
    }
}

/// Whether `error` is a lost connection (not an answer from the server).
fn connection_lost(error: &Error) -> bool {
    match error {
        Error::Sql { source, .. } | Error::Connect { source, .. } => {
            source.is_closed()
                || source.as_db_error().is_some_and(|db| {
                    db.severity() == "FATAL" || db.code().code().starts_with("57P")
                })
        }
        _ => false,
    }
}

/// A connection over the embedded server's unix socket and the socket's
/// URL, when it has one and it answers.
fn socket_client(attached: &embedded::Attached, database: &str) -> Option<(Client, ServerUrl)> {
    let socket = ServerUrl::parse(attached.socket_url.as_deref()?).ok()?;
    match connect_url(&socket.database(database)) {
        Ok(client) => Some((client, socket)),
        Err(error) => {
            tracing::debug!(%error, "the embedded server's socket does not answer; using TCP");
            None
        }
    }
}

fn server_major(client: &mut Client, database: &str) -> Result<u32, Error> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .map_err(|e| Error::sql("reading the server version", database, e))?;
    let num: i32 = row.get(0);
    Ok(u32::try_from(num / 10_000).unwrap_or(0))
}
