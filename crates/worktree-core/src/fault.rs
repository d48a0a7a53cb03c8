//! Crash injection for tests: `ISOLANE_FAULT=<step>` makes the process abort
//! (as if killed) when it reaches that named step. Read once per process.

use std::sync::OnceLock;

/// The environment variable naming the step at which to abort.
pub(crate) const FAULT_ENV: &str = "ISOLANE_FAULT";

/// Aborts the process if `ISOLANE_FAULT` names `step`.
pub(crate) fn point(step: &'static str) {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    let fault = FAULT.get_or_init(|| std::env::var(FAULT_ENV).ok());
    if fault.as_deref() == Some(step) {
        tracing::warn!(step, "aborting at injected fault");
        std::process::abort();
    }
}
