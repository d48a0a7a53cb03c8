//! Templates: built exactly once across processes, half-built ones rebuilt.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use pg_isolate::Error;
use test_support::{TestResult, child};

use crate::{emit, kill9, shared, unique_key, values, wait_for_file};

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{line}\n").as_bytes())
}

#[test]
fn template_is_built_once_by_four_racing_processes() -> TestResult {
    if let Some(args) = child::args() {
        let server = shared()?;
        let log = Path::new(&args[1]).to_owned();
        let template = server.template(args[0].as_bytes(), |client| {
            append(&log, &std::process::id().to_string())?;
            client.batch_execute("CREATE TABLE built (v int); INSERT INTO built VALUES (7)")?;
            // Long enough that the others arrive while it is being built.
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })?;
        emit("TEMPLATE", template.name());
        let db = template.test_database()?;
        let v: i32 = db.client()?.query_one("SELECT v FROM built", &[])?.get(0);
        emit("VALUE", v);
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("builds");
    let key = String::from_utf8(unique_key("race"))?;
    let args = [key, log.display().to_string()];
    let children = (0..4)
        .map(|_| {
            child::spawn(
                "templates::template_is_built_once_by_four_racing_processes",
                &args,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut names = Vec::new();
    for c in children {
        let out = child::wait_success(c)?;
        names.extend(values(&out, "TEMPLATE").into_iter().map(str::to_owned));
        assert_eq!(values(&out, "VALUE"), ["7"]);
    }
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|n| n == &names[0]));
    let builds = std::fs::read_to_string(&log)?;
    assert_eq!(
        builds.lines().count(),
        1,
        "setup ran more than once: {builds}"
    );
    shared()?.drop_database(&names[0])?;
    Ok(())
}

#[test]
fn half_built_template_of_a_killed_builder_is_rebuilt() -> TestResult {
    if let Some(args) = child::args() {
        let server = shared()?;
        let marker = Path::new(&args[1]).to_owned();
        server.template(args[0].as_bytes(), |client| {
            client.batch_execute("CREATE TABLE from_killed_builder (v int)")?;
            std::fs::write(&marker, "building")?;
            std::thread::sleep(Duration::from_secs(120));
            Ok(())
        })?;
        return Err("the builder should have been killed".into());
    }
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("building");
    let key = String::from_utf8(unique_key("halfbuilt"))?;
    let mut builder = child::spawn(
        "templates::half_built_template_of_a_killed_builder_is_rebuilt",
        &[key.clone(), marker.display().to_string()],
    )?;
    wait_for_file(&marker)?;
    kill9(builder.id())?;
    builder.wait()?;

    let server = shared()?;
    let mut runs = 0;
    let template = server.template(key.as_bytes(), |client| {
        runs += 1;
        client.batch_execute("CREATE TABLE from_rebuild (v int)")?;
        Ok(())
    })?;
    assert_eq!(runs, 1, "the half-built template is rebuilt");
    let db = template.test_database()?;
    let mut client = db.client()?;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, ["from_rebuild"]);
    // And the next caller finds it complete.
    let again = server.template(key.as_bytes(), |_| Err("must not run again".into()))?;
    assert_eq!(again.name(), template.name());
    drop(db);
    server.drop_database(template.name())?;
    Ok(())
}

#[test]
fn failed_setup_leaves_no_template_behind() -> TestResult {
    let server = shared()?;
    let key = unique_key("failing");
    let result = server.template(&key, |client| {
        client.batch_execute("CREATE TABLE half (v int)")?;
        Err("migration 3 failed".into())
    });
    let Err(Error::Setup { template, source }) = result else {
        return Err(format!("expected a setup error, got {result:?}").into());
    };
    assert_eq!(source.to_string(), "migration 3 failed");
    assert!(!server.database_exists(&template)?);
    let built = server.template(&key, |client| {
        client.batch_execute("CREATE TABLE whole (v int)")?;
        Ok(())
    })?;
    assert_eq!(built.name(), template);
    server.drop_database(built.name())?;
    Ok(())
}

#[test]
fn different_setups_get_different_templates() -> TestResult {
    let server = shared()?;
    let a = server.template(&unique_key("a"), |_| Ok(()))?;
    let b = server.template(&unique_key("b"), |_| Ok(()))?;
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("testdb_tpl_"));
    let info = server
        .list_databases()?
        .into_iter()
        .find(|i| i.name == a.name())
        .ok_or("listed")?;
    assert!(info.is_template);
    let owner = info.owner.ok_or("owner")?;
    assert!(owner.ready);
    assert_eq!(owner.template_key.as_deref(), Some(a.key()));
    server.drop_database(a.name())?;
    server.drop_database(b.name())?;
    Ok(())
}

#[test]
fn template_with_is_built_through_its_url_reused_and_rebuilt_on_request() -> TestResult {
    let server = shared()?;
    let key = unique_key("by_url");
    let builds = std::sync::atomic::AtomicUsize::new(0);
    let build = |url: &str| -> Result<(), pg_isolate::SetupError> {
        builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A connection of the builder's own, as a migration tool makes.
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute("CREATE TABLE users (id int); INSERT INTO users VALUES (1)")?;
        // Left open on purpose: the template must close it.
        std::mem::forget(client);
        Ok(())
    };
    let first = server.template_with(&key, pg_isolate::TemplateOptions::default(), build)?;
    assert!(first.build_time().is_some());
    assert_eq!(
        server.template_key(&key),
        (first.key().to_owned(), first.name().to_owned())
    );
    let again = server.template_with(&key, pg_isolate::TemplateOptions::default(), build)?;
    assert_eq!(again.name(), first.name());
    assert!(again.build_time().is_none());
    assert_eq!(builds.load(std::sync::atomic::Ordering::Relaxed), 1);
    let mut options = pg_isolate::TemplateOptions::default();
    options.rebuild = true;
    let rebuilt = server.template_with(&key, options, build)?;
    assert_eq!(builds.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert!(rebuilt.build_time().is_some());
    let found = server
        .find_template(&key)?
        .ok_or("the rebuilt template is found")?;
    assert_eq!(found.name(), first.name());
    let db = rebuilt.test_database()?;
    let rows: i64 = db
        .client()?
        .query_one("SELECT count(*) FROM users", &[])?
        .get(0);
    assert_eq!(rows, 1);
    drop(db);
    server.drop_database(first.name())?;
    assert!(server.find_template(&key)?.is_none());
    Ok(())
}

#[test]
fn failed_template_with_build_leaves_nothing() -> TestResult {
    let server = shared()?;
    let key = unique_key("by_url_failing");
    let result = server.template_with(&key, pg_isolate::TemplateOptions::default(), |url| {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute("CREATE TABLE half (v int)")?;
        Err("exit status 3".into())
    });
    let Err(Error::Setup { template, .. }) = result else {
        return Err(format!("expected a setup error, got {result:?}").into());
    };
    assert!(!server.database_exists(&template)?);
    assert!(server.find_template(&key)?.is_none());
    Ok(())
}
