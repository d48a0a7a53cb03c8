//! The pg-isolate integration tests, against the real embedded server
//! (or the server in `PG_ISOLATE_URL`), with real processes.

// -- migrations tests --
mod migrate_format;
mod migrate_rollback;
mod migrate_run;
// -- end migrations tests --

mod asynchronous;
mod birth;
mod databases;
mod fuzz;
mod gc;
mod lease;
mod macro_setup;
mod pool;
mod server;
mod templates;
mod testdb;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use pg_isolate::{Server, ServerOptions};
use test_support::TestResult;

/// The options of the server every test of this binary (and its child
/// processes) shares, as a test suite would share one: the default
/// settings, except for a cluster of this suite's own, never the host's
/// default cluster, whose server stops itself soon after the last test.
pub(crate) fn suite_options() -> TestResult<ServerOptions> {
    let mut options = ServerOptions::default();
    options.embedded.cache_dir = Some(test_support::suite_cluster_dir(
        env!("CARGO_TARGET_TMPDIR"),
        "pg-isolate",
    )?);
    options.embedded.idle_timeout = Duration::from_secs(20);
    Ok(options)
}

/// The suite's shared server ([`suite_options`]).
pub(crate) fn shared() -> TestResult<Server> {
    Ok(Server::connect(suite_options()?)?)
}

/// A name no other test or test process uses.
pub(crate) fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{label}_{}_{nanos}", std::process::id())
}

/// Key material no other test uses, so each test builds its own template.
pub(crate) fn unique_key(label: &str) -> Vec<u8> {
    unique(label).into_bytes()
}

/// An embedded cluster of its own in a temp dir (reachable by the server
/// account when running as root), stopped when dropped: for tests that stop,
/// kill or expire things, which must not disturb the shared server.
pub(crate) struct PrivateCluster {
    dir: tempfile::TempDir,
    pub(crate) options: ServerOptions,
}

impl PrivateCluster {
    pub(crate) fn new() -> TestResult<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pg-isolate-it-")
            .tempdir_in("/var/tmp")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let options = Self::options_for(dir.path());
        Ok(Self { dir, options })
    }

    /// Options using the private cluster in `dir` (also for child processes).
    pub(crate) fn options_for(dir: &Path) -> ServerOptions {
        let mut options = ServerOptions::default();
        options.embedded.cache_dir = Some(dir.to_owned());
        options
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn connect(&self) -> TestResult<Server> {
        Ok(Server::connect(self.options.clone())?)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Err(error) = Server::stop_embedded(&self.options.embedded) {
            tracing::warn!(%error, "stopping a private cluster failed");
        }
    }
}

/// Polls `condition` every 20 ms until it holds; an error after `limit`.
pub(crate) fn eventually(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> TestResult<bool>,
) -> TestResult {
    let deadline = Instant::now() + limit;
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("gave up waiting: {what}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (and is not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok()
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill9(pid: u32) -> TestResult {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("kill -9 {pid} failed").into());
    }
    Ok(())
}

/// Reads lines of the form `KEY value` from a child's stdout.
pub(crate) fn values<'a>(stdout: &'a str, key: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .collect()
}

/// Waits (bounded) until `path` exists.
pub(crate) fn wait_for_file(path: &Path) -> TestResult {
    eventually(
        &format!("{} to appear", path.display()),
        Duration::from_secs(60),
        || Ok(path.exists()),
    )
}

/// Reports `KEY value` to the parent test: a child process's stdout is its
/// channel back (read with [`values`]).
#[allow(clippy::print_stdout)]
pub(crate) fn emit(key: &str, value: impl std::fmt::Display) {
    println!("{key} {value}");
}
