//! The files written into a worktree for test code: `.env.test` and
//! `.worktree-metadata.json`, and the formats of `isolane env`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::state::Entry;

/// The environment a worktree's tests run with (besides the parent's).
pub(crate) fn environment(entry: &Entry, database_url: Option<&str>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = entry
        .ports
        .iter()
        .map(|(name, port)| (name.clone(), port.to_string()))
        .collect();
    if let Some(url) = database_url {
        env.insert("DATABASE_URL".to_owned(), url.to_owned());
        env.extend(pg_environment(url));
    }
    env.insert("ISOLANE_WORKTREE".to_owned(), entry.id.clone());
    env
}

/// `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE` of `url`, so
/// `psql`, `createdb`, `dropdb` and libpq programs reach the same database
/// with no arguments. Empty when the URL cannot be read (never: we build
/// it).
pub(crate) fn pg_environment(url: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Ok(config) = url.parse::<postgres::Config>() else {
        return env;
    };
    match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => {
            env.insert("PGHOST".to_owned(), host.clone());
        }
        Some(postgres::config::Host::Unix(dir)) => {
            env.insert("PGHOST".to_owned(), dir.display().to_string());
        }
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        env.insert("PGPORT".to_owned(), port.to_string());
    }
    if let Some(user) = config.get_user() {
        env.insert("PGUSER".to_owned(), user.to_owned());
    }
    if let Some(password) = config.get_password() {
        env.insert(
            "PGPASSWORD".to_owned(),
            String::from_utf8_lossy(password).into_owned(),
        );
    }
    if let Some(database) = config.get_dbname() {
        env.insert("PGDATABASE".to_owned(), database.to_owned());
    }
    env
}

/// Activates a Python virtual environment for a process started in
/// `worktree`: its own `.venv/`, else the main worktree's, unless
/// `[run] venv = false`. Sets `VIRTUAL_ENV` and puts its `bin` first on
/// `PATH` (the parent's `PATH` after it), as `source .venv/bin/activate`
/// does.
pub(crate) fn activate_venv(
    env: &mut BTreeMap<String, String>,
    repo: &crate::context::Repo,
    worktree: &Path,
) {
    if !repo.config.run.venv {
        return;
    }
    let Some(venv) = [worktree, repo.root.as_path()]
        .into_iter()
        .map(|dir| dir.join(".venv"))
        .find(|venv| venv.join("bin").is_dir())
    else {
        return;
    };
    let bin = venv.join("bin");
    let mut path = bin.into_os_string();
    if let Some(rest) = env
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .filter(|p| !p.is_empty())
    {
        path.push(":");
        path.push(rest);
    }
    env.insert("PATH".to_owned(), path.to_string_lossy().into_owned());
    env.insert(
        "VIRTUAL_ENV".to_owned(),
        venv.to_string_lossy().into_owned(),
    );
}

/// `KEY=VALUE` lines. Values never contain white space or quotes (ports,
/// ids and URLs we build), so `export $(cat .env.test | xargs)` works.
pub(crate) fn dotenv(env: &BTreeMap<String, String>) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// `export KEY='VALUE'` lines, for `eval "$(isolane env ID --format shell)"`.
pub(crate) fn shell(env: &BTreeMap<String, String>) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', r"'\''")))
        .collect()
}

/// What `.worktree-metadata.json` holds; test code reads these keys.
#[derive(Debug, Serialize)]
pub(crate) struct Metadata<'a> {
    pub(crate) id: &'a str,
    pub(crate) purpose: &'a str,
    pub(crate) identifier: &'a str,
    pub(crate) branch: Option<&'a str>,
    pub(crate) path: &'a Path,
    /// RFC 3339, UTC.
    pub(crate) created: String,
    pub(crate) ports: &'a BTreeMap<String, u16>,
    pub(crate) database: Option<&'a str>,
    pub(crate) database_url: Option<&'a str>,
}

impl<'a> Metadata<'a> {
    pub(crate) fn new(entry: &'a Entry, database_url: Option<&'a str>) -> Self {
        Self {
            id: &entry.id,
            purpose: &entry.purpose,
            identifier: &entry.identifier,
            branch: entry.branch.as_deref(),
            path: &entry.path,
            created: iso_offset(entry.created),
            ports: &entry.ports,
            database: entry.database.as_deref(),
            database_url,
        }
    }
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
pub(crate) fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}

/// Seconds since the epoch as an ISO 8601 UTC timestamp with an explicit
/// `+00:00` offset, which Python's `datetime.fromisoformat` reads from 3.7
/// on (a `Z` only from 3.11).
pub(crate) fn iso_offset(seconds: u64) -> String {
    let text = rfc3339(seconds);
    match text.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => text,
    }
}

/// The files' permissions: owner only, as they always were (the database
/// URL may carry a password).
const MODE: u32 = 0o600;

/// Writes both files into the worktree, each atomically and durably
/// ([`registry::write_atomically`]), so a test never reads half a file.
pub(crate) fn write_files(
    worktree: &Path,
    env_file: &str,
    metadata_file: &str,
    entry: &Entry,
    database_url: Option<&str>,
) -> std::io::Result<()> {
    let env = environment(entry, database_url);
    registry::write_atomically(&worktree.join(env_file), dotenv(&env).as_bytes(), MODE)?;
    let mut metadata = serde_json::to_vec_pretty(&Metadata::new(entry, database_url))
        .map_err(std::io::Error::other)?;
    metadata.push(b'\n');
    registry::write_atomically(&worktree.join(metadata_file), &metadata, MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_values_are_quoted() {
        let env = BTreeMap::from([("A".to_owned(), "it's $HOME".to_owned())]);
        assert_eq!(shell(&env), "export A='it'\\''s $HOME'\n");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_offset(86_400), "1970-01-02T00:00:00+00:00");
    }

    #[test]
    fn pg_variables_name_the_database_of_the_url() {
        let env = pg_environment("postgresql://postgres:s3cret@127.0.0.1:17001/testdb_a");
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PGHOST"), Some("127.0.0.1"));
        assert_eq!(get("PGPORT"), Some("17001"));
        assert_eq!(get("PGUSER"), Some("postgres"));
        assert_eq!(get("PGPASSWORD"), Some("s3cret"));
        assert_eq!(get("PGDATABASE"), Some("testdb_a"));
    }
}
