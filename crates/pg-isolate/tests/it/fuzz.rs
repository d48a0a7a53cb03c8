//! Fuzzing what pg-isolate reads from untrusted input without a server:
//! migrations directories (random trees of hostile names and bytes, both
//! layouts) and database name prefixes.

use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::path::Path;

use pg_isolate::{Format, Migrations, ServerOptions};
use proptest::prelude::*;
use proptest::sample::Index;
use test_support::TestResult;
use test_support::fuzz;

/// One entry of a generated migrations directory.
#[derive(Debug, Clone)]
enum Node {
    File(Name, Contents),
    /// A directory and the files in it; `up.sql` may itself be a directory.
    Dir(Name, Vec<(String, Contents)>, bool),
    Symlink(Name, &'static str),
}

/// A name: mostly `<version><sep><description><suffix>` with the version
/// taken from a small per-case pool (so that versions collide), sometimes
/// anything at all.
#[derive(Debug, Clone)]
enum Name {
    Shaped(Index, &'static str, String, &'static str),
    Raw(String),
}

impl Name {
    fn render(&self, versions: &[String]) -> String {
        match self {
            Name::Shaped(version, sep, description, suffix) => format!(
                "{}{sep}{description}{suffix}",
                versions[version.index(versions.len())]
            ),
            Name::Raw(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
enum Contents {
    Text(String),
    Bytes(Vec<u8>),
}

impl Contents {
    fn bytes(&self) -> &[u8] {
        match self {
            Contents::Text(text) => text.as_bytes(),
            Contents::Bytes(bytes) => bytes,
        }
    }
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}",
        "[0-9]{14}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{6}",
        "[+-]?[0-9]{1,21}",
        "0{1,3}[0-9]",
        "[0-9a-z+-]{0,4}",
        "\\PC{0,4}",
    ]
}

fn name() -> impl Strategy<Value = Name> {
    let sep = prop::sample::select(vec!["_", "_", "_", "", "__", "-"]);
    let description = prop_oneof![
        "[a-z_ ]{0,6}",
        "\\PC{0,8}",
        Just("..".to_owned()),
        Just("é ü 名前".to_owned()),
        "x{200,260}",
    ];
    let suffix = prop::sample::select(vec![
        ".up.sql",
        ".down.sql",
        ".sql",
        ".up.sql",
        ".down.sql",
        "",
        ".SQL",
        ".sql.bak",
        ".down.sql.up.sql",
        "/up.sql",
    ]);
    let raw = prop_oneof![
        prop::sample::select(vec![
            ".",
            "..",
            "...",
            ".hidden_1.sql",
            "_",
            "_.sql",
            "1_",
            "up.sql",
            "down.sql",
            "README.md",
            "..1_a.sql",
            "1_..sql",
            " 1_a.sql",
            "1 _a.sql",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,16}",
    ];
    prop_oneof![
        6 => (any::<Index>(), sep, description, suffix)
            .prop_map(|(v, sep, d, suffix)| Name::Shaped(v, sep, d, suffix)),
        1 => raw.prop_map(Name::Raw),
    ]
}

fn contents() -> impl Strategy<Value = Contents> {
    prop_oneof![
        Just(Contents::Text(String::new())),
        Just(Contents::Text("CREATE TABLE t (id int);".to_owned())),
        Just(Contents::Text(
            "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (id);".to_owned()
        )),
        prop::sample::select(vec![
            "run_in_transaction = false",
            "run_in_transaction = true",
            "run_in_transaction = 1",
            "run_in_transaction = \"yes\"",
            "[",
            "other = 1",
        ])
        .prop_map(|text| Contents::Text(text.to_owned())),
        "\\PC{0,40}".prop_map(Contents::Text),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Contents::Bytes),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let inner_name = prop_oneof![
        4 => prop::sample::select(vec!["up.sql", "down.sql", "metadata.toml"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["UP.SQL", "README.md", ".keep", "up.sql.bak"]).prop_map(str::to_owned),
        1 => "\\PC{1,8}",
    ];
    prop_oneof![
        5 => (name(), contents()).prop_map(|(n, c)| Node::File(n, c)),
        3 => (name(), prop::collection::vec((inner_name, contents()), 0..4), prop::bool::weighted(0.05))
            .prop_map(|(n, files, up_dir)| Node::Dir(n, files, up_dir)),
        1 => (name(), prop::sample::select(vec!["nowhere", "self", "..", ".", "/"]))
            .prop_map(|(n, target)| Node::Symlink(n, target)),
    ]
}

/// A well-formed diesel migration directory (up.sql, maybe down.sql).
fn diesel_node() -> impl Strategy<Value = Node> {
    let script = || Contents::Text("SELECT 1;".to_owned());
    (any::<Index>(), "[a-z_]{0,6}", any::<bool>()).prop_map(move |(version, name, down)| {
        let mut files = vec![("up.sql".to_owned(), script())];
        if down {
            files.push(("down.sql".to_owned(), script()));
        }
        Node::Dir(Name::Shaped(version, "_", name, ""), files, false)
    })
}

/// A well-formed sqlx migration: a plain script or an up/down pair.
fn sqlx_nodes() -> impl Strategy<Value = Vec<Node>> {
    let script = || Contents::Text("SELECT 1;".to_owned());
    (any::<Index>(), "[a-z_]{0,6}", any::<bool>()).prop_map(move |(version, name, pair)| {
        let file = |suffix| Node::File(Name::Shaped(version, "_", name.clone(), suffix), script());
        if pair {
            vec![file(".up.sql"), file(".down.sql")]
        } else {
            vec![file(".sql")]
        }
    })
}

/// A generated tree: the version pool, the entries, and the format asked
/// for. Hostile trees, and well-formed ones whose only trouble can be their
/// versions (so that loading often succeeds and its result is checked).
fn tree() -> impl Strategy<Value = (Vec<String>, Vec<Node>, Format)> {
    let format = || prop::sample::select(vec![Format::Auto, Format::Diesel, Format::Sqlx]);
    prop_oneof![
        (
            prop::collection::vec(version(), 1..5),
            prop::collection::vec(node(), 0..32),
            format(),
        ),
        (
            prop::collection::vec(version(), 1..32),
            prop::collection::vec(diesel_node(), 0..32),
            format(),
        ),
        (
            prop::collection::vec(version(), 1..32),
            prop::collection::vec(sqlx_nodes(), 0..32)
                .prop_map(|nodes| nodes.into_iter().flatten().collect()),
            format(),
        ),
    ]
}

/// Creates what can be created; the filesystem refuses some names (too
/// long, `/`, `.`), and an entry may collide with an earlier one.
fn build(dir: &Path, versions: &[String], nodes: &[Node]) -> std::io::Result<()> {
    let plain = |name: &str| !name.contains(['/', '\0']);
    let taken = |path: &Path| std::fs::symlink_metadata(path).is_ok();
    for node in nodes {
        let result = match node {
            Node::File(name, contents) => {
                let name = name.render(versions);
                let path = dir.join(&name);
                if plain(&name) && !taken(&path) {
                    std::fs::write(&path, contents.bytes())
                } else {
                    Ok(())
                }
            }
            Node::Dir(name, files, up_dir) => {
                let name = name.render(versions);
                let path = dir.join(&name);
                if plain(&name) && !taken(&path) {
                    std::fs::create_dir(&path).and_then(|()| {
                        if *up_dir {
                            std::fs::create_dir(path.join("up.sql"))?;
                        }
                        for (file, contents) in files {
                            if plain(file) && !taken(&path.join(file)) {
                                let file = path.join(file);
                                std::fs::write(file, contents.bytes())?;
                            }
                        }
                        Ok(())
                    })
                } else {
                    Ok(())
                }
            }
            Node::Symlink(name, target) => {
                let name = name.render(versions);
                let path = dir.join(&name);
                let target = if *target == "self" {
                    name.as_str()
                } else {
                    target
                };
                if plain(&name) && !taken(&path) {
                    std::os::unix::fs::symlink(target, &path)
                } else {
                    Ok(())
                }
            }
        };
        match result {
            // Names the filesystem refuses are simply not part of the tree.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::InvalidFilename
                        | std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::AlreadyExists
                        | std::io::ErrorKind::IsADirectory
                        | std::io::ErrorKind::NotADirectory
                ) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Counts what a loader following the documented rules must accept:
/// (diesel directories, sqlx files by distinct version, sqlx files with an
/// integer version).
fn reference_counts(dir: &Path) -> std::io::Result<(Vec<String>, usize, usize, usize)> {
    let mut subdirs = Vec::new();
    let mut diesel = 0;
    let mut sqlx_versions = BTreeSet::new();
    let mut sqlx_files = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            if entry.path().join("up.sql").is_file() {
                diesel += 1;
            }
            subdirs.push(name);
        } else if meta.is_file()
            && let Some((version, rest)) = name.split_once('_')
            && rest.ends_with(".sql")
            // What sqlx takes for a migration (it fails on the others).
            && let Ok(version) = version.parse::<i64>()
        {
            sqlx_files += 1;
            sqlx_versions.insert(version);
        }
    }
    Ok((subdirs, diesel, sqlx_versions.len(), sqlx_files))
}

/// diesel's order: the tracked versions (dashes removed) as strings.
fn diesel_before(a: &str, b: &str) -> bool {
    a < b
}

#[test]
fn migration_directories_load_or_fail_cleanly() -> TestResult {
    let root = tempfile::tempdir()?;
    let loaded = std::sync::atomic::AtomicU64::new(0);
    fuzz::run(
        "migration_directory",
        tree(),
        |(versions, nodes, format)| {
            let case = tempfile::tempdir_in(root.path())?;
            let dir = case.path().join("migrations");
            std::fs::create_dir(&dir)?;
            build(&dir, &versions, &nodes)?;
            let (subdirs, diesel_dirs, sqlx_versions, sqlx_files) = reference_counts(&dir)?;
            match Migrations::load(&dir, format) {
                Ok(migrations) => {
                    loaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let chosen = migrations.format();
                    prop_assert_ne!(chosen, Format::Auto);
                    if format == Format::Auto {
                        let expected = if diesel_dirs > 0 {
                            Format::Diesel
                        } else {
                            Format::Sqlx
                        };
                        prop_assert_eq!(chosen, expected);
                        prop_assert!(
                            diesel_dirs == 0 || sqlx_files == 0,
                            "both layouts present, yet Auto chose {:?}",
                            chosen
                        );
                    }
                    let list = migrations.list();
                    if chosen == Format::Diesel {
                        prop_assert_eq!(list.len(), subdirs.len(), "diesel dirs {:?}", subdirs);
                    } else {
                        prop_assert_eq!(list.len(), sqlx_versions);
                    }
                    let mut seen = HashSet::new();
                    for migration in list {
                        prop_assert!(
                            seen.insert(migration.tracked_version().to_owned()),
                            "version {} loaded twice: {:?}",
                            migration.tracked_version(),
                            list.iter().map(|m| m.version()).collect::<Vec<_>>()
                        );
                        prop_assert!(migration.up_path().starts_with(&dir));
                        prop_assert!(migration.up_path().is_file());
                        if let Some(down) = migration.down_path() {
                            prop_assert!(down.starts_with(&dir) && down.is_file());
                        }
                    }
                    for pair in list.windows(2) {
                        let (a, b) = (pair[0].tracked_version(), pair[1].tracked_version());
                        let ordered = if chosen == Format::Sqlx {
                            a.parse::<i64>()? < b.parse::<i64>()?
                        } else {
                            diesel_before(a, b)
                        };
                        prop_assert!(ordered, "{} sorted before {}", a, b);
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    prop_assert!(
                        message.contains(&dir.display().to_string()),
                        "the error names no path in the directory: {message}"
                    );
                }
            }
            Ok(())
        },
    )?;
    // The checks on loaded directories must not be vacuous.
    let loaded = loaded.into_inner();
    writeln!(
        std::io::stderr(),
        "migration_directory: {loaded} directories loaded"
    )?;
    assert!(loaded > 0, "no generated directory loaded");
    Ok(())
}

/// The documented rule for a prefix: empty, or at most 20 bytes of ASCII
/// letters, digits, `_` and `-`, not starting with `-`.
fn reference_prefix_ok(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.len() <= 20
            && !prefix.starts_with('-')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// Names as an attacker would write them, and near misses of good ones.
pub(crate) fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{0,24}",
        "[a-zA-Z0-9_.;/ \"'\\\\-]{0,24}",
        prop::sample::select(vec![
            "\"; DROP DATABASE postgres; --",
            "x\" OR \"1\"=\"1",
            "a'b",
            "../etc",
            "a\0b",
            "-rf",
            "é",
            "tab\there",
            "new\nline",
            "%_",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,24}",
        any::<String>(),
    ]
}

#[test]
fn database_prefixes_are_validated_before_connecting() -> TestResult {
    // An address where nothing listens: an accepted prefix fails to connect,
    // a refused one never gets that far.
    let url = format!("postgres://fuzz@127.0.0.1:{}/postgres", closed_port()?);
    fuzz::run("pg_prefix", hostile_name(), |prefix| {
        let result = pg_isolate::Server::connect(ServerOptions {
            url: Some(url.clone()),
            prefix: prefix.clone(),
            ..ServerOptions::default()
        });
        match result {
            Ok(_) => prop_assert!(false, "connected to a closed port"),
            Err(pg_isolate::Error::InvalidName { name, .. }) => {
                prop_assert!(
                    !reference_prefix_ok(&prefix),
                    "refused good prefix {prefix:?}"
                );
                prop_assert_eq!(name, prefix);
            }
            Err(other) => {
                prop_assert!(
                    reference_prefix_ok(&prefix),
                    "prefix {prefix:?} got past validation: {other}"
                );
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// A local TCP port with nothing listening on it.
fn closed_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr().map(|addr| addr.port())
}

/// The documented rule for a database name: non-empty ASCII letters,
/// digits, `_` and `-`, not starting with `-` (any length: long names are
/// cut to 63 bytes with a hash suffix).
fn reference_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[test]
fn database_names_are_validated_and_fit_postgres() -> TestResult {
    // `database_name` only computes; the server is needed for the handle.
    let server = crate::shared()?;
    let prefix = server.prefix().to_owned();
    let names = prop_oneof![
        3 => hostile_name(),
        1 => "[a-z0-9_-]{40,120}",
    ];
    fuzz::run("pg_database_name", names, |name| {
        match server.database_name(&name) {
            Ok(full) => {
                prop_assert!(reference_name_ok(&name), "accepted {name:?} as {full:?}");
                prop_assert!(full.len() <= 63, "{full:?} is over 63 bytes");
                prop_assert!(full.starts_with(&prefix), "{full:?} lacks the prefix");
                prop_assert!(reference_name_ok(&full), "{name:?} became {full:?}");
                if name.starts_with(&prefix) && name.len() <= 63 {
                    prop_assert_eq!(&full, &name);
                }
                prop_assert_eq!(server.database_name(&full)?, full.clone(), "not idempotent");
                prop_assert_eq!(server.database_name(&name)?, full, "not deterministic");
            }
            Err(pg_isolate::Error::InvalidName { name: refused, .. }) => {
                prop_assert!(!reference_name_ok(&name), "refused good name {name:?}");
                prop_assert_eq!(refused, name);
            }
            Err(other) => prop_assert!(false, "{name:?}: unexpected error {other}"),
        }
        Ok(())
    })?;
    Ok(())
}

/// Found by the fuzzer: sorting diesel versions of both kinds (all digits,
/// and with letters) panicked, their order not being total.
#[test]
fn mixed_diesel_versions_sort_without_panicking() -> TestResult {
    let dir = tempfile::tempdir()?;
    let versions = ["9", "10", "1a", "0f", "2", "b", "003", "20", "x1", "100"];
    for (i, version) in versions.iter().cycle().take(30).enumerate() {
        let migration = dir
            .path()
            .join(format!("{version}{}_m{i}", "-".repeat(i / 10)));
        std::fs::create_dir(&migration)?;
        std::fs::write(migration.join("up.sql"), "SELECT 1;")?;
    }
    let error = Migrations::load(dir.path(), Format::Diesel)
        .err()
        .ok_or("30 directories with 10 distinct versions loaded")?;
    assert!(
        error.to_string().contains("duplicate migration version"),
        "{error}"
    );
    for i in 10..30 {
        let removed = dir
            .path()
            .join(format!("{}{}_m{i}", versions[i % 10], "-".repeat(i / 10)));
        std::fs::remove_dir_all(removed)?;
    }
    let loaded = Migrations::load(dir.path(), Format::Diesel)?;
    let order: Vec<&str> = loaded.list().iter().map(|m| m.version()).collect();
    // diesel's own order: the versions as strings.
    assert_eq!(
        order,
        ["003", "0f", "10", "100", "1a", "2", "20", "9", "b", "x1"]
    );
    Ok(())
}
