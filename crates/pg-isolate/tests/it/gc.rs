//! Leak cleanup: a SIGKILLed holder's databases, expiry, unused templates.

use std::time::Duration;

use pg_isolate::{CreateOptions, DatabaseKind, GcOptions, GcReason};
use test_support::{TestResult, child};

use crate::{PrivateCluster, emit, kill9, shared, unique, values, wait_for_file};

#[test]
fn databases_of_a_sigkilled_holder_are_collected() -> TestResult {
    if let Some(args) = child::args() {
        let server = shared()?;
        let a = server.test_database()?;
        let b = server.test_database()?;
        let named = server.create_database(&args[0], CreateOptions::default())?;
        emit("TEST", a.name());
        emit("TEST", b.name());
        emit("NAMED", &named);
        std::fs::write(&args[1], "holding")?;
        std::thread::sleep(Duration::from_secs(120));
        return Err("the holder should have been killed".into());
    }
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("holding");
    let named_short = unique("held");
    let holder = child::spawn(
        "gc::databases_of_a_sigkilled_holder_are_collected",
        &[named_short.clone(), marker.display().to_string()],
    )?;
    wait_for_file(&marker)?;
    kill9(holder.id())?;
    let output = holder.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tests = values(&stdout, "TEST");
    let named = values(&stdout, "NAMED");
    assert_eq!((tests.len(), named.len()), (2, 1), "{stdout}");

    let server = shared()?;
    let mine = server.test_database()?;
    let report = server.gc(&GcOptions::default())?;
    for name in &tests {
        assert!(
            report
                .dropped
                .iter()
                .any(|e| e.name == *name && e.reason == GcReason::OwnerGone),
            "{report:?}"
        );
        assert!(!server.database_exists(name)?);
    }
    assert!(
        report
            .kept
            .iter()
            .any(|e| e.name == named[0] && e.reason == GcReason::NamedDatabase)
    );
    assert!(
        report
            .kept
            .iter()
            .any(|e| e.name == mine.name() && e.reason == GcReason::OwnerAlive)
    );
    assert!(server.database_exists(mine.name())?);
    server.drop_database(named[0])?;
    Ok(())
}

#[test]
fn expired_databases_and_unused_templates_are_collected() -> TestResult {
    // A private cluster: expiring everything must not touch other tests.
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    let named = server.create_database("old_worktree", CreateOptions::default())?;
    let template = server.template(b"soon unused", |_| Ok(()))?;
    let pool = template.pool(pg_isolate::PoolOptions {
        size: 2,
        ..Default::default()
    })?;
    assert_eq!(pool.wait_filled(Duration::from_secs(60))?, 2);
    drop(pool);
    let foreign = "testdb_not_ours";
    server
        .admin_client()?
        .batch_execute(&format!("CREATE DATABASE \"{foreign}\""))?;

    let report = server.gc(&GcOptions::default())?;
    assert!(
        report.was_kept(&named) && report.was_kept(template.name()),
        "{report:?}"
    );

    std::thread::sleep(Duration::from_millis(1100));
    let report = server.gc(&GcOptions {
        max_age: Some(Duration::ZERO),
        template_max_idle: Some(Duration::ZERO),
    })?;
    let reason = |name: &str| {
        report
            .dropped
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.reason.clone())
    };
    assert_eq!(reason(&named), Some(GcReason::Expired), "{report:?}");
    assert_eq!(reason(template.name()), Some(GcReason::UnusedTemplate));
    let orphans = report
        .dropped
        .iter()
        .filter(|e| e.reason == GcReason::OrphanedPoolClone)
        .count();
    assert_eq!(
        orphans, 2,
        "the pool clones go with their template: {report:?}"
    );
    assert!(
        report
            .kept
            .iter()
            .any(|e| e.name == foreign && e.reason == GcReason::NoOwnerRecord)
    );
    assert!(report.dropped.iter().all(|e| e.kind.is_some()));
    assert!(!server.database_exists(&named)?);
    assert!(server.database_exists(foreign)?);
    let kinds: Vec<DatabaseKind> = report.dropped.iter().filter_map(|e| e.kind).collect();
    assert!(kinds.contains(&DatabaseKind::Template));
    Ok(())
}
