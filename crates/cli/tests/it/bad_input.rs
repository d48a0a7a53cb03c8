//! The hostile-input corpus: every case runs the built CLI against a fresh
//! repository and must exit with its code (2 for usage and input errors, 1
//! for a bad environment or state such as a corrupt registry), print a
//! message naming the problem, never panic, never print a password back,
//! and leave nothing behind: no file or directory in the working tree, no
//! branch, no git worktree, no registry entry (a bad registry file stays
//! byte-for-byte as it was), no port lease and no database.
//!
//! All cases run, and every failure is reported at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use test_support::{GitRepo, TestResult};

use crate::{isolane, json, ok, output, repo_with_config};

/// The default configuration of a case: no database, for speed.
const NO_DB: &str = "[database]\nenabled = false\n";
/// The configuration of cases that run against the embedded server.
const DB: &str = "[database]\nenabled = true\n";
/// A database the SQL-injection payloads try to drop; it carries no owner
/// record, so isolane must never touch it.
const SENTINEL: &str = "isolane_bad_input_sentinel";
/// The statement every SQL payload tries to smuggle in.
const DROP: &str = "DROP DATABASE isolane_bad_input_sentinel";

/// One hostile input and what the CLI must answer.
struct Case {
    name: String,
    /// `isolane.toml` (committed).
    config: String,
    /// Bytes for `<git common dir>/isolane/registry.json`.
    registry: Option<Vec<u8>>,
    /// Further files (migrations), committed.
    files: Vec<(String, Vec<u8>)>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    code: i32,
    needle: String,
    /// Must appear in no output.
    secrets: Vec<String>,
    /// Runs against the embedded server: check that no database was made
    /// and that the sentinel survived.
    database: bool,
}

fn case(name: &str, args: &[&str], code: i32, needle: &str) -> Case {
    Case {
        name: name.to_owned(),
        config: NO_DB.to_owned(),
        registry: None,
        files: Vec::new(),
        env: Vec::new(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code,
        needle: needle.to_owned(),
        secrets: Vec::new(),
        database: false,
    }
}

impl Case {
    fn config(mut self, text: &str) -> Self {
        self.config = text.to_owned();
        self
    }
    fn db(mut self) -> Self {
        if self.config == NO_DB {
            self.config = DB.to_owned();
        }
        self.database = true;
        self
    }
    fn registry(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.registry = Some(bytes.into());
        self
    }
    fn file(mut self, path: &str, contents: &str) -> Self {
        self.files
            .push((path.to_owned(), contents.as_bytes().to_vec()));
        self
    }
    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    fn secret(mut self, secret: &str) -> Self {
        self.secrets.push(secret.to_owned());
        self
    }

    /// The worktree id a `create` case attempts.
    fn attempted_id(&self) -> Option<String> {
        if self.args.first().map(String::as_str) != Some("create") {
            return None;
        }
        let value = |flag: &str| {
            self.args.iter().enumerate().find_map(|(i, arg)| {
                if arg == flag {
                    self.args.get(i + 1).cloned()
                } else {
                    arg.strip_prefix(&format!("{flag}=")).map(str::to_owned)
                }
            })
        };
        Some(format!(
            "{}-{}",
            value("--purpose")?,
            value("--identifier")?
        ))
    }
}

/// `create` of a valid name, for cases where something else is bad.
fn create(identifier: &str) -> Vec<&str> {
    vec!["create", "--purpose", "test-bi", "--identifier", identifier]
}

fn create_with<'a>(identifier: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = create(identifier);
    args.extend_from_slice(extra);
    args
}

fn purpose(name: &str, purpose: &str) -> Case {
    case(
        name,
        &["create", "--purpose", purpose, "--identifier", "x"],
        2,
        "invalid purpose",
    )
}

fn identifier(name: &str, identifier: &str) -> Case {
    case(
        name,
        &["create", "--purpose", "test-bi", "--identifier", identifier],
        2,
        "invalid identifier",
    )
}

fn branch(name: &str, branch: &str, identifier: &str) -> Case {
    let flag = format!("--branch={branch}");
    case(
        name,
        &create_with(identifier, &[flag.as_str()]),
        2,
        "invalid branch",
    )
}

fn config(name: &str, text: &str, needle: &str) -> Case {
    let identifier = format!("cfg-{name}");
    case(name, &create(&identifier), 2, needle).config(text)
}

fn registry_case(name: &str, bytes: &[u8], args: &[&str], needle: &str) -> Case {
    case(name, args, 1, needle).registry(bytes)
}

/// A registry document holding one entry (given as JSON).
fn registry_with(key: &str, entry: serde_json::Value) -> Vec<u8> {
    let doc = serde_json::json!({"schema_version": 1, "data": {"entries": {key: entry}}});
    doc.to_string().into_bytes()
}

fn entry(id: &str, purpose: &str, identifier: &str, path: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "purpose": purpose, "identifier": identifier, "branch": null,
        "path": path, "created": 1, "ports": {}, "database": null, "phase": "ready",
        "actor": {"pid": 1, "start_time": 1}
    })
}

fn migrations(name: &str, args: &[&str], code: i32, needle: &str) -> Case {
    case(name, args, code, needle)
        .db()
        .config("[database]\nenabled = true\nmigrations = \"migrations\"\n")
}

fn corpus(embedded_url: &str, password: &str) -> Vec<Case> {
    let long = "a".repeat(300);
    let max = "b".repeat(64);
    let over = "c".repeat(65);
    let (eph_low, _) = ephemeral();
    let overlap = format!(
        "[ports]\nrange = [{}, {}]\n",
        eph_low.saturating_sub(100),
        eph_low.saturating_add(100)
    );
    let sql_purpose = format!("x\";{DROP};--");
    let sql_identifier = format!("x');{DROP};--");
    let sql_prefix = format!("testdb_\"; {DROP}; --");
    let dead_url = "postgres://app:s3cr3t-pw@127.0.0.1:1/postgres";
    let bad_db_url = format!(
        "{}/x%22%3B%20DROP%20DATABASE%20{SENTINEL}%3B%20--",
        embedded_url.trim_end_matches("/postgres")
    );
    let valid_registry = registry_with(
        "test-bi-ok",
        entry(
            "test-bi-ok",
            "test-bi",
            "ok",
            "/nonexistent/worktrees/test-bi-ok",
        ),
    );
    let truncated = &valid_registry[..valid_registry.len() / 2];

    vec![
        // Purposes and identifiers.
        purpose("purpose-dotdot", ".."),
        identifier("identifier-traversal", "../../etc"),
        identifier("identifier-slash", "a/b"),
        purpose("purpose-absolute", "/etc"),
        identifier("identifier-leading-dash", "-rf"),
        case(
            "identifier-dash-as-flag",
            &["create", "--purpose", "test-bi", "--identifier=-x"],
            2,
            "invalid identifier \"-x\": it starts with '-'",
        ),
        case(
            "branch-dash-as-flag",
            &create_with("br-flag", &["--branch", "-D"]),
            2,
            "invalid branch \"-D\": it starts with '-'",
        ),
        purpose("purpose-space", "te st"),
        purpose("purpose-single-quote", "it's"),
        identifier("identifier-double-quote", "a\"b"),
        purpose("purpose-semicolon", "test;rm -rf ~"),
        identifier("identifier-command-substitution", "$(touch pwned)"),
        identifier("identifier-backticks", "`touch pwned`"),
        identifier("identifier-newline", "a\nb"),
        identifier("identifier-tab", "a\tb"),
        purpose("purpose-accent", "café"),
        identifier("identifier-emoji", "rocket-🚀"),
        identifier("identifier-rtl-override", "abc\u{202e}gpj.exe"),
        purpose("purpose-hebrew", "בדיקה"),
        purpose("purpose-300-chars", &long),
        identifier("identifier-300-chars", &long),
        case(
            "id-too-long-combined",
            &["create", "--purpose", &max, "--identifier", &over],
            2,
            "too long",
        ),
        purpose("purpose-empty", ""),
        identifier("identifier-lock-suffix", "x.lock"),
        case(
            "port-name-with-space",
            &create_with("port-space", &["--port", "app port"]),
            2,
            "port name",
        ),
        case(
            "port-name-injection",
            &create_with("port-inject", &["--port", "A;touch pwned"]),
            2,
            "port name",
        ),
        // Branch names that are not valid refs.
        branch("branch-double-dot", "a..b", "br-dotdot"),
        branch("branch-lock-suffix", "x.lock", "br-lock"),
        branch("branch-leading-dash", "-x", "br-dash"),
        branch("branch-space", "a b", "br-space"),
        branch("branch-tilde", "a~1", "br-tilde"),
        branch("branch-caret", "a^", "br-caret"),
        branch("branch-colon", "a:b", "br-colon"),
        branch("branch-at-brace", "@{", "br-at"),
        branch("branch-trailing-slash", "feature/", "br-slash"),
        branch("branch-hidden-component", "feature/.hidden", "br-hidden"),
        branch("branch-backslash", "a\\b", "br-backslash"),
        branch("branch-glob", "a*b", "br-glob"),
        branch("branch-full-ref", "refs/heads/x", "br-ref"),
        branch("branch-newline", "a\nb", "br-newline"),
        branch("branch-300-chars", &long, "br-long"),
        case(
            "base-not-a-revision",
            &create_with("base", &["--base", "HEAD; touch pwned"]),
            2,
            "HEAD; touch pwned",
        ),
        // Malformed isolane.toml.
        config("syntax-error", "worktrees_dir = \n", "line 1"),
        config(
            "duplicate-key",
            "worktrees_dir = \"a\"\nworktrees_dir = \"b\"\n",
            "duplicate key",
        ),
        config(
            "duplicate-table",
            "[ports]\nnames = [\"A\"]\n[ports]\nnames = [\"B\"]\n",
            "duplicate key",
        ),
        config("type-worktrees-dir", "worktrees_dir = 5\n", "invalid type"),
        config(
            "type-port-names",
            "[ports]\nnames = \"APP_PORT\"\n",
            "invalid type",
        ),
        config(
            "type-enabled",
            "[database]\nenabled = \"yes\"\n",
            "invalid type",
        ),
        config("type-max-age", "[gc]\nmax_age = 5\n", "invalid type"),
        config(
            "type-hooks",
            "[hooks]\npost_create = \"make\"\n",
            "invalid type",
        ),
        config(
            "type-services",
            "[services]\nname = \"app\"\ncommand = \"true\"\n",
            "invalid type",
        ),
        config(
            "unknown-top-level",
            "colour = \"blue\"\n",
            "unknown field `colour`",
        ),
        config(
            "unknown-table",
            "[server]\nport = 1\n",
            "unknown field `server`",
        ),
        config(
            "unknown-in-ports",
            "[ports]\nrnage = [20000, 20100]\n",
            "unknown field `rnage`",
        ),
        config(
            "unknown-in-database",
            "[database]\nenabled = false\npassword = \"x\"\n",
            "unknown field `password`",
        ),
        config(
            "unknown-in-services",
            "[[services]]\nname = \"app\"\ncommand = \"true\"\nport = 1\n",
            "unknown field `port`",
        ),
        config(
            "unknown-in-hooks",
            "[hooks]\npost_crate = []\n",
            "unknown field `post_crate`",
        ),
        config(
            "unknown-in-gc",
            "[gc]\nmaxage = \"1h\"\n",
            "unknown field `maxage`",
        ),
        config(
            "range-reversed",
            "[ports]\nrange = [30000, 20000]\n",
            "inverted",
        ),
        config("range-empty", "[ports]\nrange = []\n", "two ports"),
        config("range-one-port", "[ports]\nrange = [20000]\n", "two ports"),
        config(
            "range-zero",
            "[ports]\nrange = [0, 2000]\n",
            "0 is not a port",
        ),
        config(
            "range-above-65535",
            "[ports]\nrange = [20000, 70000]\n",
            "70000 is not a port",
        ),
        config(
            "range-privileged",
            "[ports]\nrange = [80, 90]\n",
            "between 1024",
        ),
        config(
            "range-negative",
            "[ports]\nrange = [-1, 2000]\n",
            "-1 is not a port",
        ),
        config("range-ephemeral-overlap", &overlap, "ephemeral"),
        config(
            "port-names-duplicate",
            "[ports]\nnames = [\"APP_PORT\", \"APP_PORT\"]\n",
            "listed twice",
        ),
        config(
            "port-name-nul",
            "[ports]\nnames = [\"APP\\u0000PORT\"]\n",
            "environment variable name",
        ),
        config(
            "port-name-lowercase",
            "[ports]\nnames = [\"app_port\"]\n",
            "environment variable name",
        ),
        config(
            "port-names-empty",
            "[ports]\nnames = []\n",
            "at least one port name",
        ),
        config(
            "worktrees-dir-nul",
            "worktrees_dir = \"wt\\u0000x\"\n",
            "control characters",
        ),
        config(
            "worktrees-dir-traversal",
            "worktrees_dir = \"../outside\"\n",
            "inside the repository",
        ),
        config(
            "worktrees-dir-absolute",
            "worktrees_dir = \"/tmp/isolane-bad-input\"\n",
            "inside the repository",
        ),
        config(
            "worktrees-dir-in-git",
            "worktrees_dir = \".git/wt\"\n",
            "inside .git",
        ),
        config(
            "env-file-traversal",
            "env_file = \"../.env\"\n",
            "plain file name",
        ),
        config(
            "metadata-file-empty",
            "metadata_file = \"\"\n",
            "plain file name",
        ),
        config(
            "hook-nul",
            "[database]\nenabled = false\n[hooks]\npost_create = [\"echo a\\u0000b\"]\n",
            "hooks.post_create[0] contains a NUL",
        ),
        config(
            "service-missing-command",
            "[[services]]\nname = \"app\"\n",
            "missing field `command`",
        ),
        config(
            "service-empty-command",
            "[[services]]\nname = \"app\"\ncommand = \"  \"\n",
            "empty command",
        ),
        config(
            "service-bad-name",
            "[[services]]\nname = \"a b\"\ncommand = \"true\"\n",
            "service name",
        ),
        config(
            "service-defined-twice",
            "[[services]]\nname = \"app\"\ncommand = \"true\"\n\
             [[services]]\nname = \"app\"\ncommand = \"true\"\n",
            "defined twice",
        ),
        config(
            "service-ready-unknown-port",
            "[[services]]\nname = \"app\"\ncommand = \"true\"\nready = \"NOPE_PORT\"\n",
            "NOPE_PORT",
        ),
        config(
            "service-bad-timeout",
            "[[services]]\nname = \"app\"\ncommand = \"true\"\ntimeout = \"soon\"\n",
            "not a duration",
        ),
        config(
            "service-zero-timeout",
            "[[services]]\nname = \"app\"\ncommand = \"true\"\ntimeout = \"0s\"\n",
            "zero timeout",
        ),
        config(
            "gc-bad-duration",
            "[gc]\nmax_age = \"5 parsecs\"\n",
            "not a duration",
        ),
        config(
            "database-format-unknown",
            "[database]\nformat = \"flyway\"\n",
            "unknown variant",
        ),
        config(
            "database-url-nul",
            "[database]\nurl = \"postgres://u:s3cr3t-nul@h\\u0000/db\"\n",
            "contains a NUL character",
        )
        .secret("s3cr3t-nul"),
        // Registry files.
        registry_case("registry-empty", b"", &["list"], "is corrupt"),
        registry_case("registry-truncated", truncated, &["list"], "is corrupt"),
        registry_case(
            "registry-not-json",
            b"this is not json\n",
            &create("reg-notjson"),
            "is corrupt",
        ),
        registry_case(
            "registry-binary",
            b"\x00\xff\xfe{\"schema_version\"",
            &["show", "test-bi-ok"],
            "is corrupt",
        ),
        registry_case(
            "registry-array",
            b"[1, 2, 3]\n",
            &["remove", "test-bi-ok"],
            "is corrupt",
        ),
        registry_case(
            "registry-wrong-shape",
            br#"{"schema_version": 1, "data": {"entries": [1, 2]}}"#,
            &create("reg-shape"),
            "is corrupt",
        ),
        registry_case(
            "registry-no-schema-version",
            br#"{"data": {"entries": {}}}"#,
            &["gc"],
            "is corrupt",
        ),
        registry_case(
            "registry-newer-schema",
            br#"{"schema_version": 99, "data": {"entries": {}, "future": true}}"#,
            &create("reg-newer"),
            "newer than",
        ),
        registry_case(
            "registry-nul-in-id",
            &registry_with(
                "test-bi-a\u{0}b",
                entry(
                    "test-bi-a\u{0}b",
                    "test-bi",
                    "a\u{0}b",
                    "/w/test-bi-a\u{0}b",
                ),
            ),
            &["list"],
            "is corrupt",
        ),
        registry_case(
            "registry-path-escapes",
            &registry_with("test-bi-ok", entry("test-bi-ok", "test-bi", "ok", "/etc")),
            &["remove", "--force", "test-bi-ok"],
            "is corrupt",
        ),
        // Well-formed, but outside this repository's worktrees dir: run and
        // remove must not write, hook or delete there.
        registry_case(
            "registry-path-elsewhere-remove",
            &registry_with(
                "test-bi-ok",
                entry(
                    "test-bi-ok",
                    "test-bi",
                    "ok",
                    "/tmp/isolane-elsewhere/test-bi-ok",
                ),
            ),
            &["remove", "--force", "test-bi-ok"],
            "refusing to touch it",
        ),
        registry_case(
            "registry-path-elsewhere-run",
            &registry_with(
                "test-bi-ok",
                entry(
                    "test-bi-ok",
                    "test-bi",
                    "ok",
                    "/tmp/isolane-elsewhere/test-bi-ok",
                ),
            ),
            &["run", "test-bi-ok", "--", "true"],
            "refusing to touch it",
        ),
        registry_case(
            "registry-traversal-id",
            &registry_with(
                "../../etc",
                entry("../../etc", "..", "/etc", "/w/../../etc"),
            ),
            &["gc", "--max-age", "0s"],
            "is corrupt",
        ),
        // Database names designed for SQL injection, on the real server.
        purpose("sql-purpose", &sql_purpose).db(),
        identifier("sql-identifier", &sql_identifier).db(),
        case(
            "sql-db-reset-id",
            &["db", "reset", &sql_purpose],
            2,
            "no worktree",
        )
        .db(),
        case(
            "sql-db-clean-prefix",
            &["db", "clean", "--prefix", &sql_prefix],
            2,
            "invalid --prefix",
        )
        .db(),
        config(
            "sql-config-prefix",
            &format!("[database]\nprefix = {sql_prefix:?}\n"),
            "database prefix",
        )
        .db(),
        migrations(
            "sql-migrate-id",
            &["db", "migrate", &sql_identifier, "--to", "latest"],
            2,
            "no worktree",
        )
        .file("migrations/1_one.up.sql", "CREATE TABLE one (x int);")
        .file("migrations/1_one.down.sql", "DROP TABLE one;"),
        migrations(
            "sql-migrate-target",
            &[
                "db",
                "migrate",
                "--url",
                &bad_db_url,
                "--to",
                &format!("1; {DROP}"),
            ],
            2,
            "no such migration",
        )
        .file("migrations/1_one.up.sql", "CREATE TABLE one (x int);")
        .file("migrations/1_one.down.sql", "DROP TABLE one;")
        .secret(password),
        migrations(
            "sql-migrate-url-database",
            &["db", "migrate", "--url", &bad_db_url, "--to", "latest"],
            1,
            "cannot connect",
        )
        .file("migrations/1_one.up.sql", "CREATE TABLE one (x int);")
        .file("migrations/1_one.down.sql", "DROP TABLE one;")
        .secret(password),
        migrations(
            "sql-check-rollback-from",
            &["db", "check-rollback", "--from", &format!("1'; {DROP}; --")],
            2,
            "no such migration",
        )
        .file("migrations/1_one.up.sql", "CREATE TABLE one (x int);")
        .file("migrations/1_one.down.sql", "DROP TABLE one;"),
        // Migration directories.
        migrations(
            "migrations-sqlx-duplicate",
            &["db", "check-rollback"],
            2,
            "duplicate migration version",
        )
        .file("migrations/1_a.sql", "CREATE TABLE a (x int);")
        .file("migrations/1_b.sql", "CREATE TABLE b (x int);"),
        migrations(
            "migrations-diesel-duplicate",
            &create("mig-dup"),
            2,
            "duplicate migration version",
        )
        .file(
            "migrations/2024-01-01-000000_a/up.sql",
            "CREATE TABLE a (x int);",
        )
        .file("migrations/2024-01-01-000000_a/down.sql", "DROP TABLE a;")
        .file(
            "migrations/20240101000000_b/up.sql",
            "CREATE TABLE b (x int);",
        )
        .file("migrations/20240101000000_b/down.sql", "DROP TABLE b;"),
        migrations(
            "migrations-sqlx-missing-down",
            &["db", "check-rollback"],
            2,
            "has no down script",
        )
        .file("migrations/1_a.up.sql", "CREATE TABLE a (x int);"),
        migrations(
            "migrations-sqlx-missing-up",
            &["db", "migrate", "--url", dead_url, "--to", "latest"],
            2,
            "has no up script",
        )
        .file("migrations/1_a.down.sql", "DROP TABLE a;")
        .secret("s3cr3t-pw"),
        migrations(
            "migrations-diesel-missing-down",
            &["db", "check-rollback", "--json"],
            2,
            "has no down script, so its rollback cannot be checked",
        )
        .file(
            "migrations/2024-01-01-000000_a/up.sql",
            "CREATE TABLE a (x int);",
        ),
        migrations(
            "migrations-sqlx-bad-version",
            &["db", "check-rollback"],
            2,
            // Not a migration by sqlx's rule (its version is no integer),
            // nor by diesel's: the directory holds none.
            "no migrations found",
        )
        .file("migrations/abc_a.sql", "CREATE TABLE a (x int);"),
        migrations(
            "migrations-diesel-no-version",
            &create("mig-nover"),
            2,
            "must start with a version",
        )
        .file("migrations/_a/up.sql", "CREATE TABLE a (x int);"),
        migrations(
            "migrations-diesel-not-a-migration",
            &["db", "check-rollback"],
            2,
            "has no up.sql",
        )
        .file(
            "migrations/2024-01-01-000000_a/up.sql",
            "CREATE TABLE a (x int);",
        )
        .file("migrations/2024-01-02-000000_b/README", "no scripts here"),
        migrations(
            "migrations-bad-metadata",
            &["db", "check-rollback"],
            2,
            "invalid migration metadata",
        )
        .file(
            "migrations/2024-01-01-000000_a/up.sql",
            "CREATE TABLE a (x int);",
        )
        .file("migrations/2024-01-01-000000_a/down.sql", "DROP TABLE a;")
        .file(
            "migrations/2024-01-01-000000_a/metadata.toml",
            "run_in_transaction = \"sometimes\"\n",
        ),
        migrations(
            "migrations-mixed-formats",
            &["db", "check-rollback"],
            2,
            "holds both",
        )
        .file(
            "migrations/2024-01-01-000000_a/up.sql",
            "CREATE TABLE a (x int);",
        )
        .file("migrations/2_b.sql", "CREATE TABLE b (x int);"),
        migrations(
            "migrations-empty-dir",
            &create("mig-empty"),
            2,
            "no migrations found",
        )
        .file("migrations/.keep", ""),
        migrations(
            "migrations-missing-dir",
            &["db", "check-rollback"],
            2,
            "unusable migrations directory",
        ),
        migrations(
            "migrations-dir-is-a-file",
            &create("mig-file"),
            2,
            "unusable migrations directory",
        )
        .file("migrations", "not a directory"),
        case(
            "migrations-dir-flag-missing",
            &["db", "check-rollback", "--dir", "does/not/exist"],
            2,
            "unusable migrations directory",
        ),
        // Passwords in database URLs are never printed back.
        case(
            "url-password-connection-refused",
            &create("pw-refused"),
            1,
            "127.0.0.1:1",
        )
        .config(&format!("[database]\nurl = {dead_url:?}\n"))
        .secret("s3cr3t-pw")
        .db(),
        case(
            "url-password-invalid-url",
            &create("pw-invalid"),
            2,
            "is not a PostgreSQL connection URL",
        )
        .config("[database]\nurl = \"postgres://app:s3cr3t-bad@host:notaport/db\"\n")
        .secret("s3cr3t-bad")
        .db(),
        // A password may hold `/`, `?` and `#`: the client reads the user
        // info up to the first `@`, and so must the masking.
        case(
            "url-password-with-url-characters",
            &create("pw-chars"),
            2,
            "is not a PostgreSQL connection URL",
        )
        .config("[database]\nurl = \"postgres://app:s3/cr?et#x@host:notaport/db\"\n")
        .secret("s3/cr?et#x")
        .secret("cr?et")
        .db(),
        case(
            "url-password-in-query",
            &create("pw-query"),
            1,
            "127.0.0.1:1",
        )
        .config("[database]\nurl = \"postgres://app@127.0.0.1:1/postgres?password=s3cr3t-query\"\n")
        .secret("s3cr3t-query")
        .db(),
        case(
            "url-password-pg-isolate-url",
            &create("pw-env"),
            1,
            "127.0.0.1:1",
        )
        .env(
            "PG_ISOLATE_URL",
            "postgres://app:s3cr3t-env@127.0.0.1:1/postgres",
        )
        .secret("s3cr3t-env")
        .db(),
        case(
            "url-password-check-rollback",
            &[
                "db",
                "check-rollback",
                "--url",
                dead_url,
                "--dir",
                "migrations",
            ],
            1,
            "127.0.0.1:1",
        )
        .file("migrations/1_one.up.sql", "CREATE TABLE one (x int);")
        .file("migrations/1_one.down.sql", "DROP TABLE one;")
        .secret("s3cr3t-pw"),
        case(
            "url-password-database-url-env",
            &create("pw-dburl"),
            1,
            "127.0.0.1:1",
        )
        .config(&format!("[database]\nurl = {dead_url:?}\n"))
        .env(
            "DATABASE_URL",
            "postgres://app:s3cr3t-dburl@127.0.0.1:1/postgres",
        )
        .secret("s3cr3t-dburl")
        .secret("s3cr3t-pw")
        .db(),
        // Other arguments.
        case(
            "show-traversal-id",
            &["show", "../../etc"],
            2,
            "no worktree",
        ),
        case("env-substitution-id", &["env", "$(id)"], 2, "no worktree"),
        case(
            "run-unknown-id",
            &["run", "test-nope", "--", "touch", "pwned"],
            2,
            "no worktree",
        ),
        case("remove-traversal-id", &["remove", ".."], 2, "no worktree"),
        case(
            "gc-flag-bad-duration",
            &["gc", "--max-age", "soon"],
            2,
            "duration",
        ),
        case(
            "gc-negative-duration",
            &["gc", "--max-age=-5s"],
            2,
            "duration",
        ),
        case(
            "unknown-subcommand",
            &["frobnicate"],
            2,
            "unrecognized subcommand",
        ),
        case(
            "migrate-needs-a-target",
            &["db", "migrate", "--to", "latest"],
            2,
            "required arguments",
        ),
    ]
}

/// The kernel's ephemeral port range.
fn ephemeral() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "49152 65535".to_owned());
    let mut fields = text.split_whitespace().filter_map(|f| f.parse().ok());
    (
        fields.next().unwrap_or(49152),
        fields.next().unwrap_or(65535),
    )
}

/// Every path under `dir` except `.git`, the worktrees dir itself and
/// an empty `worktrees/.trash`.
fn tree(dir: &Path) -> TestResult<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path == dir.join(".git") {
                continue;
            }
            if std::fs::symlink_metadata(&path)?.is_dir() {
                pending.push(path.clone());
            }
            // Opening a repository makes its (git-excluded) worktrees dir,
            // and a rolled-back create may leave worktree-core's empty
            // `.trash` in it; anything else counts.
            let empty_trash =
                path == dir.join("worktrees/.trash") && std::fs::read_dir(&path)?.next().is_none();
            if path != dir.join("worktrees") && !empty_trash {
                out.insert(path.strip_prefix(dir)?.to_owned());
            }
        }
    }
    Ok(out)
}

/// Branches and git worktrees: what a refused create must not leave.
fn git_state(repo: &GitRepo) -> TestResult<String> {
    Ok(format!(
        "{}\n{}",
        repo.git(["for-each-ref", "--format=%(refname)", "refs/heads"])?,
        repo.git(["worktree", "list", "--porcelain"])?
    ))
}

fn sentinel_exists(server: &pg_isolate::Server) -> TestResult<bool> {
    let mut client = server.admin_client()?;
    let rows = client.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&SENTINEL])?;
    Ok(!rows.is_empty())
}

/// Runs one case; returns what was wrong with the answer.
fn run_case(case: &Case, neutral: &Path, server: &pg_isolate::Server) -> TestResult<Vec<String>> {
    let repo = repo_with_config(&case.config)?;
    for (path, contents) in &case.files {
        repo.write(path, contents)?;
    }
    repo.commit_all("corpus files")?;
    let registry = repo.path().join(".git/isolane/registry.json");
    if let Some(bytes) = &case.registry {
        std::fs::create_dir_all(registry.parent().ok_or("no parent")?)?;
        std::fs::write(&registry, bytes)?;
    }
    let tree_before = tree(repo.path())?;
    let git_before = git_state(&repo)?;

    let out = isolane(repo.path())
        .args(&case.args)
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(case.code) {
        problems.push(format!(
            "exit {:?}, expected {}",
            out.status.code(),
            case.code
        ));
    }
    if !stderr.contains(&case.needle) {
        problems.push(format!("stderr lacks {:?}", case.needle));
    }
    if stderr.contains("panicked") {
        problems.push("panicked".to_owned());
    }
    for secret in &case.secrets {
        if stdout.contains(secret) || stderr.contains(secret) {
            problems.push(format!("printed the password {secret:?}"));
        }
    }

    let tree_after = tree(repo.path())?;
    if tree_after != tree_before {
        let created: Vec<_> = tree_after.difference(&tree_before).collect();
        let deleted: Vec<_> = tree_before.difference(&tree_after).collect();
        problems.push(format!(
            "the working tree changed: created {created:?}, deleted {deleted:?}"
        ));
    }
    if git_state(&repo)? != git_before {
        problems.push("a branch or git worktree was created".to_owned());
    }
    match &case.registry {
        Some(bytes) if std::fs::read(&registry)? != *bytes => {
            problems.push("the bad registry file was modified".to_owned());
        }
        Some(_) => {}
        None if registry.exists() => {
            let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&registry)?)?;
            if doc["data"]["entries"]
                .as_object()
                .is_none_or(|e| !e.is_empty())
            {
                problems.push(format!("a registry entry was left: {doc}"));
            }
        }
        None => {}
    }
    if let Some(id) = case.attempted_id() {
        let suffix = format!("-{id}");
        let leases = crate::leases(neutral)?;
        if let Some((owner, _)) = leases.iter().find(|(owner, _)| owner.ends_with(&suffix)) {
            problems.push(format!("a port lease was left: {owner}"));
        }
        if case.database {
            let rows = json(neutral, &["db", "list"])?;
            let left = rows.as_array().into_iter().flatten().find(|row| {
                row["label"]
                    .as_str()
                    .is_some_and(|label| label.ends_with(&suffix))
            });
            if let Some(row) = left {
                problems.push(format!("a database was left: {row}"));
            }
        }
    }
    if case.database && !sentinel_exists(server)? {
        problems.push(format!("the sentinel database {SENTINEL} was dropped"));
    }
    if !problems.is_empty() {
        problems.push(format!("stdout: {stdout}\nstderr: {stderr}"));
    }
    Ok(problems)
}

/// The embedded server, with the sentinel database in place.
fn server_with_sentinel() -> TestResult<pg_isolate::Server> {
    let server = pg_isolate::Server::connect(crate::server_options())?;
    if !sentinel_exists(&server)? {
        let created = server
            .admin_client()?
            .batch_execute(&format!("CREATE DATABASE \"{SENTINEL}\""));
        // A concurrent run may have created it meanwhile.
        if created.is_err() && !sentinel_exists(&server)? {
            created?;
        }
    }
    Ok(server)
}

/// The password in a URL (between `user:` and `@`).
fn password_of(url: &str) -> TestResult<String> {
    let authority = url.split("://").nth(1).ok_or("no scheme")?;
    let userinfo = authority.split('@').next().ok_or("no userinfo")?;
    Ok(userinfo.split(':').nth(1).ok_or("no password")?.to_owned())
}

#[test]
fn the_hostile_input_corpus_is_refused_and_leaves_nothing() -> TestResult {
    let server = server_with_sentinel()?;
    let url = server.url("postgres");
    let password = password_of(&url)?;
    let cases = corpus(&url, &password);
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    eprintln!("{} hostile-input cases", cases.len());

    let neutral = tempfile::tempdir()?;
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while let Some(case) = cases.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let problems = match run_case(case, neutral.path(), &server) {
                        Ok(problems) => problems,
                        Err(error) => vec![format!("the harness failed: {error}")],
                    };
                    if !problems.is_empty() {
                        let report = format!(
                            "case {} ({:?}):\n  {}",
                            case.name,
                            case.args,
                            problems.join("\n  ")
                        );
                        failures
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(report);
                    }
                }
            });
        }
    });
    let failures = failures
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} hostile-input cases failed:\n\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n\n")
        )
        .into());
    }
    Ok(())
}

/// Every command that sees a password-carrying database URL: the password
/// appears only where it is the point (`.env.test`, and `isolane env`, whose
/// output is meant for `eval`), never in results, listings, reports or
/// errors.
#[test]
fn a_database_password_is_never_printed_back() -> TestResult {
    let server = server_with_sentinel()?;
    let url = server.url("postgres");
    let password = password_of(&url)?;
    let repo = repo_with_config(&format!(
        "[database]\nenabled = true\nurl = {url:?}\n[ports]\nnames = [\"APP_PORT\"]\n"
    ))?;
    let root = repo.path();
    let id = "test-bi-secret";
    let commands: &[&[&str]] = &[
        &["create", "--purpose", "test-bi", "--identifier", "secret"],
        &["list"],
        &["list", "--json"],
        &["show", id],
        &["show", id, "--json"],
        &["doctor"],
        &["doctor", "--json"],
        &["db", "list"],
        &["db", "list", "--json"],
        &["db", "list", "--orphans"],
        &["db", "reset", id],
        &["run", id, "--", "true"],
        &["run", id, "--", "false"],
        &["show", "test-bi-nope"],
        &["create", "--purpose", "test-bi", "--identifier", "secret"],
        &[
            "create",
            "--purpose",
            "test-bi",
            "--identifier",
            "secret2",
            "--json",
        ],
        &["remove", "test-bi-secret2", "--json"],
    ];
    for args in commands {
        let out = output(root, args)?;
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains(&password),
                "isolane {args:?} printed the password on {stream}: {text}"
            );
        }
    }
    // Where the password is the point: the env file and `env`.
    let env_file = std::fs::read_to_string(root.join("worktrees").join(id).join(".env.test"))?;
    assert!(env_file.contains(&password), "tests need a working URL");
    let env = isolane(root).args(["env", id]).output()?;
    assert!(String::from_utf8_lossy(&env.stdout).contains(&password));
    assert!(!String::from_utf8_lossy(&env.stderr).contains(&password));
    ok(root, &["remove", id])?;
    Ok(())
}

#[test]
fn a_create_over_an_existing_directory_never_deletes_it() -> TestResult {
    let repo = repo_with_config(NO_DB)?;
    let existing = repo.path().join("worktrees/test-pre-x");
    std::fs::create_dir_all(&existing)?;
    std::fs::write(existing.join("work.txt"), "someone's work")?;
    let out = output(
        repo.path(),
        &["create", "--purpose", "test-pre", "--identifier", "x"],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(existing.join("work.txt"))?,
        "someone's work"
    );
    assert_eq!(json(repo.path(), &["list"])?, serde_json::json!([]));
    Ok(())
}
