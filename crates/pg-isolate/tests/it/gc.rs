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
        // Dropped by this gc, or by one another test ran in between (only
        // a gc drops them: their holder was killed before its drops).
        let dropped = report.dropped.iter().find(|e| e.name == *name);
        assert!(
            dropped.is_some_and(|e| e.reason == GcReason::OwnerGone)
                || (dropped.is_none() && !report.was_kept(name)),
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
fn expired_test_databases_and_unused_templates_are_collected() -> TestResult {
    // A private cluster: expiring everything must not touch other tests.
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    let named = server.create_database("old_worktree", CreateOptions::default())?;
    let old_test = server.test_database()?;
    // Another user of the same server with another prefix (a different
    // test suite, the isolane CLI): none of its databases are looked at.
    let mut other_options = cluster.options.clone();
    other_options.prefix = "other_".to_owned();
    let other = pg_isolate::Server::connect(other_options)?;
    let other_named = other.create_database("worktree", CreateOptions::default())?;
    let other_test = other.test_database()?;
    // Built by a handle that is gone by the time gc runs: a template a
    // live handle holds is in use, even by the handle running gc.
    let builder = cluster.connect()?;
    let template = builder.template(b"soon unused", |_| Ok(()))?;
    let pool = template.pool(pg_isolate::PoolOptions {
        size: 2,
        ..Default::default()
    })?;
    assert_eq!(pool.wait_filled(Duration::from_secs(60))?, 2);
    drop(pool);
    let template_name = template.name().to_owned();
    let held = server.gc(&GcOptions {
        template_max_idle: Some(Duration::ZERO),
        dry_run: true,
        ..GcOptions::default()
    })?;
    assert!(
        held.kept
            .iter()
            .any(|e| e.name == template_name && e.reason == GcReason::TemplateInUse),
        "{held:?}"
    );
    drop(template);
    drop(builder);
    let foreign = "testdb_not_ours";
    server
        .admin_client()?
        .batch_execute(&format!("CREATE DATABASE \"{foreign}\""))?;

    let report = server.gc(&GcOptions::default())?;
    assert!(
        report.was_kept(&named) && report.was_kept(&template_name),
        "{report:?}"
    );

    std::thread::sleep(Duration::from_millis(1100));
    let report = server.gc(&GcOptions {
        max_age: Some(Duration::ZERO),
        template_max_idle: Some(Duration::ZERO),
        ..GcOptions::default()
    })?;
    let reason = |name: &str| {
        report
            .dropped
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.reason.clone())
    };
    assert_eq!(
        reason(old_test.name()),
        Some(GcReason::Expired),
        "{report:?}"
    );
    assert_eq!(reason(&template_name), Some(GcReason::UnusedTemplate));
    // Named databases are long-lived by design: never dropped by age.
    assert!(
        report
            .kept
            .iter()
            .any(|e| e.name == named && e.reason == GcReason::NamedDatabase),
        "{report:?}"
    );
    assert!(server.database_exists(&named)?);
    for outside in [&other_named, other_test.name()] {
        assert!(
            !report.was_dropped(outside) && !report.was_kept(outside),
            "{outside} is outside the prefix: {report:?}"
        );
        assert!(other.database_exists(outside)?);
    }
    assert!(
        report
            .dropped
            .iter()
            .chain(&report.kept)
            .all(|e| e.name.starts_with(server.prefix())),
        "{report:?}"
    );
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
    assert!(!server.database_exists(old_test.name())?);
    assert!(server.database_exists(foreign)?);
    let kinds: Vec<DatabaseKind> = report.dropped.iter().filter_map(|e| e.kind).collect();
    assert!(kinds.contains(&DatabaseKind::Template));
    assert!(!kinds.contains(&DatabaseKind::Named));

    // The other prefix's own gc keeps its live and named databases too.
    let report = other.gc(&GcOptions {
        max_age: Some(Duration::ZERO),
        template_max_idle: Some(Duration::ZERO),
        ..GcOptions::default()
    })?;
    assert!(report.was_kept(&other_named), "{report:?}");
    assert!(report.was_dropped(other_test.name()), "{report:?}");
    assert!(
        !report.was_dropped(&named) && !report.was_kept(&named),
        "{report:?}"
    );
    assert!(server.database_exists(&named)?);
    Ok(())
}

fn templates_on(server: &pg_isolate::Server) -> TestResult<Vec<String>> {
    Ok(server
        .list_databases()?
        .into_iter()
        .filter(|db| db.is_template && db.name.starts_with(server.prefix()))
        .map(|db| db.name)
        .collect())
}

fn build(server: &pg_isolate::Server, key: &str) -> TestResult<pg_isolate::Template> {
    Ok(server.template(key.as_bytes(), |client| {
        client.batch_execute("CREATE TABLE t (v int)")?;
        Ok(())
    })?)
}

#[test]
fn ten_migration_changes_leave_at_most_the_template_budget() -> TestResult {
    let cluster = PrivateCluster::new()?;
    let mut options = cluster.options.clone();
    // Every open runs the cleanup (not only once a minute).
    options.auto_gc = Some(Duration::ZERO);
    let mut built = Vec::new();
    for change in 0..10 {
        if change == 1 || change == 9 {
            // The first strictly least, the last strictly most recently used.
            std::thread::sleep(Duration::from_millis(1100));
        }
        // A test run after a change of the migrations: a new process (here
        // a new handle), a new template.
        let server = pg_isolate::Server::connect(options.clone())?;
        built.push(
            build(&server, &format!("migrations v{change}"))?
                .name()
                .to_owned(),
        );
    }
    // The next run's open cleans up by itself.
    let server = pg_isolate::Server::connect(options.clone())?;
    let kept = templates_on(&server)?;
    assert_eq!(
        kept.len(),
        pg_isolate::TemplateBudget::default().max_templates,
        "{kept:?}"
    );
    assert!(!kept.contains(&built[0]), "the least recently used goes");
    assert!(kept.contains(&built[9]), "the newest stays");
    Ok(())
}

#[test]
fn a_template_in_use_is_never_evicted() -> TestResult {
    let cluster = PrivateCluster::new()?;
    let mut options = cluster.options.clone();
    options.auto_gc = None;
    let holder = pg_isolate::Server::connect(options.clone())?;
    let held = build(&holder, "held")?;
    std::thread::sleep(Duration::from_millis(1100));
    let newer = {
        let other = pg_isolate::Server::connect(options.clone())?;
        build(&other, "newer")?.name().to_owned()
    };
    options.template_budget.max_templates = 1;
    let tight = pg_isolate::Server::connect(options)?;
    let report = tight.gc(&GcOptions::default())?;
    assert!(
        report
            .kept
            .iter()
            .any(|e| e.name == held.name() && e.reason == GcReason::TemplateInUse),
        "held by a live handle: {report:?}"
    );
    assert!(report.was_kept(&newer), "{report:?}");
    // A test database of it keeps it too, once the handle is gone; and
    // being cloned is a use: it is now the most recently used, so the
    // budget of one keeps it and the other goes.
    // (Times are in seconds.)
    std::thread::sleep(Duration::from_millis(1100));
    let db = held.test_database()?;
    let held = held.name().to_owned();
    drop(holder);
    let report = tight.gc(&GcOptions::default())?;
    assert!(tight.database_exists(db.name())?);
    assert!(report.was_kept(&held), "{report:?}");
    assert!(
        report
            .dropped
            .iter()
            .any(|e| e.name == newer && e.reason == GcReason::OverBudget),
        "{report:?}"
    );
    let name = db.name().to_owned();
    drop(db);
    assert!(!tight.database_exists(&name)?);
    let report = tight.gc(&GcOptions::default())?;
    assert_eq!(templates_on(&tight)?, vec![held], "{report:?}");
    Ok(())
}
