//! Running a test's body again in child processes.
//!
//! A multi-process test re-executes its own test binary, filtered to its own
//! test name, with its arguments in an environment variable. In the child,
//! [`args`] returns them and the test runs its child role instead:
//!
//! ```no_run
//! # fn work(_: &[String]) -> test_support::TestResult { Ok(()) }
//! # fn main() -> test_support::TestResult {
//! // inside `#[test] fn many_writers() -> TestResult` of module `concurrency`:
//! if let Some(args) = test_support::child::args() {
//!     return work(&args);
//! }
//! let children = (0..4)
//!     .map(|i| test_support::child::spawn("concurrency::many_writers", &[i.to_string()]))
//!     .collect::<Result<Vec<_>, _>>()?;
//! for child in children {
//!     test_support::child::wait_success(child)?;
//! }
//! # Ok(())
//! # }
//! ```

use std::io;
use std::process::{Child, Command, ExitStatus, Stdio};

/// The variable that carries the child's arguments (unit-separated).
pub const ARGS_ENV: &str = "ISOLANE_TEST_CHILD_ARGS";

const SEPARATOR: char = '\u{1f}';

/// The arguments given to this process by [`spawn`], or `None` in the
/// parent test process.
pub fn args() -> Option<Vec<String>> {
    let raw = std::env::var(ARGS_ENV).ok()?;
    if raw.is_empty() {
        return Some(Vec::new());
    }
    Some(raw.split(SEPARATOR).map(str::to_owned).collect())
}

/// A command that runs exactly the test `test_path` (its path inside the
/// test binary, e.g. `store::many_writers`) of the current test binary in a
/// child process, with `args` available through [`args`].
pub fn command(test_path: &str, args: &[String]) -> io::Result<Command> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .args([
            test_path,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ARGS_ENV, args.join(&SEPARATOR.to_string()))
        .stdin(Stdio::null());
    Ok(command)
}

/// Spawns [`command`] with stdout and stderr piped.
pub fn spawn(test_path: &str, args: &[String]) -> io::Result<Child> {
    command(test_path, args)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Waits for a child and turns a failure into an error carrying its output.
/// Returns the child's stdout.
pub fn wait_success(child: Child) -> io::Result<String> {
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(io::Error::other(format!(
            "child failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// A child process that is killed (SIGKILL) and reaped when the guard is
/// dropped, so a test that fails half-way leaves no child running.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// Kills `child` (SIGKILL) unless it has ended, and reaps it.
fn kill_and_reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A [`spawn`]ed child that is killed and reaped if the guard is dropped
/// before it is waited for, like [`KillOnDrop`], and can still be waited
/// for with its output: a test that returns early leaves no child behind
/// (one that would, say, start again a server the test has stopped).
#[derive(Debug)]
pub struct Guarded(Option<Child>);

impl Guarded {
    /// [`spawn`] under a guard.
    pub fn spawn(test_path: &str, args: &[String]) -> io::Result<Self> {
        spawn(test_path, args).map(|child| Self(Some(child)))
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits for the child to end (after it was killed, say).
    pub fn wait(mut self) -> io::Result<ExitStatus> {
        match self.0.take() {
            Some(mut child) => child.wait(),
            None => Err(io::Error::other("the child was already waited for")),
        }
    }

    /// [`wait_success`] of the child.
    pub fn wait_success(mut self) -> io::Result<String> {
        match self.0.take() {
            Some(child) => wait_success(child),
            None => Err(io::Error::other("the child was already waited for")),
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill_and_reap(child);
        }
    }
}
