//! Templates built by the migration runner.

use super::error::MigrateError;
use super::format::Migrations;
use super::runner::Target;
use crate::{Server, Template};

impl Migrations {
    /// The server's template with every migration applied, built once per
    /// distinct directory content (keyed by [`Migrations::key_material`])
    /// by exactly one process while others wait; see [`Server::template`].
    ///
    /// The template's tracking table records the migrations, so a clone can
    /// be migrated further by pg-isolate, diesel or sqlx.
    pub fn template(&self, server: &Server) -> Result<Template, MigrateError> {
        server
            .template(&self.key_material(), |client| {
                self.migrate(client, Target::Latest, |_| {})?;
                Ok(())
            })
            .map_err(|source| MigrateError::Server {
                action: format!("building the template of {}", self.dir().display()),
                source: Box::new(source),
            })
    }
}
