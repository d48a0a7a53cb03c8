//! The sync API inside `#[tokio::test]`, with both runtime flavours: no
//! call or destructor panics, and a test panicking with a database in hand
//! fails alone instead of aborting the test binary.

use pg_isolate::{Format, Migrations, Server, ServerOptions};
use test_support::{TestResult, child};

use crate::{emit, shared, unique_key, values};

/// Everything a test does with pg-isolate, from inside a runtime: connect,
/// build a template, clone it, query it (with `tokio_postgres`, the async
/// client), drop the clone and the server handle.
async fn round_trip() -> TestResult {
    // A handle of its own, dropped at the end: its idle connections (each
    // with a `postgres` runtime inside) are dropped inside the runtime.
    let server = Server::connect(crate::suite_options()?)?;
    let template = server.template(&unique_key("async"), |client| {
        client.batch_execute("CREATE TABLE notes (body text NOT NULL)")?;
        Ok(())
    })?;
    let db = template.test_database()?;
    let name = db.name().to_owned();
    let (client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    client
        .execute("INSERT INTO notes VALUES ($1)", &[&"from async"])
        .await?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM notes", &[])
        .await?
        .get(0);
    assert_eq!(count, 1);
    // A sync client belongs on a blocking thread (the `postgres` crate's
    // rule), where it works as anywhere else.
    let url = db.url();
    let via_sync = tokio::task::spawn_blocking(move || -> TestResult<i64> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        Ok(client.query_one("SELECT count(*) FROM notes", &[])?.get(0))
    })
    .await
    .map_err(|e| e.to_string())??;
    assert_eq!(via_sync, 1);
    let pool = template.pool(pg_isolate::PoolOptions::default())?;
    let pooled = pool.test_database()?;
    drop(pooled);
    drop(pool);
    drop(db);
    // The database went with its handle, connections and all.
    let _ = task.await;
    assert!(!server.database_exists(&name)?);
    assert!(server.list_databases()?.iter().all(|d| d.name != name));
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diesel/basic");
    let migrated = Migrations::load(fixture, Format::Auto)?
        .template(&server)?
        .test_database()?;
    assert!(server.database_exists(migrated.name())?);
    drop(migrated);
    drop(template);
    drop(server);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn sync_api_in_a_current_thread_runtime() -> TestResult {
    round_trip().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_api_in_a_multi_thread_runtime() -> TestResult {
    round_trip().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_handle_from_concurrent_tasks() -> TestResult {
    let server = shared()?;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                let db = server.test_database()?;
                let name = db.name().to_owned();
                drop(db);
                Ok::<_, pg_isolate::Error>(name)
            })
        })
        .collect();
    for task in tasks {
        let name = task.await??;
        assert!(!server.database_exists(&name)?);
    }
    Ok(())
}

/// The child role: an async test that panics while it holds a database
/// (and, in the `multi` role, a multi-thread runtime's task too). The
/// parent runs it in a child process, whose harness must report the
/// failure (exit code 101) instead of aborting, with the databases dropped.
#[tokio::test(flavor = "current_thread")]
async fn panicking_async_test_fails_alone() -> TestResult {
    if let Some(args) = child::args() {
        let options = ServerOptions {
            keep_failed: false,
            ..crate::suite_options()?
        };
        let server = Server::connect(options)?;
        let db = server.test_database()?;
        emit("DB", db.name());
        let _held = db;
        let _server = server;
        if args[0] == "multi" {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let inner = pg_isolate::Server::connect(crate::suite_options()?)?;
            // Dropped inside the other runtime while this one unwinds.
            std::thread::scope(|scope| {
                let _ = scope
                    .spawn(|| {
                        runtime.block_on(async {
                            let db = inner.test_database()?;
                            emit("DB", db.name());
                            let _held = db;
                            panic!("this child test fails on purpose, multi-thread");
                            #[allow(unreachable_code)]
                            Ok::<_, pg_isolate::Error>(())
                        })
                    })
                    .join();
            });
        }
        panic!("this child test fails on purpose");
    }
    for flavour in ["current", "multi"] {
        let mut command = child::command(
            "asynchronous::panicking_async_test_fails_alone",
            &[flavour.to_owned()],
        )?;
        let output = command.output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A failed test exits with 101; an abort would be killed by SIGABRT
        // and have no exit code.
        assert_eq!(output.status.code(), Some(101), "{stdout}\n{stderr}");
        assert!(stdout.contains("1 failed"), "{stdout}\n{stderr}");
        assert!(!stderr.contains("panic in a destructor"), "{stderr}");
        let server = shared()?;
        let names = values(&stdout, "DB");
        assert_eq!(names.len(), if flavour == "multi" { 2 } else { 1 });
        for name in names {
            assert!(!server.database_exists(name)?, "{name} was left behind");
        }
    }
    Ok(())
}
