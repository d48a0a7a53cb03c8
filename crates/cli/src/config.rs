//! `isolane.toml`: the project configuration, all of it optional.
//!
//! Unknown keys and bad values are errors that name the key and the line:
//! validation happens inside deserialization, so the `toml` crate attaches
//! the position of the offending value to every message.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// The file name looked up at the repository root.
pub(crate) const FILE_NAME: &str = "isolane.toml";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    #[serde(deserialize_with = "relative_dir")]
    pub(crate) worktrees_dir: PathBuf,
    #[serde(deserialize_with = "file_name")]
    pub(crate) env_file: String,
    #[serde(deserialize_with = "file_name")]
    pub(crate) metadata_file: String,
    pub(crate) ports: Ports,
    pub(crate) database: Database,
    #[serde(deserialize_with = "services")]
    pub(crate) services: Vec<Service>,
    pub(crate) hooks: Hooks,
    pub(crate) gc: Gc,
    pub(crate) run: Run,
    pub(crate) worktrees: Worktrees,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            worktrees_dir: PathBuf::from("worktrees"),
            env_file: ".env.test".to_owned(),
            metadata_file: ".worktree-metadata.json".to_owned(),
            ports: Ports::default(),
            database: Database::default(),
            services: Vec::new(),
            hooks: Hooks::default(),
            gc: Gc::default(),
            run: Run::default(),
            worktrees: Worktrees::default(),
        }
    }
}

/// `[ports]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Ports {
    #[serde(deserialize_with = "port_names")]
    pub(crate) names: Vec<String>,
    #[serde(deserialize_with = "port_range")]
    pub(crate) range: Option<(u16, u16)>,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            names: vec!["APP_PORT".to_owned(), "API_PORT".to_owned()],
            range: None,
        }
    }
}

impl Ports {
    /// Why the configured range cannot serve on this host: it overlaps the
    /// kernel's ephemeral range. Checked where ports are leased (`create`),
    /// not at load: a config written on another host must not stop
    /// `remove`, `gc` or `doctor` from cleaning up here.
    pub(crate) fn host_problem(&self) -> Option<String> {
        let (low, high) = self.range?;
        let ephemeral = port_alloc::ephemeral_range();
        (low <= *ephemeral.end() && *ephemeral.start() <= high).then(|| {
            format!(
                "isolane.toml: ports.range [{low}, {high}] overlaps the kernel's ephemeral \
                 port range {}-{} (/proc/sys/net/ipv4/ip_local_port_range), whose ports any \
                 outgoing connection may take; choose a range outside it",
                ephemeral.start(),
                ephemeral.end()
            )
        })
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Database {
    pub(crate) enabled: bool,
    #[serde(deserialize_with = "database_url")]
    pub(crate) url: Option<String>,
    #[serde(deserialize_with = "prefix")]
    pub(crate) prefix: String,
    pub(crate) migrations: Option<PathBuf>,
    pub(crate) format: MigrationFormat,
    /// How many templates to keep on the server (least recently used out).
    pub(crate) template_budget: usize,
    /// How much disk (MiB) the kept templates may use together.
    pub(crate) template_budget_mb: u64,
    /// `[database.template]`: a template built by the project's own command.
    pub(crate) template: Option<TemplateCommand>,
    /// Ready clones kept per template for `isolane db lease` (0: none).
    pub(crate) lease_pool: usize,
}

/// `[database.template]`: the template is whatever `command` leaves in the
/// database it is pointed at; its key is the command and the content of
/// every file `inputs` match in the worktree being created.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateCommand {
    #[serde(deserialize_with = "command")]
    pub(crate) command: String,
    #[serde(default, deserialize_with = "input_globs")]
    pub(crate) inputs: Vec<String>,
}

/// `[run]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Run {
    /// Activate the worktree's (or the main worktree's) `.venv/` for `run`
    /// and services.
    pub(crate) venv: bool,
}

impl Default for Run {
    fn default() -> Self {
        Self { venv: true }
    }
}

impl Default for Database {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            prefix: "testdb_".to_owned(),
            migrations: None,
            format: MigrationFormat::Auto,
            template_budget: pg_isolate::TemplateBudget::default().max_templates,
            template_budget_mb: pg_isolate::TemplateBudget::default().max_bytes >> 20,
            template: None,
            lease_pool: 2,
        }
    }
}

/// `database.format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MigrationFormat {
    #[default]
    Auto,
    Diesel,
    Sqlx,
}

/// One `[[services]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) command: String,
    /// A port name to wait for, or a command that must succeed.
    pub(crate) ready: Option<String>,
    #[serde(default = "default_service_timeout", deserialize_with = "duration")]
    pub(crate) timeout: Duration,
}

fn default_service_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[hooks]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Hooks {
    pub(crate) post_create: Vec<String>,
    pub(crate) pre_remove: Vec<String>,
    /// Run in the worktree after every `db reset`.
    pub(crate) post_reset: Vec<String>,
}

/// `[gc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Gc {
    pub(crate) purpose_prefix: String,
    #[serde(deserialize_with = "duration")]
    pub(crate) max_age: Duration,
}

impl Default for Gc {
    fn default() -> Self {
        Self {
            purpose_prefix: "test-".to_owned(),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[worktrees]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Worktrees {
    /// How many removed worktrees are kept warm for the next create.
    pub(crate) pool: usize,
    /// gitignore-style patterns of the main worktree's ignored entries
    /// that a new worktree gets a copy of (with `.worktreeinclude`'s).
    #[serde(deserialize_with = "copy_patterns")]
    pub(crate) copy: Vec<String>,
    /// Initialise the submodules of a new worktree (recursively); by
    /// default they are left uninitialised, as `git worktree add` does.
    pub(crate) submodules: bool,
}

fn copy_patterns<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let patterns = Vec::<String>::deserialize(deserializer)?;
    if let Some(bad) = patterns
        .iter()
        .find(|p| p.trim().is_empty() || p.chars().any(char::is_control))
    {
        return Err(D::Error::custom(format!(
            "copy pattern {bad:?} must be a non-empty gitignore-style pattern on one line"
        )));
    }
    Ok(patterns)
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The migrations directory (`database.migrations` or `--dir`) cannot
    /// be used as it is: missing, not a directory, or not a valid set of
    /// migrations.
    #[error("unusable migrations directory {dir}")]
    Migrations {
        dir: PathBuf,
        #[source]
        source: pg_isolate::MigrateError,
    },
}

impl Config {
    /// Loads `isolane.toml` from `root`, or the defaults when it is absent.
    pub(crate) fn load(root: &Path) -> Result<Self, ConfigError> {
        let path = root.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Self::parse(&text).map_err(|message| ConfigError::Invalid { path, message })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses the text of a configuration file.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        // The message quotes the offending line, which may hold a
        // connection URL: mask every password in it.
        let config: Self =
            toml::from_str(text).map_err(|error| redact_urls(error.to_string().trim_end()))?;
        // A NUL cannot reach a path, a process argument or a connection
        // string; refuse it wherever it hides, naming the key.
        if let Ok(table) = text.parse::<toml::Table>()
            && let Some(key) = find_nul(&toml::Value::Table(table), "")
        {
            return Err(format!("{key} contains a NUL character"));
        }
        if config.database.migrations.is_some() && config.database.template.is_some() {
            return Err(
                "database.migrations and database.template are both set; a template comes \
                 either from a migrations directory (diesel, sqlx) or from a command: keep one"
                    .to_owned(),
            );
        }
        if let Some(service) = config.services.iter().find(|s| {
            s.ready.as_deref().is_some_and(|ready| {
                looks_like_port_name(ready) && !config.ports.names.iter().any(|n| n == ready)
            })
        }) {
            return Err(format!(
                "services.{}.ready names port {:?}, which is not in ports.names ({})",
                service.name,
                service.ready.as_deref().unwrap_or_default(),
                config.ports.names.join(", ")
            ));
        }
        Ok(config)
    }
}

/// `text` with the password of every `scheme://user:password@` masked.
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        let end = rest[start..]
            // Not at `/`, `?` or `#`: a password may hold them.
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
            .map_or(rest.len(), |i| start + i);
        out.push_str(&pg_isolate::redact_url(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The dotted key of the first string under `value` that holds a NUL.
fn find_nul(value: &toml::Value, at: &str) -> Option<String> {
    match value {
        toml::Value::String(text) => text.contains('\0').then(|| at.to_owned()),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(item, &format!("{at}[{i}]"))),
        toml::Value::Table(table) => table.iter().find_map(|(key, item)| {
            let key_at = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            if key.contains('\0') {
                return Some(key_at);
            }
            find_nul(item, &key_at)
        }),
        _ => None,
    }
}

/// A `ready` value of upper-case letters, digits and `_` is a port name;
/// anything else is a command.
pub(crate) fn looks_like_port_name(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !value.starts_with(|c: char| c.is_ascii_digit())
}

/// Whether `value` could be a database name isolane makes (or a prefix of
/// one): 1-63 ASCII letters, digits, `_` and `-`, nothing to quote.
pub(crate) fn looks_like_database_name(value: &str) -> bool {
    (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn relative_dir<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let raw = String::deserialize(deserializer)?;
    let path = PathBuf::from(&raw);
    let inside = !raw.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(D::Error::custom(format!(
            "{raw:?} must be a relative directory inside the repository (no `..`, not absolute)"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(D::Error::custom(format!(
            "{raw:?} must not contain control characters (NUL, newline, tab, ...)"
        )));
    }
    let in_git_dir = path
        .components()
        .find(|component| !matches!(component, Component::CurDir))
        .is_some_and(|first| first.as_os_str().eq_ignore_ascii_case(".git"));
    if in_git_dir {
        return Err(D::Error::custom(format!(
            "{raw:?} is inside .git; worktrees must not go into git's own directory"
        )));
    }
    Ok(path)
}

/// A shell command: not empty.
fn command<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = String::deserialize(deserializer)?;
    if raw.trim().is_empty() {
        return Err(D::Error::custom("the command is empty"));
    }
    Ok(raw)
}

/// Globs relative to the worktree: valid patterns, never absolute or
/// reaching out of it with `..`.
fn input_globs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let globs = Vec::<String>::deserialize(deserializer)?;
    for raw in &globs {
        let escapes = raw.starts_with('/')
            || Path::new(raw)
                .components()
                .any(|c| matches!(c, Component::ParentDir));
        if raw.is_empty() || escapes {
            return Err(D::Error::custom(format!(
                "input {raw:?} must be a glob relative to the worktree (no `..`, not absolute)"
            )));
        }
        if let Err(error) = glob::Pattern::new(raw) {
            return Err(D::Error::custom(format!(
                "input {raw:?} is not a glob: {error}"
            )));
        }
    }
    Ok(globs)
}

fn file_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = String::deserialize(deserializer)?;
    if raw.is_empty()
        || raw == "."
        || raw == ".."
        || raw.eq_ignore_ascii_case(".git")
        || raw.contains('/')
        || raw.chars().any(char::is_control)
    {
        return Err(D::Error::custom(format!(
            "{raw:?} must be a plain file name"
        )));
    }
    Ok(raw)
}

fn port_names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    if names.is_empty() {
        return Err(D::Error::custom(
            "list at least one port name (every worktree leases its ports by name)",
        ));
    }
    let mut seen = BTreeSet::new();
    for name in &names {
        if !looks_like_port_name(name) {
            return Err(D::Error::custom(format!(
                "port name {name:?} must be an environment variable name (A-Z, 0-9, _)"
            )));
        }
        if !seen.insert(name) {
            return Err(D::Error::custom(format!(
                "port name {name:?} is listed twice"
            )));
        }
    }
    Ok(names)
}

fn port_range<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<(u16, u16)>, D::Error> {
    let bounds = Vec::<i64>::deserialize(deserializer)?;
    let [low, high] = bounds[..] else {
        return Err(D::Error::custom("the range must be two ports, [low, high]"));
    };
    let port = |value: i64| {
        u16::try_from(value)
            .ok()
            .filter(|&p| p >= 1024)
            .ok_or_else(|| {
                D::Error::custom(format!("{value} is not a port between 1024 and 65535"))
            })
    };
    let (low, high) = (port(low)?, port(high)?);
    if low > high {
        return Err(D::Error::custom(format!(
            "the range [{low}, {high}] is inverted"
        )));
    }
    Ok(Some((low, high)))
}

/// A connection URL the PostgreSQL client understands; the message shows
/// it with the password masked.
fn database_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let raw = String::deserialize(deserializer)?;
    let redacted = pg_isolate::redact_url(&raw);
    if raw.contains('\0') {
        return Err(D::Error::custom(format!(
            "database.url {redacted:?} contains a NUL character"
        )));
    }
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err(D::Error::custom(format!(
            "database.url {redacted:?} must be a postgres:// or postgresql:// URL"
        )));
    }
    if raw.parse::<postgres::Config>().is_err() {
        return Err(D::Error::custom(format!(
            "database.url {redacted:?} is not a PostgreSQL connection URL"
        )));
    }
    Ok(Some(raw))
}

fn prefix<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = String::deserialize(deserializer)?;
    let valid = !raw.is_empty()
        && raw.len() <= 20
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(D::Error::custom(format!(
            "database prefix {raw:?} must be 1-20 characters of a-z, 0-9 and _, starting with a letter"
        )));
    }
    Ok(raw)
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(deserializer)?;
    humantime::parse_duration(&raw).map_err(|error| {
        D::Error::custom(format!(
            "{raw:?} is not a duration like \"30s\" or \"24h\": {error}"
        ))
    })
}

/// Whether `name` can name a service (and its log file): letters, digits,
/// `-` and `_`.
pub(crate) fn looks_like_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn services<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Service>, D::Error> {
    let services = Vec::<Service>::deserialize(deserializer)?;
    let mut seen = BTreeSet::new();
    for service in &services {
        if !looks_like_service_name(&service.name) {
            return Err(D::Error::custom(format!(
                "service name {:?} must be letters, digits, - and _",
                service.name
            )));
        }
        if !seen.insert(&service.name) {
            return Err(D::Error::custom(format!(
                "service {:?} is defined twice",
                service.name
            )));
        }
        if service.command.trim().is_empty() {
            return Err(D::Error::custom(format!(
                "service {:?} has an empty command",
                service.name
            )));
        }
        if service.timeout.is_zero() {
            return Err(D::Error::custom(format!(
                "service {:?} has a zero timeout; it could never become ready",
                service.name
            )));
        }
    }
    Ok(services)
}

/// The commented configuration `isolane init` writes.
pub(crate) const TEMPLATE: &str = r#"# isolane.toml — every key is optional; the values shown are the defaults.

# Where test worktrees go, relative to the repository root.
worktrees_dir = "worktrees"
# Written into each worktree: KEY=VALUE lines (`export $(cat .env.test | xargs)`).
env_file = ".env.test"
# Written into each worktree for test code to read (database, ports, ...).
metadata_file = ".worktree-metadata.json"

[ports]
# One port per name is leased for each worktree, unique on this host.
names = ["APP_PORT", "API_PORT"]
# range = [20000, 29999]   # default: a range outside the kernel's ephemeral ports

[database]
enabled = true
# url = "postgres://user:pass@host:5432/postgres"  # absent: the embedded server
prefix = "testdb_"
# migrations = "migrations"                        # absent: an empty database
format = "auto"                                    # auto | diesel | sqlx
# Any other migration tool: the template is what its own command leaves in
# the database (DATABASE_URL and PG* point at it), rebuilt when the command
# or a file the inputs match (in the worktree being created) changes.
# Use this or `migrations`, not both.
# [database.template]
# command = "python manage.py migrate --noinput"
# inputs = ["*/migrations/*.py", "requirements.txt"]
# Templates (one per migrations content) kept on the server: the most
# recently used, within both limits; gc drops the others.
template_budget = 8
template_budget_mb = 4096
# Ready clones of a worktree's template kept for `isolane db lease`.
lease_pool = 2

# [[services]]
# name = "app"
# command = "python -m http.server $APP_PORT"
# ready = "APP_PORT"        # a port name to wait for, or a command that must succeed
# timeout = "30s"

[hooks]
post_create = []           # e.g. ["python -m venv .venv"]
pre_remove = []
post_reset = []            # after every `isolane db reset`

[run]
venv = true                # activate the worktree's .venv/ for `run` and services

[gc]
purpose_prefix = "test-"
max_age = "24h"

[worktrees]
# Removed worktrees kept warm (build outputs and all) for the next create.
pool = 0
# Ignored entries of the main worktree copied into each new one (reflinked
# where the file system can); `.worktreeinclude` at the root adds patterns.
copy = []                  # e.g. [".env", ".venv", "node_modules", "target"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults() -> Result<(), String> {
        let parsed = Config::parse(TEMPLATE)?;
        let defaults = Config::default();
        assert_eq!(parsed.worktrees_dir, defaults.worktrees_dir);
        assert_eq!(parsed.ports.names, defaults.ports.names);
        assert_eq!(parsed.gc.max_age, defaults.gc.max_age);
        assert_eq!(parsed.database.prefix, defaults.database.prefix);
        Ok(())
    }

    #[test]
    fn the_issue_example_parses() -> Result<(), String> {
        let config = Config::parse(
            r#"
worktrees_dir = "worktrees"
[ports]
names = ["APP_PORT", "API_PORT"]
range = [20000, 29999]
[database]
enabled = true
url = "postgres://user:pass@host:5432/postgres"
prefix = "testdb_"
migrations = "migrations"
format = "auto"
[[services]]
name = "app"
command = "python -m http.server $APP_PORT"
ready = "APP_PORT"
timeout = "30s"
[hooks]
post_create = ["python -m venv .venv"]
pre_remove = []
[gc]
purpose_prefix = "test-"
max_age = "24h"
"#,
        )?;
        assert_eq!(config.ports.range, Some((20000, 29999)));
        assert_eq!(config.services[0].timeout, Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn bad_input_names_the_key_and_the_line() {
        let cases = [
            ("colour = 1\n", "unknown field `colour`", 1),
            (
                "[ports]\nnames = [\"APP_PORT\"]\nrange = [30000, 20000]\n",
                "inverted",
                3,
            ),
            ("[ports]\nrange = [80, 90]\n", "between 1024", 2),
            (
                "[ports]\nnames = [\"app port\"]\n",
                "environment variable",
                2,
            ),
            ("[ports]\nnames = [\"A\", \"A\"]\n", "twice", 2),
            (
                "worktrees_dir = \"../outside\"\n",
                "inside the repository",
                1,
            ),
            ("env_file = \"a/b\"\n", "plain file name", 1),
            ("metadata_file = \".git\"\n", "plain file name", 1),
            ("[gc]\nmax_age = \"soon\"\n", "duration", 2),
            ("[database]\nprefix = \"Bad;\"\n", "prefix", 2),
            ("[database]\nformat = \"flyway\"\n", "unknown variant", 2),
            ("[database]\nenabled = \"yes\"\n", "invalid type", 2),
        ];
        for (text, needle, line) in cases {
            let message = Config::parse(text).expect_err(text);
            assert!(message.contains(needle), "{text:?}: {message}");
            assert!(
                message.contains(&format!("line {line}")),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn passwords_in_messages_are_masked() {
        let message = Config::parse("[database]\nurl = \"postgres://u:hunter2@h:x/db\"\n")
            .expect_err("the port is not a number");
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(
            redact_urls("a \"postgres://u:pw@h/db\" b postgresql://v:pw2@k"),
            "a \"postgres://u:***@h/db\" b postgresql://v:***@k"
        );
    }

    #[test]
    fn a_ready_port_must_be_one_of_the_names() {
        let message =
            Config::parse("[[services]]\nname = \"app\"\ncommand = \"x\"\nready = \"WEB_PORT\"\n")
                .expect_err("WEB_PORT is not leased");
        assert!(message.contains("WEB_PORT"), "{message}");
    }
}
