//! Fault injection for the crash tests: `ISOLANE_FAULT=<step>` makes the
//! process kill itself with SIGKILL when it reaches that step, exactly as a
//! `kill -9` from outside would, with nothing flushed or cleaned up.
//!
//! The steps: `create.after_intent`, `create.after_worktree`, `create.after_ports`,
//! `create.after_database`, `create.during_hooks`, `remove.after_intent`,
//! `remove.after_worktree`, `remove.after_database`, `remove.after_ports`.

/// The variable naming the step to die at.
pub(crate) const FAULT_ENV: &str = "ISOLANE_FAULT";

/// Dies here if `ISOLANE_FAULT` names this step.
pub(crate) fn point(step: &str) {
    if std::env::var_os(FAULT_ENV).is_some_and(|wanted| wanted == step) {
        tracing::warn!(step, "fault injection: killing this process");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
