//! Fixtures shared by the isolane test suites.
//!
//! - [`GitRepo`]: a real git repository in a temp dir, built with the git
//!   CLI (so the libraries under test are checked against git itself).
//! - [`child`]: run a test's own body again in a separate process, for
//!   concurrency and `kill -9` tests with real processes.
//! - [`fuzz`]: time-bounded property fuzzing with proptest.
//! - [`mount`]: a tiny tmpfs that really fills up or turns read-only.
//! - [`python`]: a virtualenv with packages from PyPI, and the example
//!   projects copied into a test's repository.
#![deny(missing_docs)]

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod child;
pub mod fuzz;
pub mod mount;
pub mod python;

/// The result type of test bodies and fixtures.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs a command and returns its stdout; a non-zero exit is an error that
/// carries the command line and its stderr.
pub fn run(command: &mut Command) -> io::Result<String> {
    let output = command.output()?;
    check(command, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn check(command: &Command, output: &Output) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{command:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// Runs `git` with `args` in `dir`, with a fixed identity and no user or
/// system configuration, and returns its stdout.
pub fn git<I, S>(dir: &Path, args: I) -> io::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(git_command(dir).args(args))
}

/// A `git` command in `dir`, isolated from the user's configuration.
pub fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

/// A real git repository in a temp dir, deleted when dropped.
///
/// It starts with one commit on `main` holding `README.md`.
#[derive(Debug)]
pub struct GitRepo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl GitRepo {
    /// Creates the repository with its first commit.
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("isolane-repo-").tempdir()?;
        // Canonical, so paths compare equal to what git and libgit2 report.
        let path = dir.path().canonicalize()?.join("repo");
        std::fs::create_dir(&path)?;
        let repo = Self { _dir: dir, path };
        repo.git(["init", "--quiet", "--initial-branch=main"])?;
        repo.git(["config", "user.name", "Test Author"])?;
        repo.git(["config", "user.email", "author@example.com"])?;
        repo.write("README.md", "# fixture\n")?;
        repo.commit_all("initial commit")?;
        Ok(repo)
    }

    /// The repository's root (its main worktree).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `git` in the repository and returns its stdout.
    pub fn git<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git(&self.path, args)
    }

    /// Writes a file (creating its directories) relative to the root.
    pub fn write(&self, relative: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
        let path = self.path.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)
    }

    /// Stages everything and commits it; returns the new commit id.
    pub fn commit_all(&self, message: &str) -> io::Result<String> {
        self.git(["add", "--all"])?;
        self.git(["commit", "--quiet", "--allow-empty", "-m", message])?;
        Ok(self.git(["rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// Creates `branch` at the current HEAD without checking it out.
    pub fn branch(&self, branch: &str) -> io::Result<()> {
        self.git(["branch", branch]).map(drop)
    }
}

/// Everything under `dir`, for before/after comparisons: each path
/// (relative) with `file:<contents>`, `link:<target>` or `dir`. Symlinks are
/// recorded, never followed.
pub fn tree_snapshot(dir: &Path) -> io::Result<std::collections::BTreeMap<PathBuf, String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_owned();
            let kind = std::fs::symlink_metadata(&path)?.file_type();
            let value = if kind.is_symlink() {
                format!("link:{}", std::fs::read_link(&path)?.display())
            } else if kind.is_dir() {
                pending.push(path);
                "dir".to_owned()
            } else {
                format!("file:{}", String::from_utf8_lossy(&std::fs::read(&path)?))
            };
            out.insert(relative, value);
        }
    }
    Ok(out)
}

/// The directory of the embedded PostgreSQL cluster that the test suite
/// `suite` of the build whose `CARGO_TARGET_TMPDIR` is `target_tmpdir`
/// shares (pass it as `PG_ISOLATE_CACHE_DIR` or
/// `EmbeddedOptions::cache_dir`): never the host's default cluster.
///
/// With `PG_ISOLATE_CACHE_DIR` set (as `.ci/run` does, to a temporary
/// directory it stops and removes afterwards), it is
/// `$PG_ISOLATE_CACHE_DIR/suite-<suite>`. Otherwise it lives in
/// `/var/tmp/isolane-test-<uid>-<hash of target_tmpdir>/<suite>` and is
/// kept between runs, like a build cache, so only the first run pays for
/// `initdb` (its server stops itself when idle). Mode 755: as root, the
/// server runs as the `postgres` account, which must reach it; the build's
/// own target dir may be under a closed home.
pub fn suite_cluster_dir(target_tmpdir: &str, suite: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(dir) = std::env::var_os("PG_ISOLATE_CACHE_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir).join(format!("suite-{suite}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        return Ok(dir);
    }
    let uid = std::fs::metadata("/proc/self")?.uid();
    let hash = target_tmpdir
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let root = PathBuf::from(format!("/var/tmp/isolane-test-{uid}-{:08x}", hash as u32));
    let dir = root.join(suite);
    for path in [&root, &dir] {
        match std::fs::create_dir(path) {
            Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Ok(dir)
}
