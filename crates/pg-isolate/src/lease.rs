//! Databases that outlive the handle that made them: a lease handed over to
//! another process (a command-line tool serving a test runner), and the
//! database of a failed test kept for inspection.

use crate::databases::comment_sql;
use crate::owner::{DatabaseKind, OwnerRecord, now};
use crate::{Error, TestDatabase};

impl TestDatabase {
    /// Hands the database over to process `holder`: its owner record names
    /// that process from now on, and this handle no longer drops it. The
    /// database then lives until it is dropped explicitly
    /// ([`crate::Server::drop_database`]) or [`crate::Server::gc`] finds
    /// `holder` gone (or the database expired). Returns its name.
    ///
    /// Until the record is rewritten it names this process, so a kill at
    /// any moment leaves a database that gc reclaims. An `holder` that is
    /// not running is refused ([`Error::HolderGone`]).
    pub fn hand_over(mut self, holder: registry::ProcessIdentity) -> Result<String, Error> {
        if !holder.is_alive() {
            return Err(Error::HolderGone { pid: holder.pid });
        }
        self.rewrite_record(|record| {
            record.pid = holder.pid;
            record.start_time = holder.start_time;
        })?;
        Ok(self.keep())
    }

    /// Keeps the database of a failed test for inspection
    /// ([`crate::ServerOptions::keep_failed`]) and prints its name: its
    /// owner record says so, and gc leaves it for
    /// [`crate::GcOptions::kept_failed_max_age`] even once this process is
    /// gone. Called from drops, so it never fails: a record that cannot be
    /// rewritten still leaves the database until gc finds this process
    /// gone, and the message says so.
    pub(crate) fn keep_failed(&mut self) {
        let kept = now();
        let note = match self.rewrite_record(|record| record.kept_failed = Some(kept)) {
            Ok(()) => String::new(),
            Err(error) => {
                format!("; gc may drop it once this process is gone ({error})")
            }
        };
        self.mark_kept();
        tracing::warn!(database = %self.name(), "kept the database of a failed test");
        // A failing test must say which database it left for inspection,
        // and the test harness shows a failing test's stderr; a tracing
        // event alone is invisible without a subscriber.
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "pg-isolate: kept database {} of the failed test ({}){note}",
                self.name(),
                crate::url::redact(&self.url())
            );
        }
    }

    /// Rewrites the owner record as a test database of this process,
    /// changed by `change`. A pool clone claimed through its marker (its
    /// record still the pool's, naming the refill that made it) becomes a
    /// test database, owned by the record alone.
    fn rewrite_record(&mut self, change: impl FnOnce(&mut OwnerRecord)) -> Result<(), Error> {
        let server = self.server().clone();
        let name = self.name().to_owned();
        let mut record = server
            .database_info(&name)?
            .and_then(|info| info.owner)
            .filter(|owner| {
                owner.kind == DatabaseKind::Test
                    || (owner.kind == DatabaseKind::Pool && self.marker.is_some())
            })
            .ok_or_else(|| Error::NotOwned {
                database: name.clone(),
            })?;
        let me = registry::ProcessIdentity::current();
        record.kind = DatabaseKind::Test;
        record.pid = me.pid;
        record.start_time = me.start_time;
        change(&mut record);
        server.with_admin(|client| {
            client
                .batch_execute(&comment_sql(&name, &record))
                .map_err(|e| Error::sql("writing the owner record of", &name, e))
        })?;
        self.forget_marker();
        Ok(())
    }
}
