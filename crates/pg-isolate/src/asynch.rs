//! The async API (feature `tokio`): the same operations as the sync API,
//! run on tokio's blocking threads so that no runtime worker waits for the
//! server, and connections as `tokio_postgres` clients.
//!
//! The sync API is safe in async code too (it leaves the runtime before it
//! blocks; see the crate docs), but it holds the calling task's thread
//! while it works.

use std::panic::resume_unwind;

use crate::{Error, MigrateError, Migrations, Server, ServerOptions, Template, TestDatabase};

/// Runs `work` on tokio's blocking threads and waits for it without
/// holding a worker; a panic in `work` is passed on.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(error) if error.is_panic() => resume_unwind(error.into_panic()),
        // Only when the runtime shuts down before the work started.
        Err(error) => Err(Error::io(
            "running pg-isolate's blocking work",
            "",
            std::io::Error::other(error),
        )),
    }
}

impl Server {
    /// [`Server::connect`] without blocking a runtime worker.
    pub async fn connect_async(options: ServerOptions) -> Result<Self, Error> {
        blocking(move || Self::connect(options)).await?
    }

    /// [`Server::shared`] without blocking a runtime worker.
    pub async fn shared_async() -> Result<Self, Error> {
        blocking(Self::shared).await?
    }

    /// [`Server::test_database`] without blocking a runtime worker.
    pub async fn test_database_async(&self) -> Result<TestDatabase, Error> {
        let server = self.clone();
        blocking(move || server.test_database()).await?
    }
}

impl Template {
    /// [`Template::test_database`] without blocking a runtime worker.
    pub async fn test_database_async(&self) -> Result<TestDatabase, Error> {
        let template = self.clone();
        blocking(move || template.test_database()).await?
    }
}

impl Migrations {
    /// [`Migrations::template`] without blocking a runtime worker.
    pub async fn template_async(&self, server: &Server) -> Result<Template, MigrateError> {
        let migrations = self.clone();
        let server = server.clone();
        blocking(move || migrations.template(&server))
            .await
            .map_err(|source| MigrateError::Server {
                action: "building a template".to_owned(),
                source: Box::new(source),
            })?
    }
}

impl TestDatabase {
    /// A new `tokio_postgres` connection to the database; its connection
    /// task is spawned on the current runtime.
    pub async fn client_async(&self) -> Result<tokio_postgres::Client, Error> {
        let url = self.url();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|source| Error::Connect {
                url: crate::url::redact(&url),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "test database connection ended");
            }
        });
        Ok(client)
    }

    /// Drops the database now, without blocking a runtime worker (dropping
    /// the handle does the same, blocking).
    pub async fn drop_async(self) -> Result<(), Error> {
        blocking(move || self.drop_now()).await?
    }
}
