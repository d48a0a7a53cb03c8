//! Handing a test database over to another process: a lease that outlives
//! the process that made it (a command-line tool serving a test runner).

use crate::databases::comment_sql;
use crate::owner::DatabaseKind;
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
        let server = self.server().clone();
        let name = self.name().to_owned();
        let mut record = server
            .database_info(&name)?
            .and_then(|info| info.owner)
            // A pool clone claimed through its marker still has its pool
            // record; the new record makes it a test database.
            .filter(|owner| {
                owner.kind == DatabaseKind::Test
                    || (owner.kind == DatabaseKind::Pool && self.marker.is_some())
            })
            .ok_or_else(|| Error::NotOwned {
                database: name.clone(),
            })?;
        record.kind = DatabaseKind::Test;
        record.pid = holder.pid;
        record.start_time = holder.start_time;
        server.with_admin(|client| {
            client
                .batch_execute(&comment_sql(&name, &record))
                .map_err(|e| Error::sql("writing the owner record of", &name, e))
        })?;
        self.forget_marker();
        Ok(self.keep())
    }
}
