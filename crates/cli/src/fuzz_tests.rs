//! Fuzzing the CLI's parsers of untrusted files: `isolane.toml` (arbitrary
//! text and near-valid documents) and the per-repository registry document.
//! Never a panic; accepted configurations keep every promise `config.rs`
//! makes; errors never show a password.

use std::io::Write as _;
use std::path::Component;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use test_support::TestResult;
use test_support::fuzz;

use crate::config::{Config, TEMPLATE, looks_like_port_name};

/// The password every generated URL carries: it must never be shown.
const PASSWORD: &str = "s3cr3tPW";

/// Strings as a careless or hostile user writes them.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_./ -]{0,12}",
        1 => prop::sample::select(vec![
            "", ".", "..", "../x", "/abs", ".git", ".GIT/x", "./.git", "a\0b", "a\nb", "é",
            "APP_PORT", "9PORT", "0", "-1", "30s", "24h", "soon",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
        1 => any::<String>(),
    ]
}

fn quoted(text: String) -> String {
    toml::Value::String(text).to_string()
}

/// A value of any type, well-formed or not.
fn any_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        hostile_string().prop_map(quoted),
        any::<i64>().prop_map(|n| n.to_string()),
        (-1i64..70_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| x.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("{ a = 1 }".to_owned()),
        "\\PC{0,8}",
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|items| format!("[{}]", items.join(", ")))
    })
    .boxed()
}

/// A value meant for `key`: mostly of the right type, near the edges of
/// what is valid.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let strings = |s: BoxedStrategy<String>| {
        prop::collection::vec(s, 0..4)
            .prop_map(|items| {
                let items: Vec<String> = items.into_iter().map(quoted).collect();
                format!("[{}]", items.join(", "))
            })
            .boxed()
    };
    let specific = match key {
        "worktrees_dir" | "migrations" => "[a-z./]{0,10}|\\.git/[a-z]{0,3}|/[a-z]{0,4}"
            .prop_map(quoted)
            .boxed(),
        "env_file" | "metadata_file" => "[a-z./]{0,8}|\\.[eE][nN][vV]".prop_map(quoted).boxed(),
        "names" => strings("[A-Z_0-9]{0,6}|[a-zA-Z_ ]{0,6}".boxed()),
        "range" => (
            prop_oneof![
                0i64..70_000,
                1000i64..1100,
                32_000i64..33_000,
                60_990i64..61_010
            ],
            0i64..70_000,
        )
            .prop_map(|(low, high)| format!("[{low}, {high}]"))
            .boxed(),
        "enabled" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "url" => (
            prop::sample::select(vec!["postgres", "postgresql", "mysql", ""]),
            "[a-z]{0,4}",
            "[a-z0-9.]{0,6}",
            prop_oneof!["[0-9]{1,6}", "[a-z]{1,3}", Just(String::new())],
            "[a-z_/?=&]{0,8}",
        )
            .prop_map(|(scheme, user, host, port, rest)| {
                quoted(format!("{scheme}://{user}:{PASSWORD}@{host}:{port}/{rest}"))
            })
            .boxed(),
        "prefix" | "purpose_prefix" => "[a-zA-Z0-9_;-]{0,24}".prop_map(quoted).boxed(),
        "format" => prop::sample::select(vec!["auto", "diesel", "sqlx", "flyway", "AUTO"])
            .prop_map(|f| quoted(f.to_owned()))
            .boxed(),
        "name" => "[a-z_-]{0,6}|[a-z ;]{0,6}".prop_map(quoted).boxed(),
        "command" => "[a-z $_]{0,12}".prop_map(quoted).boxed(),
        "ready" => "[A-Z_]{1,8}|[a-z ]{1,8}".prop_map(quoted).boxed(),
        "timeout" | "max_age" => "[0-9]{1,4}(s|ms|m|h|d|x)?|0s".prop_map(quoted).boxed(),
        "post_create" | "pre_remove" => strings("[a-z .]{0,10}".boxed()),
        _ => any_value(),
    };
    prop_oneof![4 => specific, 1 => any_value()].boxed()
}

/// One section: a header and some `key = value` lines.
fn section() -> impl Strategy<Value = String> {
    const TOP: &[&str] = &["worktrees_dir", "env_file", "metadata_file", "colour"];
    const PORTS: &[&str] = &["names", "range", "extra"];
    const DATABASE: &[&str] = &["enabled", "url", "prefix", "migrations", "format"];
    const SERVICE: &[&str] = &["name", "command", "ready", "timeout"];
    const HOOKS: &[&str] = &["post_create", "pre_remove"];
    const GC: &[&str] = &["purpose_prefix", "max_age"];
    let sections: Vec<(&'static str, &'static [&'static str])> = vec![
        ("", TOP),
        ("[ports]", PORTS),
        ("[database]", DATABASE),
        ("[[services]]", SERVICE),
        ("[[services]]", SERVICE),
        ("[hooks]", HOOKS),
        ("[gc]", GC),
        ("[bogus]", TOP),
        ("[ports.sub]", PORTS),
        ("[services]", SERVICE),
    ];
    prop::sample::select(sections).prop_flat_map(|(header, keys)| {
        let line = prop::sample::select(keys)
            .prop_flat_map(|key| value_for(key).prop_map(move |value| format!("{key} = {value}")));
        prop::collection::vec(line, 0..5)
            .prop_map(move |lines| format!("{header}\n{}\n", lines.join("\n")))
    })
}

/// Near-valid documents, sometimes damaged (`false`: damage may have
/// turned a URL into text that no longer looks like one).
fn near_valid_document() -> impl Strategy<Value = (String, bool)> {
    let document = || prop::collection::vec(section(), 0..6).prop_map(|sections| sections.concat());
    prop_oneof![
        3 => document().prop_map(|text| (text, true)),
        1 => fuzz::damaged(document().prop_map(String::into_bytes))
            .prop_map(|bytes| (String::from_utf8_lossy(&bytes).into_owned(), false)),
    ]
}

/// Checks what an accepted configuration promises.
fn check(config: &Config, text: &str) -> Result<(), TestCaseError> {
    let dir = &config.worktrees_dir;
    prop_assert!(!dir.as_os_str().is_empty() && dir.is_relative(), "{dir:?}");
    prop_assert!(
        dir.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
        "worktrees_dir {:?} leaves the repository",
        dir
    );
    prop_assert!(!dir.to_string_lossy().contains('\0'));
    for file in [&config.env_file, &config.metadata_file] {
        prop_assert!(
            !file.is_empty()
                && file != "."
                && file != ".."
                && !file.eq_ignore_ascii_case(".git")
                && !file.contains(['/', '\0']),
            "file name {:?}",
            file
        );
    }
    let names = &config.ports.names;
    for (i, name) in names.iter().enumerate() {
        prop_assert!(looks_like_port_name(name), "port name {name:?}");
        prop_assert!(
            name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_'),
            "port name {name:?} is not an environment variable name"
        );
        prop_assert!(!names[..i].contains(name), "port name {name:?} twice");
    }
    if let Some((low, high)) = config.ports.range {
        prop_assert!((1024..=high).contains(&low), "range [{low}, {high}]");
    }
    let prefix = &config.database.prefix;
    prop_assert!(
        (1..=20).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "database prefix {:?}",
        prefix
    );
    for (i, service) in config.services.iter().enumerate() {
        let name = &service.name;
        prop_assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "service name {name:?}"
        );
        prop_assert!(
            config.services[..i].iter().all(|s| &s.name != name),
            "service {name:?} twice"
        );
        prop_assert!(
            !service.command.trim().is_empty(),
            "service {name:?} command"
        );
        if let Some(ready) = service.ready.as_deref().filter(|r| looks_like_port_name(r)) {
            prop_assert!(
                names.iter().any(|n| n == ready),
                "ready {ready:?} not leased"
            );
        }
    }
    // Parsing is a function of the text.
    let again = Config::parse(text).map_err(TestCaseError::fail)?;
    prop_assert_eq!(format!("{again:?}"), format!("{config:?}"));
    Ok(())
}

/// Never a panic; an accepted text keeps the promises; an error has a
/// message, without the password of an intact URL.
/// Returns whether the text was accepted.
fn parse_property(text: &str, urls_intact: bool) -> Result<bool, TestCaseError> {
    match Config::parse(text) {
        Ok(config) => check(&config, text).map(|()| true),
        Err(message) => {
            prop_assert!(!message.trim().is_empty(), "empty error for {text:?}");
            prop_assert!(
                !(urls_intact && message.contains(PASSWORD)),
                "the error shows the password: {message}"
            );
            Ok(false)
        }
    }
}

#[test]
fn config_parses_arbitrary_text_without_panicking() -> TestResult {
    let text = prop_oneof![
        2 => any::<String>(),
        1 => "\\PC{0,64}",
        2 => fuzz::damaged(Just(TEMPLATE.as_bytes().to_vec()))
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    fuzz::run("config_text", text, |text| {
        parse_property(&text, false).map(drop)
    })?;
    Ok(())
}

#[test]
fn config_parses_near_valid_documents_and_keeps_its_promises() -> TestResult {
    let accepted = AtomicU64::new(0);
    fuzz::run(
        "config_structured",
        near_valid_document(),
        |(text, intact)| {
            if parse_property(&text, intact)? {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    )?;
    // The checks on accepted configurations must not be vacuous.
    let accepted = accepted.into_inner();
    writeln!(
        std::io::stderr(),
        "config_structured: {accepted} documents accepted"
    )?;
    assert!(accepted > 0, "no generated document was accepted");
    Ok(())
}

/// A valid registry document of `entries` worktrees, as the CLI writes it.
fn registry_document() -> impl Strategy<Value = Vec<u8>> {
    let entry = (
        "[a-z]{1,6}",
        "[a-z]{1,6}",
        prop::option::of("[a-z/]{1,8}"),
        any::<bool>(),
        any::<u64>(),
        prop::collection::btree_map("[A-Z_]{1,8}", any::<u16>(), 0..3),
        prop::option::of("[a-z_]{1,12}"),
        prop::sample::select(vec!["creating", "ready", "removing"]),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(purpose, identifier, branch, flag, created, ports, database, phase, pid, start)| {
                let id = format!("{purpose}-{identifier}");
                let entry = serde_json::json!({
                    "id": id, "purpose": purpose, "identifier": identifier,
                    "branch": branch, "branch_created": flag,
                    "path": format!("/repo/worktrees/{id}"), "path_preexisting": !flag,
                    "created": created, "ports": ports, "database": database,
                    "phase": phase, "actor": {"pid": pid, "start_time": start},
                });
                (id, entry)
            },
        );
    prop::collection::vec(entry, 0..4).prop_map(|entries| {
        let entries: serde_json::Map<String, serde_json::Value> = entries.into_iter().collect();
        let document = serde_json::json!({"schema_version": 1, "data": {"entries": entries}});
        serde_json::to_vec_pretty(&document).unwrap_or_default()
    })
}

#[test]
fn the_worktree_registry_reads_or_fails_cleanly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = crate::state::open(dir.path())?;
    let path = store.path().to_owned();
    let contents = prop_oneof![
        4 => fuzz::damaged(registry_document()),
        1 => prop::collection::vec(any::<u8>(), 0..128),
    ];
    fuzz::run("cli_registry", contents, |bytes| {
        std::fs::write(&path, &bytes)?;
        match store.read() {
            Ok(document) => {
                // What `list`, `gc` and `doctor` do with every entry.
                for entry in document.entries.values() {
                    let _ = (entry.is_abandoned(), entry.phase.as_str());
                }
            }
            Err(error) => {
                let message = error.to_string();
                prop_assert!(
                    message.contains(&path.display().to_string()),
                    "the error does not name the file: {message}"
                );
            }
        }
        prop_assert_eq!(std::fs::read(&path)?, bytes, "reading changed the file");
        Ok(())
    })?;
    Ok(())
}
