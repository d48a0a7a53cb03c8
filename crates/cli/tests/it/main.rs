//! End-to-end tests: the built `isolane` binary against real git
//! repositories, real sockets and the embedded PostgreSQL server.

mod bad_input;
mod compare;
mod concurrency;
mod copy;
mod crashes;
mod derived;
mod django;
mod pool;
mod processes;
mod safety;
mod soak;
mod storage;
mod templates;
mod users;
mod workflow;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use test_support::{GitRepo, TestResult};

/// The port lease state shared by every test of this binary (leases are
/// host-wide by design; one document keeps concurrent tests apart).
pub(crate) fn state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("isolane-cli-state")
}

/// The host-wide port claims of this binary's tests (never the host's).
pub(crate) fn claims_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("isolane-cli-claims")
}

/// The embedded PostgreSQL cluster of this suite: never the host's
/// default one.
pub(crate) fn cluster_dir() -> PathBuf {
    test_support::suite_cluster_dir(env!("CARGO_TARGET_TMPDIR"), "isolane-cli")
        .expect("/var/tmp takes the suite's cluster directory")
}

/// The server options every command of this suite uses.
pub(crate) fn server_options() -> pg_isolate::ServerOptions {
    let mut options = pg_isolate::ServerOptions::default();
    options.embedded.cache_dir = Some(cluster_dir());
    options
}

/// An `isolane` command run in `dir`.
pub(crate) fn isolane(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_isolane"));
    command
        .current_dir(dir)
        .env("ISOLANE_STATE_DIR", state_dir())
        .env("ISOLANE_PORT_CLAIMS_DIR", claims_dir())
        .env("PG_ISOLATE_CACHE_DIR", cluster_dir())
        .env_remove("ISOLANE_FAULT")
        .env_remove("PG_ISOLATE_URL")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    command
}

/// Runs isolane and returns its output, whatever the exit code.
pub(crate) fn output(dir: &Path, args: &[&str]) -> TestResult<Output> {
    Ok(isolane(dir).args(args).output()?)
}

/// Runs isolane and requires success; returns stdout.
pub(crate) fn ok(dir: &Path, args: &[&str]) -> TestResult<String> {
    succeeded(output(dir, args)?, &format!("isolane {args:?}"))
}

/// Waits for an isolane started with piped stdout and stderr and requires
/// success; returns stdout.
pub(crate) fn wait_ok(child: std::process::Child) -> TestResult<String> {
    succeeded(child.wait_with_output()?, "isolane")
}

/// The stdout of `what`, which must have succeeded.
fn succeeded(out: Output, what: &str) -> TestResult<String> {
    if !out.status.success() {
        return Err(format!(
            "{what} failed with {}:\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Worktree `id`'s database URL, with its password (`isolane env`).
pub(crate) fn url_of(dir: &Path, id: &str) -> TestResult<String> {
    ok(dir, &["env", id])?
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .map(str::to_owned)
        .ok_or_else(|| format!("no DATABASE_URL for {id}").into())
}

/// Runs isolane with `--json` appended and parses stdout.
pub(crate) fn json(dir: &Path, args: &[&str]) -> TestResult<serde_json::Value> {
    let mut all = args.to_vec();
    all.push("--json");
    Ok(serde_json::from_str(&ok(dir, &all)?)?)
}

/// A repository with an `isolane.toml`.
pub(crate) fn repo_with_config(config: &str) -> TestResult<GitRepo> {
    let repo = GitRepo::new()?;
    repo.write("isolane.toml", config)?;
    repo.commit_all("configure isolane")?;
    Ok(repo)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Whether process `pid` runs. A zombie does not: it has exited, and this
/// machine's init reaps orphans only now and then.
pub(crate) fn alive(pid: u32) -> bool {
    registry::ProcessIdentity::of_pid(pid).is_some_and(|identity| identity.is_alive())
}

/// Our databases on the embedded server, by name.
pub(crate) fn database_names(dir: &Path) -> TestResult<Vec<String>> {
    names_in(&json(dir, &["db", "list"])?)
}

/// The names in the output of `db list --json`.
pub(crate) fn names_in(rows: &serde_json::Value) -> TestResult<Vec<String>> {
    Ok(rows
        .as_array()
        .ok_or("db list --json is not an array")?
        .iter()
        .filter_map(|row| row["name"].as_str().map(str::to_owned))
        .collect())
}

/// An embedded cluster of one test's own, stopped when dropped: for tests
/// that stop, kill or reclaim things, which must not disturb the suite's
/// shared cluster (nor be disturbed by the other tests' `gc`).
pub(crate) struct OwnCluster {
    dir: tempfile::TempDir,
    pub(crate) embedded: pg_isolate::EmbeddedOptions,
}

impl OwnCluster {
    pub(crate) fn new(label: &str) -> TestResult<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix(&format!("isolane-cli-{label}-"))
            .tempdir_in("/var/tmp")?;
        // As root the server runs as `postgres`, which must reach the cluster.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let embedded = pg_isolate::EmbeddedOptions {
            cache_dir: Some(dir.path().to_owned()),
            ..pg_isolate::EmbeddedOptions::default()
        };
        Ok(Self { dir, embedded })
    }

    /// `isolane` run in `dir`, on this cluster.
    pub(crate) fn isolane(&self, dir: &Path) -> Command {
        let mut command = isolane(dir);
        command.env("PG_ISOLATE_CACHE_DIR", self.dir.path());
        command
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = pg_isolate::Server::stop_embedded(&self.embedded);
    }
}

/// The host-wide port leases, as `(owner, ports)`.
pub(crate) fn leases(dir: &Path) -> TestResult<Vec<(String, Vec<u16>)>> {
    let rows = json(dir, &["ports", "list"])?;
    Ok(rows
        .as_array()
        .ok_or("ports list --json is not an array")?
        .iter()
        .map(|row| {
            let owner = row["owner"].as_str().unwrap_or_default().to_owned();
            let ports = row["ports"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_u64())
                        .map(|p| p as u16)
                        .collect()
                })
                .unwrap_or_default();
            (owner, ports)
        })
        .collect())
}
