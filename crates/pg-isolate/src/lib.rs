//! A fresh PostgreSQL database per worktree and per test, from an embedded
//! or a given server.
//!
//! - [`Server::connect`] finds the server: the URL in
//!   [`ServerOptions::url`], else the `PG_ISOLATE_URL` variable, else the
//!   host's embedded server, which is started on first use and shared by
//!   every process on the host.
//! - [`Server::create_database`], [`Server::reset_database`],
//!   [`Server::drop_database`], [`Server::list_databases`]: named databases
//!   (one per worktree), each carrying an owner record
//!   (`COMMENT ON DATABASE` with JSON: tool, kind, host, pid and start time,
//!   created, label). pg-isolate never drops a database without one.
//! - Owned from birth: a database is created under a *birth name*
//!   (`<prefix>.new.<host and boot hash>.<pid>.<start time>.<random>`, which
//!   names the creating process), then its owner record is written and it
//!   is renamed to its final name in one transaction. Whatever is killed
//!   when (the client, the test binary, the server), every database
//!   pg-isolate made is recognisable as its own; [`Server::gc`] drops a
//!   birth-named one once its creator is gone
//!   ([`DatabaseInfo::interrupted_create`]).
//! - [`Server::template`]: a template built once per distinct setup by
//!   exactly one process; [`Template::test_database`] clones it into a
//!   [`TestDatabase`] that is dropped with its handle.
//!   [`Server::template_with`] builds one by any other means (a migration
//!   tool's own command, given the new database's URL).
//! - [`TestDatabase::hand_over`]: a test database leased to another
//!   process (one a command-line tool serves), reclaimed by [`Server::gc`]
//!   once that process is gone.
//! - [`Template::pool`]: a warm pool of pre-created clones on the server,
//!   shared by every process, sized by demand and refilled by a process of
//!   its own, so a test gets its database in a few milliseconds.
//! - [`Server::gc`]: drops leaked test databases of dead processes,
//!   half-created databases, expired test databases, orphaned pool clones,
//!   idle templates and templates beyond the [`TemplateBudget`] (the 8 most
//!   recently used and 4 GiB by default; never one being built, held by a
//!   live handle or with live test databases) under the server's prefix
//!   (never named databases), and reports what it kept and why.
//!   [`Server::connect`] runs it by itself, at most once a minute per server
//!   and prefix on the host ([`ServerOptions::auto_gc`]).
//!
//! # The embedded server
//!
//! Binaries: [`EmbeddedOptions::bindir`], else `PG_ISOLATE_BINDIR`, else
//! `pg_config --bindir`, else the `postgres` found on `PATH`, else the
//! newest `/usr/lib/postgresql/<major>/bin`. One cluster per major version
//! lives in the cache directory: [`EmbeddedOptions::cache_dir`], else
//! `PG_ISOLATE_CACHE_DIR`, else `$XDG_CACHE_HOME/isolane/pg/<major>/`
//! (`~/.cache/isolane/pg/<major>/`). `initdb` runs once per major version
//! into `pristine/`, which is copied to `data/` whenever there is no
//! cluster, so a cold start is only a server start.
//!
//! **Running as root** (CI, containers): PostgreSQL refuses to run as root,
//! so the server runs as the `postgres` system user
//! ([`EmbeddedOptions::server_account`]; an error says what to do when it
//! does not exist). Root's home is usually mode 700, out of that account's
//! reach, so root's default cluster lives in `/var/tmp/isolane-pg-0/<major>/`
//! (owned by the server account; `/var/tmp` survives reboots).
//!
//! The server is tuned for tests (fsync, synchronous_commit and
//! full_page_writes off: a crash of the server or the machine may lose the
//! last moments of commits, which tests do not need; databases and their
//! owner records are committed synchronously all the same, so a crash never
//! leaves a database without its record), listens on 127.0.0.1
//! and on a unix socket in the cluster's `run/`, and accepts password
//! (SCRAM) connections as `postgres` over TCP; the random password is kept
//! in the cluster's `password` file (mode 600). On the socket, whose
//! directory only the server account can enter, no password is asked:
//! pg-isolate's own connections and [`TestDatabase::url`] use it, so a test
//! connection costs no SCRAM rounds (tens of milliseconds each in an
//! unoptimised test binary); [`Server::url`] stays TCP. The first start picks a free port
//! (in 17000-19999: outside the kernel's ephemeral range, so no outgoing
//! connection takes it while the server is stopped, and below the range
//! port-alloc leases from by default), holds it as a port-alloc lease of the
//! cluster (so no other cluster or lease on the host is given it) and
//! remembers it in the cluster's `port` file; every later start (after
//! an idle stop, a crash or a reboot) uses that port again, so a URL written
//! down once (an `.env` file) keeps working; only when another program has
//! taken the port meanwhile does it move to a new free one (with a warning
//! event). It runs detached (its own process group,
//! reparented away from the starting process) and stops itself after
//! [`EmbeddedOptions::idle_timeout`] (default five minutes) without any
//! client connection, but never while a named database
//! ([`Server::create_database`], a worktree's) exists, since its URL may be
//! used at any moment by a program that knows nothing of pg-isolate: a small `sh` watchdog started beside it counts client
//! connections with `psql` and shuts the server down under the start lock.
//! [`Server::stop_embedded`] stops it explicitly. Starting is serialised by
//! a file lock in the cluster directory; a server that was killed is
//! detected through its `postmaster.pid` and `/proc`, its stale pid and
//! socket files are removed and it is started again, and the process that
//! did so is told ([`Server::recovery`] and a `WARN` tracing event). A
//! process is taken for the cluster's server only when it runs the
//! cluster's `postgres` binary with the cluster's data directory as its
//! working directory, so a stale `postmaster.pid` whose pid now belongs to
//! another cluster's server is never signalled.
//!
//! # Tests: `#[pg_isolate::test]`
//!
//! ```no_run
//! // With the `sqlx` feature: `async fn signup(pool: sqlx::PgPool)`.
//! #[pg_isolate::test(migrations = "migrations", fixtures("fixtures/users.sql"))]
//! fn signup(mut client: postgres::Client) -> Result<(), postgres::Error> {
//!     client.batch_execute("SELECT 1")
//! }
//! ```
//!
//! On a `fn` or `async fn` test (an async one runs on a current-thread
//! tokio runtime of its own). Each argument is made from the test's private
//! database: [`TestDatabase`], `String` (its URL), and
//! `postgres::Client` (sync), `tokio_postgres::Client` (async, feature
//! `tokio`), `sqlx::PgPool` / `sqlx::PgConnection` (async, feature `sqlx`),
//! `diesel::PgConnection` (sync, feature `diesel`).
//! `migrations = "dir"` (relative to the crate root; default `migrations`,
//! and an empty database when that directory does not exist) is read with
//! [`Format::Auto`]; `fixtures(...)` (relative to the crate root, else to
//! its `fixtures/`) run after the migrations. Migrations and fixtures are
//! loaded and hashed into a template ([`Server::template`], on
//! [`Server::shared`]) with a warm [`Pool`] of its clones once; the
//! template's key is remembered with the metadata of the files it came
//! from, so the next process (nextest runs each test in its own) only
//! checks those (once per nextest run) and claims a clone without a round
//! trip to the server. A test that fails (panics or returns `Err`) keeps its database
//! when `PG_ISOLATE_KEEP_FAILED` is set; otherwise the database is released
//! when the test ends: dropped by the pool's refill (or gc) soon after,
//! sparing the test the wait of a `DROP DATABASE`.
//!
//! # Async code
//!
//! Every function and destructor of the sync API is safe to call from async
//! code, under either tokio runtime flavour: the `postgres` crate drives its
//! connections with a runtime of its own, which panics inside another one,
//! so pg-isolate leaves the caller's runtime before it talks to the server
//! (`block_in_place` in a multi-thread runtime, a helper thread in a
//! current-thread one) and drops its connections the same way. Dropping a
//! [`TestDatabase`] in an async test, even one that panics, drops the
//! database and never aborts the test binary. What pg-isolate cannot guard
//! is a `postgres::Client` handed to the caller ([`TestDatabase::client`]):
//! by the `postgres` crate's rule it must not be used or dropped on a
//! runtime thread; in async code connect with `tokio_postgres` or sqlx to
//! [`TestDatabase::url`] instead.
//!
//! The `tokio` feature adds an async API that never blocks a worker
//! (`Server::shared_async`, `Template::test_database_async`,
//! `Migrations::template_async`, `TestDatabase::client_async` for a
//! `tokio_postgres::Client`, `TestDatabase::drop_async`).
//!
//! # Environment
//!
//! | variable | effect |
//! | --- | --- |
//! | `PG_ISOLATE_URL` | admin URL of the server to use (below [`ServerOptions::url`], above the embedded server) |
//! | `PG_ISOLATE_BINDIR` | directory of `postgres` and `initdb` for the embedded server |
//! | `PG_ISOLATE_CACHE_DIR` | directory holding the embedded clusters |
//! | `PG_ISOLATE_KEEP_FAILED` | keep (and print) the databases of failed tests; gc leaves them for a day |
//!
//! # Example
//!
//! ```
//! use pg_isolate::Server;
//!
//! // `Server::connect(ServerOptions { .. })` for other settings.
//! let server = Server::shared()?;
//! let template = server.template(b"schema v1", |client| {
//!     client.batch_execute("CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL)")?;
//!     Ok(())
//! })?;
//! let db = template.test_database()?;
//! let mut client = db.client()?;
//! client.execute("INSERT INTO users (name) VALUES ($1)", &[&"ada"])?;
//! let count: i64 = client.query_one("SELECT count(*) FROM users", &[])?.get(0);
//! assert_eq!(count, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

// -- migrations (owned by the migrations module) --
mod migrate;
pub use migrate::{
    Change, CheckedDifference, Difference, Direction, Format, MigrateError, MigrateReport,
    Migration, MigrationFailure, Migrations, Phase, Progress, RollbackEntry, RollbackOptions,
    RollbackReport, RollbackStatus, RollbackStep, RollbackSummary, SchemaDiff, SchemaSnapshot,
    StepError, Target, verify_rollbacks,
};
// -- end migrations --

#[cfg(feature = "tokio")]
mod asynch;
mod birth;
mod databases;
mod embedded;
mod error;
mod gc;
mod lease;
#[doc(hidden)]
pub mod __macro {
    //! Used by `#[pg_isolate::test]`; not a public API.
    pub use crate::macro_support::*;
}
mod macro_support;
mod markers;
mod names;
mod owner;
mod pool;
mod rt;
mod server;
mod template;
mod testdb;
mod url;

pub use databases::{CreateOptions, DatabaseInfo};
pub use embedded::{EmbeddedOptions, Recovery};
pub use error::{Error, SetupError};
pub use gc::{GcEntry, GcOptions, GcReason, GcReport, TemplateBudget};
pub use owner::{DatabaseKind, OwnerRecord};
pub use pool::{Pool, PoolOptions};
pub use server::{CloneStrategy, Server, ServerOptions, URL_ENV};
pub use template::{TEMPLATE_FORMAT_VERSION, Template, TemplateOptions};
pub use testdb::TestDatabase;
pub use url::redact as redact_url;

/// A test with a private, migrated database; see the crate docs' section
/// "Tests".
pub use pg_isolate_macros::test;
