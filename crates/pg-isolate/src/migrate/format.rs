//! Reading a migrations directory in diesel's or sqlx's layout.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha384};

use super::error::MigrateError;

/// The layout of a migrations directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Format {
    /// Detect from the directory's contents.
    #[default]
    Auto,
    /// diesel: `<version>_<name>/up.sql`, `down.sql`, optional `metadata.toml`;
    /// tracked in `__diesel_schema_migrations`.
    Diesel,
    /// sqlx: `<version>_<description>.up.sql` / `.down.sql` (reversible) or
    /// `<version>_<description>.sql` (irreversible); tracked in
    /// `_sqlx_migrations` with a SHA-384 checksum.
    Sqlx,
}

impl Format {
    /// The tracking table this format's tool uses.
    pub fn tracking_table(self) -> Option<&'static str> {
        match self {
            Format::Auto => None,
            Format::Diesel => Some(super::tracking::DIESEL_TABLE),
            Format::Sqlx => Some(super::tracking::SQLX_TABLE),
        }
    }
}

/// One SQL script of a migration.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) path: PathBuf,
    pub(crate) sql: String,
    /// Whether it runs in its own transaction.
    pub(crate) transactional: bool,
}

/// One migration of a directory: a version, a name, an up script and, when
/// reversible, a down script.
#[derive(Debug, Clone)]
pub struct Migration {
    /// As written in the file or directory name.
    version: String,
    /// What the tool stores in its tracking table: diesel's version without
    /// dashes, sqlx's version as a decimal integer.
    key: String,
    sqlx_version: Option<i64>,
    /// As written in the file or directory name (after the first `_`).
    name: String,
    up: Script,
    down: Option<Script>,
}

impl Migration {
    /// The version as written in the directory (`2017-08-31-230457`, `0001`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version as the tool records it in its tracking table
    /// (`20170831230457` for diesel, `1` for sqlx's `0001`).
    pub fn tracked_version(&self) -> &str {
        &self.key
    }

    /// The name as written in the directory (`create users`, `create_users`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The up script's path.
    pub fn up_path(&self) -> &Path {
        &self.up.path
    }

    /// The down script's path, when the migration is reversible.
    pub fn down_path(&self) -> Option<&Path> {
        self.down.as_ref().map(|s| s.path.as_path())
    }

    /// Whether the migration has a down script.
    pub fn is_reversible(&self) -> bool {
        self.down.is_some()
    }

    /// Whether the up script runs in its own transaction.
    pub fn is_transactional(&self) -> bool {
        self.up.transactional
    }

    pub(crate) fn up(&self) -> &Script {
        &self.up
    }

    pub(crate) fn down(&self) -> Option<&Script> {
        self.down.as_ref()
    }

    pub(crate) fn sqlx_version(&self) -> Option<i64> {
        self.sqlx_version
    }

    /// sqlx's description: the name with `_` replaced by spaces.
    pub(crate) fn sqlx_description(&self) -> String {
        self.name.replace('_', " ")
    }

    /// sqlx's checksum: SHA-384 of the up script's exact contents.
    pub(crate) fn sqlx_checksum(&self) -> Vec<u8> {
        Sha384::digest(self.up.sql.as_bytes()).to_vec()
    }

    /// Whether this migration is the one `version` names (as written or as
    /// tracked).
    pub(crate) fn answers_to(&self, version: &str) -> bool {
        self.version == version
            || self.key == version
            || self
                .sqlx_version
                .is_some_and(|v| version.parse::<i64>().ok() == Some(v))
    }
}

/// The migrations of one directory, in the order they apply.
///
/// # Example
///
/// ```
/// use pg_isolate::{Format, Migrations, RollbackOptions, Server, ServerOptions, verify_rollbacks};
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("1_users.up.sql"), "CREATE TABLE users (id bigint PRIMARY KEY);")?;
/// std::fs::write(dir.path().join("1_users.down.sql"), "DROP TABLE users;")?;
/// let migrations = Migrations::load(dir.path(), Format::Auto)?;
///
/// let server = Server::connect(ServerOptions::default())?;
/// // A database per test, cloned from a template the runner built once.
/// let db = migrations.template(&server)?.test_database()?;
/// assert_eq!(migrations.applied(&mut db.client()?)?, ["1"]);
///
/// // Every reversible migration: up, down, and the schema as before?
/// let report = verify_rollbacks(&server, &migrations, &RollbackOptions::default())?;
/// assert!(report.is_success(), "{}", report.to_json());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Compatibility with diesel and sqlx
///
/// pg-isolate records what it applies in the tool's own tracking table, so a
/// database it prepared can be handed to `diesel migration run` or
/// `sqlx migrate run` afterwards and they agree on what is applied.
///
/// **diesel** (`<version>_<name>/up.sql`, `down.sql`, `metadata.toml`):
/// - Table `__diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT
///   NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)`, created as
///   diesel creates it, in the first schema of the `search_path`. A row per
///   applied migration holds the version as diesel computes it: the
///   directory name up to the first `_`, with every `-` removed
///   (`2017-08-31-230457_invitations` is `20170831230457`). Reverting
///   deletes the row, as diesel does.
/// - `metadata.toml`: no file means a transaction per script; with a file,
///   `run_in_transaction = false` turns it off, and so does a file without
///   that key (diesel's own default for the field). Applies to up and down.
/// - A directory without `down.sql` is irreversible (diesel's `--no-down`);
///   an empty script fails when run, as in diesel. Sub-directories without
///   `up.sql` are an error, as in diesel; files and dot-entries are ignored.
/// - Order: diesel's: the versions with dashes removed, compared as
///   strings (so `2018-12-31-000000-0000` comes before
///   `2019-01-01-000000`, whatever their lengths).
/// - diesel applies the pending migrations whatever the order; so does
///   pg-isolate. A recorded version that the directory lacks is ignored
///   unless the run has to revert it.
///
/// **sqlx** (`<version>_<description>.up.sql` / `.down.sql`, or
/// `<version>_<description>.sql` for irreversible ones):
/// - Table `_sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT
///   NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success
///   BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT
///   NULL)`, as `sqlx-postgres` creates it. A row per applied migration:
///   the version as an integer, the description (the file name's part
///   after the first `_`, suffix removed, `_` replaced by spaces),
///   `success = true`, the checksum (SHA-384 of the up file's exact bytes),
///   and the execution time in nanoseconds (sqlx writes `-1` first and the
///   time after its commit; pg-isolate writes the time in the same
///   transaction). Reverting deletes the row, as sqlx does.
/// - A script whose first bytes are `-- no-transaction` runs outside a
///   transaction (per script, as in sqlx).
/// - Like sqlx, a run refuses a database with a failed (`success = false`)
///   row, an applied migration whose file's checksum changed, or an applied
///   version the directory lacks; and it holds the advisory lock
///   `sqlx migrate run` takes on the database, so the two never interleave.
/// - Unlike sqlx, a `.up.sql` without its `.down.sql` (or the reverse) is an
///   error rather than silently half-reversible. sqlx-cli's configurable
///   `ignored_chars` checksum option is not supported (default checksums
///   only).
///
/// # Non-transactional scripts
///
/// They are split into statements (honouring quotes, comments, dollar
/// quoting and `BEGIN ATOMIC` bodies) and sent one at a time, so
/// `CREATE INDEX CONCURRENTLY` and friends work even with several
/// statements in a file (diesel and sqlx send the whole file at once, which
/// PostgreSQL runs in an implicit transaction). A failure leaves the
/// statements before it applied, and no tracking row.
#[derive(Debug, Clone)]
pub struct Migrations {
    dir: PathBuf,
    format: Format,
    list: Vec<Migration>,
}

/// Bumped whenever the runner changes how a directory turns into a schema, so
/// that templates keyed by [`Migrations::hash`] are rebuilt.
const RUNNER_FORMAT_VERSION: u32 = 1;

impl Migrations {
    /// Reads the migrations of `dir` in the given format ([`Format::Auto`]
    /// detects it by each tool's own rule: sub-directories with an `up.sql`
    /// are diesel's, files named `<integer version>_<description>.sql` are
    /// sqlx's; anything else, such as a loose `data_seed.sql` beside diesel
    /// directories, is ignored as the tools ignore it).
    ///
    /// Fails, naming the files involved, on duplicate versions, a reversible
    /// sqlx migration without its down script (or a down without its up),
    /// invalid versions or metadata, and unreadable files. Unrelated files
    /// (`README.md`, `.keep`, dot-directories) are ignored.
    pub fn load(dir: impl AsRef<Path>, format: Format) -> Result<Self, MigrateError> {
        let dir = dir.as_ref().to_path_buf();
        let scan = scan(&dir)?;
        let format = match format {
            // Each tool's own rule for what is a migration: diesel takes
            // directories with an `up.sql` and ignores loose files; sqlx
            // takes `<integer>_<description>.sql` files. A stray
            // `data_seed.sql` beside diesel directories is neither.
            Format::Auto => match (scan.diesel.first(), scan.sqlx_valid.first()) {
                (Some(diesel), Some(sqlx)) => {
                    return Err(MigrateError::AmbiguousFormat {
                        dir,
                        diesel: diesel.clone(),
                        sqlx: sqlx.clone(),
                    });
                }
                (Some(_), None) => Format::Diesel,
                (None, Some(_)) => Format::Sqlx,
                (None, None) => return Err(MigrateError::UnknownFormat { dir }),
            },
            forced => forced,
        };
        let mut list = match format {
            Format::Sqlx => load_sqlx(&scan.sqlx)?,
            _ => load_diesel(&scan.subdirs)?,
        };
        list.sort_by(compare_migrations);
        for pair in list.windows(2) {
            if pair[0].key == pair[1].key {
                return Err(MigrateError::DuplicateVersion {
                    version: pair[0].key.clone(),
                    first: pair[0].up.path.clone(),
                    second: pair[1].up.path.clone(),
                });
            }
        }
        tracing::debug!(dir = %dir.display(), ?format, count = list.len(), "loaded migrations");
        Ok(Migrations { dir, format, list })
    }

    /// The directory they were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The format (never [`Format::Auto`]).
    pub fn format(&self) -> Format {
        self.format
    }

    /// The migrations in the order they apply.
    pub fn list(&self) -> &[Migration] {
        &self.list
    }

    /// The number of migrations.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The migration that `version` names (as written or as tracked).
    pub fn find(&self, version: &str) -> Option<&Migration> {
        self.position(version).map(|i| &self.list[i])
    }

    pub(crate) fn position(&self, version: &str) -> Option<usize> {
        self.list.iter().position(|m| m.answers_to(version))
    }

    /// A hex SHA-256 of everything that defines the resulting schema: the
    /// format, and every migration's version, name, scripts and transaction
    /// mode. Use it (or [`Migrations::key_material`]) to key templates.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.key_material()))
    }

    /// The bytes [`Migrations::hash`] digests, for callers that mix in more
    /// (a template key of their own).
    pub fn key_material(&self) -> Vec<u8> {
        self.key_material_through(self.list.len())
    }

    /// Key material of the first `count` migrations only: the schema of a
    /// database migrated to just before migration `count`.
    pub(crate) fn key_material_through(&self, count: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(
            format!(
                "pg-isolate migrations v{RUNNER_FORMAT_VERSION}\0{:?}\0{}\0",
                self.format,
                count.min(self.list.len())
            )
            .as_bytes(),
        );
        for m in self.list.iter().take(count) {
            for part in [m.version.as_str(), m.key.as_str(), m.name.as_str()] {
                out.extend_from_slice(&(part.len() as u64).to_le_bytes());
                out.extend_from_slice(part.as_bytes());
            }
            for script in std::iter::once(&m.up).chain(m.down.as_ref()) {
                out.push(u8::from(script.transactional));
                out.extend_from_slice(&(script.sql.len() as u64).to_le_bytes());
                out.extend_from_slice(script.sql.as_bytes());
            }
            out.push(u8::from(m.down.is_some()));
        }
        out
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Orders migrations as their tool applies them: sqlx by integer version,
/// diesel by tracked version (dashes removed) as strings.
fn compare_migrations(a: &Migration, b: &Migration) -> Ordering {
    match (a.sqlx_version, b.sqlx_version) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.key.cmp(&b.key),
    }
}

/// Orders two tracked versions of `format` the way its tool does: sqlx's as
/// integers, diesel's as strings (`201812310000000000` before
/// `20190101000000`, as diesel sorts crates.io's mixed
/// `YYYY-MM-DD-HHMMSS` and `YYYY-MM-DD-HHMMSS-0000` versions).
pub(crate) fn compare_tracked(format: Format, a: &str, b: &str) -> Ordering {
    match (format, a.parse::<i64>(), b.parse::<i64>()) {
        (Format::Sqlx, Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Whether `name` is a migration file as sqlx reads one:
/// `<VERSION>_<DESCRIPTION>.sql` (or `.up.sql` / `.down.sql`) with an
/// integer version.
fn is_sqlx_name(name: &str) -> bool {
    name.split_once('_')
        .is_some_and(|(version, rest)| rest.ends_with(".sql") && version.parse::<i64>().is_ok())
}

struct Scan {
    /// Non-dot sub-directories.
    subdirs: Vec<PathBuf>,
    /// Sub-directories that hold an `up.sql`.
    diesel: Vec<PathBuf>,
    /// Regular files named `<something>_<something>.sql`.
    sqlx: Vec<PathBuf>,
    /// Those of them with an integer version: what sqlx takes for
    /// migrations (and fails on the others).
    sqlx_valid: Vec<PathBuf>,
}

fn scan(dir: &Path) -> Result<Scan, MigrateError> {
    let io = |source| MigrateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut scan = Scan {
        subdirs: Vec::new(),
        diesel: Vec::new(),
        sqlx: Vec::new(),
        sqlx_valid: Vec::new(),
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            // Neither tool can name a migration with a non-UTF-8 name.
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks, as both tools do.
        let meta = fs::metadata(&path).map_err(|source| MigrateError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            if path.join("up.sql").is_file() {
                scan.diesel.push(path.clone());
            }
            scan.subdirs.push(path);
        } else if meta.is_file()
            && let Some((_, rest)) = name.split_once('_')
            && rest.ends_with(".sql")
        {
            if is_sqlx_name(name) {
                scan.sqlx_valid.push(path.clone());
            }
            scan.sqlx.push(path);
        }
    }
    scan.subdirs.sort();
    scan.diesel.sort();
    scan.sqlx.sort();
    scan.sqlx_valid.sort();
    Ok(scan)
}

fn read_script(path: &Path) -> Result<String, MigrateError> {
    fs::read_to_string(path).map_err(|source| MigrateError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn load_diesel(subdirs: &[PathBuf]) -> Result<Vec<Migration>, MigrateError> {
    let mut list = Vec::with_capacity(subdirs.len());
    for dir in subdirs {
        let dir_name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let up_path = dir.join("up.sql");
        if !up_path.is_file() {
            return Err(MigrateError::NotAMigration { path: dir.clone() });
        }
        let (version, name) = match dir_name.split_once('_') {
            Some((v, n)) => (v.to_owned(), n.to_owned()),
            None => (dir_name.clone(), String::new()),
        };
        let key = version.replace('-', "");
        if key.is_empty() {
            return Err(MigrateError::InvalidVersion {
                path: dir.clone(),
                reason: "the name must start with a version before the first `_`".to_owned(),
            });
        }
        if key.len() > 50 {
            return Err(MigrateError::InvalidVersion {
                path: dir.clone(),
                reason: format!(
                    "`{key}` is longer than the 50 characters diesel's tracking table holds"
                ),
            });
        }
        let transactional = diesel_run_in_transaction(&dir.join("metadata.toml"))?;
        let up = Script {
            sql: read_script(&up_path)?,
            path: up_path,
            transactional,
        };
        let down_path = dir.join("down.sql");
        let down = if down_path.exists() {
            Some(Script {
                sql: read_script(&down_path)?,
                path: down_path,
                transactional,
            })
        } else {
            // `diesel migration generate --no-down`: irreversible.
            None
        };
        list.push(Migration {
            version,
            key,
            sqlx_version: None,
            name,
            up,
            down,
        });
    }
    Ok(list)
}

/// diesel's `metadata.toml`: no file means "run in a transaction"; a file
/// without `run_in_transaction` means `false` (diesel's own field default,
/// kept for compatibility).
fn diesel_run_in_transaction(path: &Path) -> Result<bool, MigrateError> {
    if !path.exists() {
        return Ok(true);
    }
    let text = read_script(path)?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| MigrateError::Metadata {
            path: path.to_path_buf(),
            reason: e.message().to_owned(),
        })?;
    match table.get("run_in_transaction") {
        None => {
            tracing::warn!(
                path = %path.display(),
                "metadata.toml without run_in_transaction: diesel runs this migration outside a transaction, and so does pg-isolate"
            );
            Ok(false)
        }
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(other) => Err(MigrateError::Metadata {
            path: path.to_path_buf(),
            reason: format!("run_in_transaction must be true or false, not {other}"),
        }),
    }
}

#[derive(Default)]
struct SqlxParts {
    version: String,
    simple: Option<(String, PathBuf)>,
    up: Option<(String, PathBuf)>,
    down: Option<(String, PathBuf)>,
}

fn load_sqlx(files: &[PathBuf]) -> Result<Vec<Migration>, MigrateError> {
    let mut by_version: BTreeMap<i64, SqlxParts> = BTreeMap::new();
    for path in files {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some((written, rest)) = file_name.split_once('_') else {
            continue;
        };
        let version: i64 = written.parse().map_err(|e| MigrateError::InvalidVersion {
            path: path.clone(),
            reason: format!("`{written}` is not a 64-bit integer ({e})"),
        })?;
        let parts = by_version.entry(version).or_default();
        let (slot, name) = if let Some(name) = rest.strip_suffix(".up.sql") {
            (&mut parts.up, name)
        } else if let Some(name) = rest.strip_suffix(".down.sql") {
            (&mut parts.down, name)
        } else {
            let name = rest.strip_suffix(".sql").unwrap_or(rest);
            (&mut parts.simple, name)
        };
        if let Some((_, first)) = slot.as_ref() {
            return Err(MigrateError::DuplicateVersion {
                version: version.to_string(),
                first: first.clone(),
                second: path.clone(),
            });
        }
        *slot = Some((name.to_owned(), path.clone()));
        if parts.version.is_empty() {
            parts.version = written.to_owned();
        }
    }
    let mut list = Vec::with_capacity(by_version.len());
    for (version, parts) in by_version {
        let (name, up_path, down_path) = match (parts.simple, parts.up, parts.down) {
            (Some((name, path)), None, None) => (name, path, None),
            (Some((_, first)), Some((_, second)), _)
            | (Some((_, first)), None, Some((_, second))) => {
                return Err(MigrateError::DuplicateVersion {
                    version: version.to_string(),
                    first,
                    second,
                });
            }
            (None, Some((name, up)), Some((down_name, down))) => {
                if name != down_name {
                    return Err(MigrateError::DuplicateVersion {
                        version: version.to_string(),
                        first: up,
                        second: down,
                    });
                }
                (name, up, Some(down))
            }
            (None, Some((name, up)), None) => {
                let expected = up.with_file_name(format!("{}_{name}.down.sql", parts.version));
                return Err(MigrateError::MissingDown { up, expected });
            }
            (None, None, Some((name, down))) => {
                let expected = down.with_file_name(format!("{}_{name}.up.sql", parts.version));
                return Err(MigrateError::MissingUp { down, expected });
            }
            (None, None, None) => continue,
        };
        let up_sql = read_script(&up_path)?;
        let up = Script {
            transactional: !up_sql.starts_with("-- no-transaction"),
            sql: up_sql,
            path: up_path,
        };
        let down = match down_path {
            Some(path) => {
                let sql = read_script(&path)?;
                Some(Script {
                    transactional: !sql.starts_with("-- no-transaction"),
                    sql,
                    path,
                })
            }
            None => None,
        };
        list.push(Migration {
            version: parts.version,
            key: version.to_string(),
            sqlx_version: Some(version),
            name,
            up,
            down,
        });
    }
    Ok(list)
}
