//! Migrating real databases up and down, failure reports, and the tracking
//! tables as diesel and sqlx read them.

use pg_isolate::{Direction, Format, MigrateError, Migrations, Phase, Target, TestDatabase};
use postgres::Client;
use test_support::TestResult;

use crate::migrate_format::fixture;

/// A fresh empty database of the shared server, dropped with the handle.
pub(crate) fn empty_database() -> TestResult<TestDatabase> {
    let server = crate::shared()?;
    let template = server.template(b"pg-isolate migrate tests: empty database", |_| Ok(()))?;
    Ok(template.test_database()?)
}

fn table_exists(client: &mut Client, name: &str) -> TestResult<bool> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])?
        .get(0))
}

fn diesel_rows(client: &mut Client) -> TestResult<Vec<String>> {
    Ok(client
        .query(
            "SELECT version FROM __diesel_schema_migrations ORDER BY version",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

fn sqlx_rows(client: &mut Client) -> TestResult<Vec<i64>> {
    Ok(client
        .query("SELECT version FROM _sqlx_migrations ORDER BY version", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

fn expect_failure(result: Result<impl std::fmt::Debug, MigrateError>) -> TestResult<MigrateError> {
    match result {
        Ok(report) => Err(format!("expected the run to fail, it did {report:?}").into()),
        Err(error) => Ok(error),
    }
}

#[test]
fn diesel_migrates_up_and_down_to_targets_with_progress() -> TestResult {
    let m = Migrations::load(fixture("diesel/basic"), Format::Auto)?;
    let db = empty_database()?;
    let mut client = db.client()?;

    let mut events = Vec::new();
    let report = m.migrate(&mut client, Target::Latest, |p| {
        events.push((
            p.direction,
            p.migration.version().to_owned(),
            p.step,
            p.steps,
            matches!(p.phase, Phase::Finished { .. }),
        ));
    })?;
    assert_eq!(
        report.applied,
        [
            "20161115111828",
            "20170831230457",
            "2017-09-01-000000",
            "2017-09-02-000000"
        ]
    );
    assert!(report.reverted.is_empty());
    assert_eq!(report.current.as_deref(), Some("2017-09-02-000000"));
    assert_eq!(events.len(), 8);
    assert_eq!(
        events[0],
        (Direction::Up, "20161115111828".to_owned(), 1, 4, false)
    );
    assert_eq!(
        events[7],
        (Direction::Up, "2017-09-02-000000".to_owned(), 4, 4, true)
    );
    assert_eq!(
        diesel_rows(&mut client)?,
        [
            "20161115111828",
            "20170831230457",
            "20170901000000",
            "20170902000000"
        ]
    );
    // The non-transactional migration's CONCURRENTLY indexes exist and are valid.
    let valid: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname IN ('users_lower_email_idx', 'invites_invited_by_idx') AND i.indisvalid",
            &[],
        )?
        .get(0);
    assert_eq!(valid, 2);

    // Nothing left to do.
    let again = m.migrate(&mut client, Target::Latest, |_| {})?;
    assert!(again.applied.is_empty() && again.reverted.is_empty());

    // Down to a version given as written or as tracked.
    let report = m.migrate(
        &mut client,
        Target::Version("20170831230457".into()),
        |_| {},
    )?;
    assert_eq!(report.reverted, ["2017-09-02-000000", "2017-09-01-000000"]);
    assert_eq!(report.current.as_deref(), Some("20170831230457"));
    assert!(!table_exists(&mut client, "invites")?);
    assert!(table_exists(&mut client, "profiles")?);
    assert_eq!(
        m.applied(&mut client)?,
        ["20161115111828", "20170831230457"]
    );

    let report = m.migrate(
        &mut client,
        Target::Version("20170901000000".into()),
        |_| {},
    )?;
    assert_eq!(report.applied, ["2017-09-01-000000"]);

    let report = m.migrate(&mut client, Target::None, |_| {})?;
    assert_eq!(
        report.reverted,
        ["2017-09-01-000000", "20170831230457", "20161115111828"]
    );
    assert_eq!(report.current, None);
    assert!(!table_exists(&mut client, "users")?);
    assert!(diesel_rows(&mut client)?.is_empty());

    let error = expect_failure(m.migrate(
        &mut client,
        Target::Version("19990101000000".into()),
        |_| {},
    ))?;
    assert!(
        matches!(error, MigrateError::UnknownVersion { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn sqlx_stops_at_an_irreversible_migration_on_the_way_down() -> TestResult {
    let m = Migrations::load(fixture("sqlx/basic"), Format::Auto)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    let report = m.migrate(&mut client, Target::Latest, |_| {})?;
    assert_eq!(report.applied, ["1", "0002", "3", "10"]);
    assert_eq!(sqlx_rows(&mut client)?, [1, 2, 3, 10]);

    let error = expect_failure(m.migrate(&mut client, Target::Version("2".into()), |_| {}))?;
    match &error {
        MigrateError::NotReversible { version, name } => {
            assert_eq!((version.as_str(), name.as_str()), ("3", "seed_data"));
        }
        other => return Err(format!("expected NotReversible, got {other}").into()),
    }
    // 10 was reverted before the run stopped at 3; the table says so.
    assert_eq!(sqlx_rows(&mut client)?, [1, 2, 3]);
    assert_eq!(m.applied(&mut client)?, ["1", "0002", "3"]);
    Ok(())
}

#[test]
fn failing_up_reports_file_line_column_and_sqlstate() -> TestResult {
    let m = Migrations::load(fixture("diesel/broken_up"), Format::Auto)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    let error = expect_failure(m.migrate(&mut client, Target::Latest, |_| {}))?;
    let failure = error.failure().ok_or("expected a script failure")?;
    let up = std::fs::read_to_string(fixture("diesel/broken_up/20240102000000_add age/up.sql"))?;
    let line5 = up.lines().nth(4).ok_or("fixture has 5 lines")?;
    let column = line5.find("birth_year").ok_or("fixture names birth_year")? + 1;
    assert_eq!(failure.version, "20240102000000");
    assert_eq!(failure.name, "add age");
    assert_eq!(failure.direction, Direction::Up);
    assert!(failure.file.ends_with("20240102000000_add age/up.sql"));
    assert_eq!(failure.line, Some(5));
    assert_eq!(failure.column, Some(u32::try_from(column)?));
    assert_eq!(failure.statement, Some(2));
    assert_eq!(failure.sqlstate.as_deref(), Some("42703"));
    assert!(
        failure.message.contains("birth_year"),
        "{}",
        failure.message
    );
    assert!(failure.rolled_back);
    let message = error.to_string();
    assert!(
        message.contains("20240102000000 (add age)") && message.contains("up.sql:5:"),
        "{message}"
    );

    // The database stays at the last clean version, and the table says so:
    // the failed migration's ALTER TABLE was rolled back with it.
    assert_eq!(diesel_rows(&mut client)?, ["20240101000000"]);
    let age: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'people' AND column_name = 'age'",
            &[],
        )?
        .get(0);
    assert_eq!(age, 0);
    assert!(!table_exists(&mut client, "never_reached")?);
    Ok(())
}

#[test]
fn failure_without_a_server_position_is_located_by_statement() -> TestResult {
    let m = Migrations::load(fixture("sqlx/broken_up"), Format::Auto)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    let error = expect_failure(m.migrate(&mut client, Target::Latest, |_| {}))?;
    let failure = error.failure().ok_or("expected a script failure")?;
    assert_eq!(failure.version, "2");
    assert_eq!(failure.sqlstate.as_deref(), Some("42P07"));
    assert_eq!(
        (failure.line, failure.column, failure.statement),
        (Some(3), Some(1), Some(2))
    );
    assert!(failure.file.ends_with("2_extra_tables.up.sql"));
    assert!(
        !table_exists(&mut client, "extra")?,
        "rolled back with its migration"
    );
    assert_eq!(sqlx_rows(&mut client)?, [1]);
    Ok(())
}

#[test]
fn non_transactional_failure_keeps_earlier_statements() -> TestResult {
    let m = Migrations::load(fixture("sqlx/broken_notx"), Format::Auto)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    let error = expect_failure(m.migrate(&mut client, Target::Latest, |_| {}))?;
    let failure = error.failure().ok_or("expected a script failure")?;
    assert_eq!(failure.version, "2");
    assert_eq!(failure.sqlstate.as_deref(), Some("23505"));
    assert_eq!(
        (failure.line, failure.column, failure.statement),
        (Some(3), Some(1), Some(2))
    );
    assert!(!failure.rolled_back);
    assert!(error.to_string().contains("not transactional"), "{error}");
    assert!(
        table_exists(&mut client, "people_email_idx")?,
        "the first statement stays"
    );
    assert_eq!(
        sqlx_rows(&mut client)?,
        [1],
        "no row for the failed migration"
    );
    Ok(())
}

/// name, type, length, nullable, default
type DieselColumn = (String, String, Option<i32>, String, Option<String>);

#[test]
fn diesel_tracking_table_has_diesels_layout_and_versions() -> TestResult {
    let dir = fixture("diesel/basic");
    let m = Migrations::load(&dir, Format::Diesel)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    m.migrate(&mut client, Target::Latest, |_| {})?;

    let columns: Vec<DieselColumn> = client
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length::int, \
                    is_nullable::text, column_default::text \
             FROM information_schema.columns WHERE table_name = '__diesel_schema_migrations' \
             ORDER BY ordinal_position",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        columns,
        [
            (
                "version".into(),
                "character varying".into(),
                Some(50),
                "NO".into(),
                None
            ),
            (
                "run_on".into(),
                "timestamp without time zone".into(),
                None,
                "NO".into(),
                Some("CURRENT_TIMESTAMP".into())
            ),
        ]
    );
    let primary_key: String = client
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = '__diesel_schema_migrations'::regclass AND contype = 'p'",
            &[],
        )?
        .get(0);
    assert_eq!(primary_key, "PRIMARY KEY (version)");

    // What diesel computes from the directory (its version rule: the name up
    // to the first `_`, dashes removed) is exactly what is recorded, so
    // diesel finds nothing pending.
    let mut from_directory = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && !name.starts_with('.') {
            let version = name.split('_').next().unwrap_or_default().replace('-', "");
            from_directory.push(version);
        }
    }
    from_directory.sort();
    assert_eq!(diesel_rows(&mut client)?, from_directory);
    let stamped: i64 = client
        .query_one(
            "SELECT count(*) FROM __diesel_schema_migrations WHERE run_on <= now()::timestamp + interval '1 day'",
            &[],
        )?
        .get(0);
    assert_eq!(stamped, 4);
    Ok(())
}

#[test]
fn sqlx_tracking_table_has_sqlxs_layout_and_checksums() -> TestResult {
    let dir = fixture("sqlx/basic");
    let m = Migrations::load(&dir, Format::Sqlx)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    m.migrate(&mut client, Target::Latest, |_| {})?;

    let columns: Vec<(String, String, String, Option<String>)> = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text \
             FROM information_schema.columns WHERE table_name = '_sqlx_migrations' \
             ORDER BY ordinal_position",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expected = [
        ("version", "bigint", "NO", None),
        ("description", "text", "NO", None),
        (
            "installed_on",
            "timestamp with time zone",
            "NO",
            Some("now()"),
        ),
        ("success", "boolean", "NO", None),
        ("checksum", "bytea", "NO", None),
        ("execution_time", "bigint", "NO", None),
    ];
    let expected: Vec<(String, String, String, Option<String>)> = expected
        .iter()
        .map(|(a, b, c, d)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(columns, expected);

    // sqlx's rules: version as an integer, description from the file name
    // with `_` as spaces, success, SHA-384 of the up file's bytes (computed
    // here by the server), execution time in nanoseconds.
    let files = [
        (1i64, "create users", "1_create_users.up.sql"),
        (2, "profiles", "0002_profiles.up.sql"),
        (3, "seed data", "3_seed_data.sql"),
        (10, "concurrent index", "10_concurrent_index.up.sql"),
    ];
    for (version, description, file) in files {
        let bytes = std::fs::read(dir.join(file))?;
        let row = client.query_one(
            "SELECT description, success, checksum = sha384($2::bytea), execution_time \
             FROM _sqlx_migrations WHERE version = $1",
            &[&version, &bytes],
        )?;
        let (got_description, success, checksum_ok, nanos): (String, bool, bool, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(got_description, description);
        assert!(success && checksum_ok, "version {version}");
        assert!(nanos > 0, "version {version}: execution_time {nanos}");
    }
    Ok(())
}

#[test]
fn databases_started_by_the_tools_themselves_are_taken_over() -> TestResult {
    // sqlx: its table, created by its own DDL, with migration 1 applied the
    // way sqlx applies it.
    let m = Migrations::load(fixture("sqlx/basic"), Format::Sqlx)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    let up = std::fs::read_to_string(fixture("sqlx/basic/1_create_users.up.sql"))?;
    client.batch_execute(&up)?;
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, \
         description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
         success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
    )?;
    client.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1, 'create users', TRUE, sha384($1::bytea), 1234)",
        &[&up.as_bytes()],
    )?;
    let report = m.migrate(&mut client, Target::Latest, |_| {})?;
    assert_eq!(report.applied, ["0002", "3", "10"]);

    // A changed file is refused, as sqlx refuses it.
    client.execute(
        "UPDATE _sqlx_migrations SET checksum = sha384('something else'::bytea) WHERE version = 2",
        &[],
    )?;
    let error = expect_failure(m.migrate(&mut client, Target::Latest, |_| {}))?;
    assert!(
        matches!(error, MigrateError::ChecksumMismatch { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("0002_profiles.up.sql"),
        "{error}"
    );
    // So is a dirty row left by a failed sqlx run.
    client.execute(
        "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 10",
        &[],
    )?;
    let error = expect_failure(m.migrate(&mut client, Target::Latest, |_| {}))?;
    assert!(matches!(error, MigrateError::Dirty { .. }), "{error}");

    // diesel: its table, from its own DDL, with the first migration applied.
    let m = Migrations::load(fixture("diesel/basic"), Format::Diesel)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    client.batch_execute(&std::fs::read_to_string(fixture(
        "diesel/basic/20161115111828_create users/up.sql",
    ))?)?;
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (\
         version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20161115111828')",
    )?;
    let report = m.migrate(&mut client, Target::Latest, |_| {})?;
    assert_eq!(
        report.applied,
        ["20170831230457", "2017-09-01-000000", "2017-09-02-000000"]
    );
    Ok(())
}

#[test]
fn templates_are_built_by_the_runner_keyed_by_the_directory() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("sqlx/basic"), Format::Auto)?;
    let template = m.template(&server)?;
    assert_eq!(m.template(&server)?.name(), template.name());
    let other = Migrations::load(fixture("diesel/basic"), Format::Auto)?.template(&server)?;
    assert_ne!(other.name(), template.name());

    let db = template.test_database()?;
    let mut client = db.client()?;
    assert_eq!(sqlx_rows(&mut client)?, [1, 2, 3, 10]);
    let seeded: i64 = client
        .query_one(
            "SELECT count(*) FROM users WHERE email = 'seed@example.com'",
            &[],
        )?
        .get(0);
    assert_eq!(seeded, 1);
    // The clone can be migrated further (here: down) by the runner.
    let report = m.migrate(&mut client, Target::Version("3".into()), |_| {})?;
    assert_eq!(report.reverted, ["10"]);
    Ok(())
}

#[test]
fn concurrent_runs_from_several_processes_apply_each_migration_once() -> TestResult {
    if let Some(args) = test_support::child::args() {
        return migrate_in_child(&args);
    }
    let db = empty_database()?;
    let children = (0..3)
        .map(|_| {
            test_support::child::spawn(
                "migrate_run::concurrent_runs_from_several_processes_apply_each_migration_once",
                &[db.name().to_owned()],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut applied = Vec::new();
    for child in children {
        let stdout = test_support::child::wait_success(child)?;
        applied.extend(
            crate::values(&stdout, "APPLIED")
                .into_iter()
                .map(str::to_owned),
        );
    }
    // Between them the three runs applied every migration exactly once.
    applied.sort();
    assert_eq!(applied, ["0002", "1", "10", "3"]);
    let mut client = db.client()?;
    assert_eq!(sqlx_rows(&mut client)?, [1, 2, 3, 10]);
    let seeded: i64 = client
        .query_one(
            "SELECT count(*) FROM users WHERE email = 'seed@example.com'",
            &[],
        )?
        .get(0);
    assert_eq!(seeded, 1, "the irreversible seed ran once");
    Ok(())
}

fn migrate_in_child(args: &[String]) -> TestResult {
    let database = args.first().ok_or("the database name")?;
    let m = Migrations::load(fixture("sqlx/basic"), Format::Auto)?;
    let mut client = crate::shared()?.client(database)?;
    let report = m.migrate(&mut client, Target::Latest, |_| {})?;
    for version in report.applied {
        crate::emit("APPLIED", version);
    }
    Ok(())
}
