//! Crash injection for the crash tests of every crate.

use std::sync::OnceLock;

/// The environment variable naming the step to die at.
pub const FAULT_ENV: &str = "ISOLANE_FAULT";

/// Kills this process with SIGKILL if [`FAULT_ENV`] names `step`, exactly
/// as a `kill -9` from outside would: nothing flushed, no destructor run.
///
/// Each crate names its own steps (`worktree.after_intent`,
/// `create.after_ports`, ...). Without the variable this is one comparison
/// (the variable is read once per process).
///
/// ```
/// registry::fault_point("a.step.no.test.names"); // returns: not selected
/// ```
pub fn fault_point(step: &str) {
    static SELECTED: OnceLock<Option<String>> = OnceLock::new();
    let selected = SELECTED.get_or_init(|| std::env::var(FAULT_ENV).ok());
    if selected.as_deref() == Some(step) {
        tracing::warn!(step, "fault injection: killing this process");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // Only if SIGKILL could not be raised.
        std::process::abort();
    }
}
