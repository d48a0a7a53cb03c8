//! Loading migrations directories: both formats, ordering, and the errors
//! that name the files involved. No server needed.

use std::path::{Path, PathBuf};

use pg_isolate::{Format, MigrateError, Migrations};
use test_support::TestResult;

pub(crate) fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn versions(m: &Migrations) -> Vec<&str> {
    m.list().iter().map(|m| m.version()).collect()
}

fn names(m: &Migrations) -> Vec<&str> {
    m.list().iter().map(|m| m.name()).collect()
}

fn write(dir: &Path, rel: &str, contents: &[u8]) -> TestResult {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)?;
    Ok(())
}

fn load_err(dir: &Path, format: Format) -> TestResult<MigrateError> {
    match Migrations::load(dir, format) {
        Ok(m) => Err(format!("expected an error, loaded {:?}", versions(&m)).into()),
        Err(e) => Ok(e),
    }
}

#[test]
fn diesel_orders_mixed_version_styles_and_ignores_unrelated_files() -> TestResult {
    let m = Migrations::load(fixture("diesel/basic"), Format::Auto)?;
    assert_eq!(m.format(), Format::Diesel);
    // `2017-09-01-000000` sorts before `20170831230457` by name, after it by
    // version.
    assert_eq!(
        versions(&m),
        [
            "20161115111828",
            "20170831230457",
            "2017-09-01-000000",
            "2017-09-02-000000"
        ]
    );
    assert_eq!(
        names(&m),
        [
            "create users",
            "profiles",
            "add-invites",
            "concurrent index"
        ]
    );
    let tracked: Vec<&str> = m.list().iter().map(|m| m.tracked_version()).collect();
    assert_eq!(
        tracked,
        [
            "20161115111828",
            "20170831230457",
            "20170901000000",
            "20170902000000"
        ]
    );
    let transactional: Vec<bool> = m.list().iter().map(|m| m.is_transactional()).collect();
    assert_eq!(transactional, [true, true, true, false]);
    assert!(m.list().iter().all(|m| m.is_reversible()));
    assert!(
        m.list()[0]
            .up_path()
            .ends_with("20161115111828_create users/up.sql")
    );
    assert_eq!(
        m.find("20170901000000").map(|m| m.name()),
        Some("add-invites"),
        "a migration answers to its tracked version too"
    );
    Ok(())
}

#[test]
fn sqlx_orders_numerically_and_knows_irreversible_and_no_transaction() -> TestResult {
    let m = Migrations::load(fixture("sqlx/basic"), Format::Auto)?;
    assert_eq!(m.format(), Format::Sqlx);
    assert_eq!(versions(&m), ["1", "0002", "3", "10"]);
    assert_eq!(
        names(&m),
        ["create_users", "profiles", "seed_data", "concurrent_index"]
    );
    let reversible: Vec<bool> = m.list().iter().map(|m| m.is_reversible()).collect();
    assert_eq!(reversible, [true, true, false, true]);
    let transactional: Vec<bool> = m.list().iter().map(|m| m.is_transactional()).collect();
    assert_eq!(transactional, [true, true, true, false]);
    assert_eq!(m.list()[1].tracked_version(), "2");
    assert_eq!(m.find("2").map(|m| m.version()), Some("0002"));
    assert!(m.list()[2].down_path().is_none());
    Ok(())
}

#[test]
fn forced_format_reads_the_same_as_detected() -> TestResult {
    for (dir, format) in [
        ("diesel/rollback", Format::Diesel),
        ("sqlx/rollback", Format::Sqlx),
    ] {
        let auto = Migrations::load(fixture(dir), Format::Auto)?;
        let forced = Migrations::load(fixture(dir), format)?;
        assert_eq!(auto.format(), format);
        assert_eq!(versions(&auto), versions(&forced));
        assert_eq!(auto.hash(), forced.hash());
        assert_eq!(auto.len(), 10);
    }
    Ok(())
}

#[test]
fn hash_follows_content_not_location() -> TestResult {
    let a = tempfile::tempdir()?;
    let b = tempfile::tempdir()?;
    for dir in [a.path(), b.path()] {
        write(dir, "1_users.up.sql", b"CREATE TABLE users (id int);\n")?;
        write(dir, "1_users.down.sql", b"DROP TABLE users;\n")?;
    }
    let first = Migrations::load(a.path(), Format::Auto)?.hash();
    assert_eq!(first, Migrations::load(b.path(), Format::Auto)?.hash());
    write(b.path(), "1_users.down.sql", b"DROP TABLE users; \n")?;
    assert_ne!(first, Migrations::load(b.path(), Format::Auto)?.hash());
    Ok(())
}

#[test]
fn empty_and_ambiguous_directories_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    write(dir.path(), "README.md", b"nothing here")?;
    let error = load_err(dir.path(), Format::Auto)?;
    assert!(
        matches!(error, MigrateError::UnknownFormat { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&dir.path().display().to_string())
    );

    write(dir.path(), "20200101000000_a/up.sql", b"SELECT 1;")?;
    write(dir.path(), "1_b.sql", b"SELECT 1;")?;
    let error = load_err(dir.path(), Format::Auto)?;
    assert!(
        matches!(error, MigrateError::AmbiguousFormat { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("20200101000000_a") && message.contains("1_b.sql"),
        "{message}"
    );
    // Forcing a format settles it.
    assert_eq!(Migrations::load(dir.path(), Format::Diesel)?.len(), 1);
    assert_eq!(Migrations::load(dir.path(), Format::Sqlx)?.len(), 1);
    Ok(())
}

#[test]
fn duplicate_versions_name_both_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    write(dir.path(), "2017-01-01-000000_a/up.sql", b"SELECT 1;")?;
    write(dir.path(), "20170101000000_b/up.sql", b"SELECT 2;")?;
    let error = load_err(dir.path(), Format::Auto)?;
    let message = error.to_string();
    assert!(
        matches!(error, MigrateError::DuplicateVersion { .. }),
        "{message}"
    );
    assert!(
        message.contains("2017-01-01-000000_a") && message.contains("20170101000000_b"),
        "{message}"
    );

    let dir = tempfile::tempdir()?;
    write(dir.path(), "1_a.sql", b"SELECT 1;")?;
    write(dir.path(), "01_b.sql", b"SELECT 2;")?;
    let error = load_err(dir.path(), Format::Auto)?;
    let message = error.to_string();
    assert!(
        matches!(error, MigrateError::DuplicateVersion { .. }),
        "{message}"
    );
    assert!(
        message.contains("1_a.sql") && message.contains("01_b.sql"),
        "{message}"
    );
    Ok(())
}

#[test]
fn reversible_sqlx_migration_needs_both_scripts() -> TestResult {
    let dir = tempfile::tempdir()?;
    write(dir.path(), "5_add_index.up.sql", b"SELECT 1;")?;
    let error = load_err(dir.path(), Format::Auto)?;
    let message = error.to_string();
    assert!(
        matches!(error, MigrateError::MissingDown { .. }),
        "{message}"
    );
    assert!(
        message.contains("5_add_index.up.sql") && message.contains("5_add_index.down.sql"),
        "{message}"
    );

    let dir = tempfile::tempdir()?;
    write(dir.path(), "5_add_index.down.sql", b"SELECT 1;")?;
    let error = load_err(dir.path(), Format::Sqlx)?;
    let message = error.to_string();
    assert!(matches!(error, MigrateError::MissingUp { .. }), "{message}");
    assert!(message.contains("5_add_index.up.sql"), "{message}");
    Ok(())
}

#[test]
fn invalid_versions_metadata_and_directories_name_the_path() -> TestResult {
    let dir = tempfile::tempdir()?;
    write(dir.path(), "v1_users.sql", b"SELECT 1;")?;
    let error = load_err(dir.path(), Format::Sqlx)?;
    assert!(
        matches!(error, MigrateError::InvalidVersion { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("v1_users.sql"), "{error}");

    let dir = tempfile::tempdir()?;
    write(dir.path(), "20200101000000_a/up.sql", b"SELECT 1;")?;
    write(
        dir.path(),
        "20200101000000_a/metadata.toml",
        b"run_in_transaction = \"no\"\n",
    )?;
    let error = load_err(dir.path(), Format::Auto)?;
    assert!(matches!(error, MigrateError::Metadata { .. }), "{error}");
    assert!(error.to_string().contains("metadata.toml"), "{error}");

    write(
        dir.path(),
        "20200101000000_a/metadata.toml",
        b"run_in_transaction = [\n",
    )?;
    let error = load_err(dir.path(), Format::Auto)?;
    assert!(matches!(error, MigrateError::Metadata { .. }), "{error}");

    // diesel's own default: a metadata.toml without the key turns the
    // transaction off.
    write(
        dir.path(),
        "20200101000000_a/metadata.toml",
        b"something_else = 1\n",
    )?;
    let m = Migrations::load(dir.path(), Format::Auto)?;
    assert!(!m.list()[0].is_transactional());

    std::fs::create_dir_all(dir.path().join("20200102000000_b"))?;
    write(dir.path(), "20200102000000_b/notes.txt", b"no up.sql here")?;
    let error = load_err(dir.path(), Format::Diesel)?;
    assert!(
        matches!(error, MigrateError::NotAMigration { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("20200102000000_b"), "{error}");
    Ok(())
}

#[test]
fn unreadable_scripts_name_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    write(dir.path(), "20200101000000_a/up.sql", b"SELECT '\xff\xfe';")?;
    let error = load_err(dir.path(), Format::Auto)?;
    assert!(matches!(error, MigrateError::Io { .. }), "{error}");
    assert!(
        error.to_string().contains("20200101000000_a/up.sql"),
        "{error}"
    );

    let dir = tempfile::tempdir()?;
    write(dir.path(), "3_a.up.sql", b"SELECT 1;")?;
    std::fs::create_dir(dir.path().join("3_a.down.sql"))?;
    // A directory named like a script is not a script file: the down is missing.
    let error = load_err(dir.path(), Format::Auto)?;
    assert!(matches!(error, MigrateError::MissingDown { .. }), "{error}");
    Ok(())
}

/// crates.io's directory: diesel directories of both version shapes
/// (`YYYY-MM-DD-HHMMSS` and `YYYY-MM-DD-HHMMSS-0000`, 14 and 18 digits
/// without dashes) and 14-digit ones without dashes, plus a stray loose
/// `data_*.sql` that diesel ignores.
#[test]
fn auto_follows_diesel_rules_and_order_on_mixed_version_shapes() -> TestResult {
    let dir = tempfile::tempdir()?;
    for name in [
        "20140924113530_dumped_migration_1",
        "2017-08-31-230457_invitations",
        "2018-12-31-235959-0000_long_shape",
        "2019-01-01-000000_short_shape",
        "2019-01-01-000000-0000_long_after_short",
        "2020-06-01-120000-0000_long_shape_again",
    ] {
        write(dir.path(), &format!("{name}/up.sql"), b"SELECT 1;")?;
        write(dir.path(), &format!("{name}/down.sql"), b"SELECT 1;")?;
    }
    write(
        dir.path(),
        "data_oauth_github.sql",
        b"INSERT INTO x VALUES (1);",
    )?;
    let m = Migrations::load(dir.path(), Format::Auto)?;
    assert_eq!(m.format(), Format::Diesel);
    // diesel's order: versions with dashes removed, compared as strings.
    let tracked: Vec<&str> = m.list().iter().map(|m| m.tracked_version()).collect();
    let mut expected = tracked.clone();
    expected.sort_unstable();
    assert_eq!(tracked, expected);
    assert_eq!(
        tracked,
        [
            "20140924113530",
            "20170831230457",
            "201812312359590000",
            "20190101000000",
            "201901010000000000",
            "202006011200000000",
        ]
    );
    // Forcing sqlx fails as sqlx does: `data` is no integer version.
    let error = load_err(dir.path(), Format::Sqlx)?;
    assert!(
        matches!(error, MigrateError::InvalidVersion { .. }),
        "{error}"
    );
    Ok(())
}

/// sqlx: integer versions of any width, in numeric order; files that are
/// not `<integer>_<description>.sql` make a directory no sqlx one.
#[test]
fn auto_follows_sqlx_rules_and_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    for name in [
        "9_nine.sql",
        "10_ten.sql",
        "20200101000000_stamp.sql",
        "0002_two.sql",
    ] {
        write(dir.path(), name, b"SELECT 1;")?;
    }
    write(dir.path(), "3_three.up.sql", b"SELECT 1;")?;
    write(dir.path(), "3_three.down.sql", b"SELECT 1;")?;
    let m = Migrations::load(dir.path(), Format::Auto)?;
    assert_eq!(m.format(), Format::Sqlx);
    let tracked: Vec<&str> = m.list().iter().map(|m| m.tracked_version()).collect();
    assert_eq!(tracked, ["2", "3", "9", "10", "20200101000000"]);

    let stray = tempfile::tempdir()?;
    write(stray.path(), "data_seed.sql", b"SELECT 1;")?;
    let error = load_err(stray.path(), Format::Auto)?;
    assert!(
        matches!(error, MigrateError::UnknownFormat { .. }),
        "{error}"
    );
    Ok(())
}

/// The README's pattern (`?` into `Box<dyn Error>`) prints `Debug`: it
/// must carry the message, hint included.
#[test]
fn errors_debug_as_their_message() -> TestResult {
    let dir = tempfile::tempdir()?;
    write(dir.path(), "20200101000000_a/up.sql", b"SELECT 1;")?;
    write(dir.path(), "1_b.sql", b"SELECT 1;")?;
    let error = load_err(dir.path(), Format::Auto)?;
    let boxed: Box<dyn std::error::Error> = Box::new(error);
    let shown = format!("{boxed:?}");
    assert!(shown.contains("force a format"), "{shown}");
    assert_eq!(shown, boxed.to_string());
    Ok(())
}
