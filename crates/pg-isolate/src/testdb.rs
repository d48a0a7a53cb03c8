//! [`TestDatabase`]: a private database for one test, dropped with its handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use postgres::Client;

use crate::owner::{DatabaseKind, OwnerRecord};
use crate::{Error, Server, names};

/// A database private to one test. Dropping the handle drops the database
/// (terminating its connections), unless the test is panicking and
/// [`crate::ServerOptions::keep_failed`] is set: then the database is kept
/// and its name printed for inspection (gc leaves it for
/// [`crate::GcOptions::kept_failed_max_age`]).
#[derive(Debug)]
pub struct TestDatabase {
    server: Server,
    name: String,
    keep: bool,
    /// A second handle to a database another handle owns (what
    /// `#[pg_isolate::test]` gives a test): its drop drops nothing.
    view: bool,
    /// Set by [`TestDatabase::keep`] on any handle of the database.
    kept: Arc<AtomicBool>,
    /// The taken marker of a pool clone claimed without the server (see
    /// the `markers` module), removed once the database is dropped.
    pub(crate) marker: Option<std::path::PathBuf>,
    /// The pool's bookkeeping after the claim (see `Pool::test_database`),
    /// joined when the database is done with.
    pub(crate) after_claim: Option<std::thread::JoinHandle<()>>,
}

/// Attempts at a fresh random name before giving up.
const NAME_ATTEMPTS: usize = 5;

impl Server {
    /// A new private, empty database (cloned from `template1`), dropped
    /// when the handle is dropped. For a migrated one, see
    /// [`crate::Template::test_database`].
    pub fn test_database(&self) -> Result<TestDatabase, Error> {
        TestDatabase::create(self, None, None)
    }
}

impl TestDatabase {
    /// A new test database, cloned from `template` when given; the
    /// template's `key` goes into the owner record, so gc knows the
    /// template has live clones.
    pub(crate) fn create(
        server: &Server,
        template: Option<&str>,
        key: Option<&str>,
    ) -> Result<Self, Error> {
        let mut record = OwnerRecord::new(DatabaseKind::Test, None);
        record.template_key = key.map(str::to_owned);
        let mut last = None;
        for _ in 0..NAME_ATTEMPTS {
            let name = Self::fresh_name(server);
            match server.create_with_record(&name, template, None, &record) {
                Ok(()) => return Ok(Self::adopt(server, name)),
                Err(error @ Error::DatabaseExists { .. }) => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.expect("at least one attempt was made"))
    }

    pub(crate) fn fresh_name(server: &Server) -> String {
        names::fit(&format!("{}t_{}", server.prefix(), names::token()))
    }

    pub(crate) fn adopt(server: &Server, name: String) -> Self {
        Self {
            server: server.clone(),
            name,
            keep: false,
            view: false,
            kept: Arc::default(),
            marker: None,
            after_claim: None,
        }
    }

    /// A handle to the same database that does not drop it: the owner
    /// (this handle) does, unless either was kept.
    pub(crate) fn view(&self) -> Self {
        Self {
            server: self.server.clone(),
            name: self.name.clone(),
            keep: false,
            view: true,
            kept: Arc::clone(&self.kept),
            marker: None,
            after_claim: None,
        }
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection URL, for any client (sqlx, diesel, tokio-postgres,
    /// psql): over the embedded server's unix socket when it has one, so
    /// a connection costs no TCP and no password exchange (whose SCRAM
    /// rounds take tens of milliseconds in an unoptimised test binary);
    /// else the server's URL. It contains the password; do not log it.
    pub fn url(&self) -> String {
        self.server.fast_url(&self.name)
    }

    /// A new connection to the database.
    pub fn client(&self) -> Result<Client, Error> {
        self.server.client(&self.name)
    }

    /// The server the database lives on.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Drops the database now (the handle's drop then does nothing).
    #[cfg(feature = "tokio")]
    pub(crate) fn drop_now(mut self) -> Result<(), Error> {
        self.keep = true;
        self.server.drop_owned(&self.name, false)?;
        self.forget_marker();
        Ok(())
    }

    /// The end of a test's use of its database: a pool clone claimed
    /// through its marker is released for the pool's refill (or gc) to
    /// drop, sparing the test the `DROP DATABASE` (and the checkpoint it
    /// waits for); any other database is dropped now.
    pub(crate) fn release(mut self) {
        let Some(marker) = self.marker.take() else {
            return;
        };
        match crate::markers::Markers::release(&marker) {
            // Released: the handle's drop leaves the database alone.
            Ok(()) => self.keep = true,
            Err(error) => {
                tracing::debug!(database = %self.name, %error, "cannot release; dropping");
                self.marker = Some(marker);
            }
        }
    }

    /// Removes the taken marker of a claimed pool clone (dropped, or now
    /// owned by its record).
    pub(crate) fn forget_marker(&mut self) {
        if let Some(marker) = self.marker.take() {
            let _ = std::fs::remove_file(marker);
        }
    }

    /// Keeps the database after the handle is dropped (it stays ours: `gc`
    /// removes it once this process has exited). Returns its name.
    pub fn keep(mut self) -> String {
        self.mark_kept();
        self.name.clone()
    }

    /// Marks the database kept on every handle of it.
    pub(crate) fn mark_kept(&mut self) {
        self.keep = true;
        self.kept.store(true, Ordering::SeqCst);
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(after) = self.after_claim.take() {
            crate::rt::off_runtime(|| {
                let _ = after.join();
            });
        }
        if self.keep || self.view || self.kept.load(Ordering::SeqCst) {
            return;
        }
        if std::thread::panicking() && self.server.inner.options.keep_failed {
            self.keep_failed();
            return;
        }
        match self.server.drop_owned(&self.name, false) {
            Ok(()) => self.forget_marker(),
            Err(error) => {
                tracing::warn!(database = %self.name, error = %error, "could not drop test database");
            }
        }
    }
}
