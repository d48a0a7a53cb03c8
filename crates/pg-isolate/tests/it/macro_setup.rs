//! `#[pg_isolate::test]`'s setups across processes: a remembered template
//! key is used only while the files it was made from are unchanged (each
//! test a process of its own, as under nextest).

use std::path::Path;
use std::process::Stdio;

use pg_isolate::__macro::{FromTestDatabase, Guard};
use test_support::{TestResult, child};

use crate::{emit, shared, suite_options, values};

const TEST: &str = "macro_setup::a_remembered_setup_is_used_only_while_its_files_are_unchanged";

/// In a child: the tables of a fresh test database of the crate in
/// `args[0]`, and the key of its template.
fn report(crate_dir: &str) -> TestResult {
    let mut guard = Guard::new(crate_dir, "migrations", false, &[]);
    let url = <String as FromTestDatabase>::from_test_database(&mut guard);
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
             AND tablename LIKE 't%' ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let record: String = client
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database \
             WHERE datname = current_database()",
            &[],
        )?
        .get(0);
    let record: serde_json::Value = serde_json::from_str(&record)?;
    emit("TABLES", tables.join(","));
    let name: String = client
        .query_one("SELECT current_database()::text", &[])?
        .get(0);
    emit("DB", name);
    emit(
        "KEY",
        record["template_key"].as_str().ok_or("a template key")?,
    );
    Ok(())
}

/// Runs a child with nextest's run id `run` (if any); its tables and key.
fn child_sees(crate_dir: &Path, run: Option<&str>) -> TestResult<(String, String)> {
    let (tables, key, db) = child_run(crate_dir, run)?;
    RELEASED.with(|released| released.borrow_mut().push(db));
    Ok((tables, key))
}

thread_local! {
    /// The databases the children's tests released when they ended.
    static RELEASED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn child_run(crate_dir: &Path, run: Option<&str>) -> TestResult<(String, String, String)> {
    let mut command = child::command(TEST, &[crate_dir.display().to_string()])?;
    let cache = suite_options()?
        .embedded
        .cache_dir
        .ok_or("the suite's cluster directory")?;
    command
        .env("PG_ISOLATE_CACHE_DIR", cache)
        .env_remove("NEXTEST_RUN_ID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(run) = run {
        command.env("NEXTEST_RUN_ID", run);
    }
    let out = child::wait_success(command.spawn()?)?;
    let one = |key: &str| -> TestResult<String> {
        Ok(values(&out, key)
            .first()
            .ok_or(format!("{key} in {out}"))?
            .to_string())
    };
    Ok((one("TABLES")?, one("KEY")?, one("DB")?))
}

#[test]
fn a_remembered_setup_is_used_only_while_its_files_are_unchanged() -> TestResult {
    if let Some(args) = child::args() {
        return report(&args[0]);
    }
    let dir = tempfile::tempdir()?;
    let migration = dir.path().join("migrations/2024-01-01-000000_first");
    std::fs::create_dir_all(&migration)?;
    std::fs::write(migration.join("up.sql"), "CREATE TABLE t1 (id int);\n")?;
    std::fs::write(migration.join("down.sql"), "DROP TABLE t1;\n")?;
    let mut keys = Vec::new();

    let (tables, key) = child_sees(dir.path(), Some("run-a"))?;
    assert_eq!(tables, "t1");
    keys.push(key);
    // Remembered: the next process finds the same template without
    // reading the migrations.
    let (tables, key) = child_sees(dir.path(), None)?;
    assert_eq!((tables.as_str(), &key), ("t1", &keys[0]));

    // A migration edited in place.
    let mut up = std::fs::OpenOptions::new()
        .append(true)
        .open(migration.join("up.sql"))?;
    std::io::Write::write_all(&mut up, b"CREATE TABLE t2 (id int);\n")?;
    drop(up);
    // The rest of the nextest run that checked the files keeps its template
    // (as a `cargo test` process does) ...
    let (tables, _) = child_sees(dir.path(), Some("run-a"))?;
    assert_eq!(tables, "t1");
    // ... the next run and any other process see the edit.
    let (tables, key) = child_sees(dir.path(), Some("run-b"))?;
    assert_eq!(tables, "t1,t2");
    keys.push(key);
    let (tables, _) = child_sees(dir.path(), None)?;
    assert_eq!(tables, "t1,t2");

    // A migration added.
    let second = dir.path().join("migrations/2024-02-01-000000_second");
    std::fs::create_dir_all(&second)?;
    std::fs::write(second.join("up.sql"), "CREATE TABLE t3 (id int);\n")?;
    std::fs::write(second.join("down.sql"), "DROP TABLE t3;\n")?;
    let (tables, key) = child_sees(dir.path(), None)?;
    assert_eq!(tables, "t1,t2,t3");
    keys.push(key);

    // The remembered template dropped (gc, say): made again from the files.
    let server = shared()?;
    server.drop_database(&format!("testdb_tpl_{}", keys[2]))?;
    server.gc(&pg_isolate::GcOptions::default())?;
    let (tables, key) = child_sees(dir.path(), None)?;
    assert_eq!((tables.as_str(), &key), ("t1,t2,t3", &keys[2]));

    keys.dedup();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        let template = format!("testdb_tpl_{key}");
        if server.database_exists(&template)? {
            server.drop_database(&template)?;
        }
    }
    server.gc(&pg_isolate::GcOptions::default())?;
    // Each test released its database when it ended (no DROP of its own):
    // gc (or a refill before it) dropped them all.
    for db in RELEASED.with(|released| released.take()) {
        assert!(
            !server.database_exists(&db)?,
            "{db} was released and dropped"
        );
    }
    Ok(())
}
