//! Per-test databases: distinct under threads and processes, dropped with
//! the handle, kept for a failed test when asked.

use std::collections::HashSet;
use std::time::Duration;

use pg_isolate::{GcOptions, GcReason, Server, ServerOptions};
use test_support::{TestResult, child};

use crate::{emit, shared, unique_key, values};

fn notes_template(server: &Server) -> TestResult<pg_isolate::Template> {
    Ok(server.template(b"pg-isolate tests: notes v1", |client| {
        client.batch_execute("CREATE TABLE notes (owner text NOT NULL)")?;
        Ok(())
    })?)
}

#[test]
fn many_threads_get_distinct_private_databases() -> TestResult {
    let server = shared()?;
    let template = notes_template(&server)?;
    let names = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|thread| {
                let template = template.clone();
                scope.spawn(move || -> TestResult<Vec<String>> {
                    let mut names = Vec::new();
                    for round in 0..3 {
                        let db = template.test_database()?;
                        let me = format!("{thread}-{round}");
                        let mut client = db.client()?;
                        client.execute("INSERT INTO notes VALUES ($1)", &[&me])?;
                        std::thread::sleep(Duration::from_millis(20));
                        let owners: Vec<String> = client
                            .query("SELECT owner FROM notes", &[])?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        assert_eq!(owners, [me]);
                        names.push(db.name().to_owned());
                    }
                    Ok(names)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "thread panicked")?)
            .collect::<TestResult<Vec<Vec<String>>>>()
    })?;
    let all: Vec<String> = names.into_iter().flatten().collect();
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 24);
    for name in &all {
        assert!(!server.database_exists(name)?, "{name} was not dropped");
    }
    Ok(())
}

#[test]
fn processes_asking_at_once_never_get_the_same_database() -> TestResult {
    if let Some(args) = child::args() {
        let server = shared()?;
        let template = notes_template(&server)?;
        let mut held = Vec::new();
        for _ in 0..3 {
            let db = template.test_database()?;
            db.client()?
                .execute("INSERT INTO notes VALUES ($1)", &[&args[0]])?;
            emit("DB", db.name());
            held.push(db);
        }
        std::thread::sleep(Duration::from_millis(200));
        for db in &held {
            let owners: Vec<String> = db
                .client()?
                .query("SELECT owner FROM notes", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(owners, [args[0].clone()]);
        }
        return Ok(());
    }
    let children = (0..4)
        .map(|i| {
            child::spawn(
                "testdb::processes_asking_at_once_never_get_the_same_database",
                &[i.to_string()],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut names = Vec::new();
    for c in children {
        let out = child::wait_success(c)?;
        names.extend(values(&out, "DB").into_iter().map(str::to_owned));
    }
    assert_eq!(names.len(), 12);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 12, "{names:?}");
    Ok(())
}

#[test]
fn dropping_the_handle_drops_the_database_and_keep_keeps_it() -> TestResult {
    let server = shared()?;
    let db = server.test_database()?;
    let name = db.name().to_owned();
    assert!(db.url().contains(&name));
    let mut open = db.client()?;
    open.batch_execute("CREATE TABLE t (v int)")?;
    assert!(server.database_exists(&name)?);
    drop(db);
    assert!(!server.database_exists(&name)?);

    let kept = server.test_database()?.keep();
    assert!(server.database_exists(&kept)?);
    server.drop_database(&kept)?;
    Ok(())
}

#[test]
fn failed_test_keeps_its_database_when_asked() -> TestResult {
    if let Some(args) = child::args() {
        let options = ServerOptions {
            keep_failed: args[0] == "keep",
            ..crate::suite_options()?
        };
        let server = Server::connect(options)?;
        let db = server.test_database()?;
        emit("DB", db.name());
        let _held = db;
        panic!("this child test fails on purpose");
    }
    for mode in ["keep", "drop"] {
        let child = child::spawn(
            "testdb::failed_test_keeps_its_database_when_asked",
            &[mode.to_owned()],
        )?;
        let output = child.wait_with_output()?;
        assert!(!output.status.success());
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let name = values(&stdout, "DB")
            .first()
            .map(|s| (*s).to_owned())
            .ok_or("child printed its database")?;
        let server = shared()?;
        if mode == "keep" {
            assert!(server.database_exists(&name)?);
            assert!(
                stderr.contains(&format!("kept database {name}")),
                "{stderr}"
            );
            // Its process is gone, yet gc (which every test process runs
            // now and then) leaves it for inspection...
            let report = server.gc(&GcOptions::default())?;
            assert!(
                report
                    .kept
                    .iter()
                    .any(|e| e.name == name && e.reason == GcReason::KeptFailed),
                "{report:?}"
            );
            assert!(server.database_exists(&name)?);
            // ... until the inspection time is over.
            std::thread::sleep(Duration::from_millis(1100));
            let report = server.gc(&GcOptions {
                kept_failed_max_age: Some(Duration::ZERO),
                ..GcOptions::default()
            })?;
            assert!(
                report
                    .dropped
                    .iter()
                    .any(|e| e.name == name && e.reason == GcReason::InspectionOver),
                "{report:?}"
            );
            assert!(!server.database_exists(&name)?);
        } else {
            assert!(!server.database_exists(&name)?);
        }
    }
    Ok(())
}

#[test]
fn empty_test_database_without_template() -> TestResult {
    let server = shared()?;
    let db = server.test_database()?;
    let tables: i64 = db
        .client()?
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )?
        .get(0);
    assert_eq!(tables, 0);
    let other = server.template(&unique_key("unused"), |_| Ok(()))?;
    server.drop_database(other.name())?;
    Ok(())
}

/// A test database's URL reaches the embedded server over its unix socket,
/// where no password is asked (the socket's directory is private), so a
/// connection in an unoptimised test binary costs no SCRAM rounds; every
/// client library understands the percent-encoded socket path.
#[test]
fn test_database_url_uses_the_socket_without_a_password() -> TestResult {
    let server = shared()?;
    assert!(
        server.embedded_pid().is_some(),
        "the suite's server is embedded"
    );
    let db = server.test_database()?;
    let url = db.url();
    assert!(
        url.contains("%2F") && url.contains("%2Frun"),
        "{}",
        pg_isolate::redact_url(&url)
    );
    assert!(
        !server.url(db.name()).contains("%2F"),
        "named URLs stay TCP"
    );
    // The password taken out: still let in, over the socket.
    let at = url.find('@').ok_or("the URL names a user")?;
    let without_password = format!("postgresql://postgres{}", &url[at..]);
    let mut client = postgres::Client::connect(&without_password, postgres::NoTls)?;
    let via: Option<String> = client
        .query_one("SELECT inet_client_addr()::text", &[])?
        .get(0);
    assert_eq!(via, None, "a unix socket connection has no client address");
    Ok(())
}
