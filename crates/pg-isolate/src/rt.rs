//! Running pg-isolate's blocking work safely from async code.
//!
//! The `postgres` crate drives each connection with a tokio runtime of its
//! own, which panics when it is started, used or dropped on a thread that is
//! inside another runtime ("Cannot start a runtime from within a runtime",
//! or "Cannot drop a runtime in a context where blocking is not allowed").
//! Every place where pg-isolate talks to the server, or drops a connection,
//! goes through [`off_runtime`], which leaves the caller's runtime first:
//!
//! - not inside a runtime: runs the work right here;
//! - inside a multi-thread runtime: [`tokio::task::block_in_place`], which
//!   hands this worker's other tasks to another worker while it blocks;
//! - inside a current-thread runtime: on a helper thread, joined (the
//!   runtime's only thread is the caller's, so a synchronous call blocks it
//!   whatever is done; the async API behind the `tokio` feature does not).

use std::cell::Cell;
use std::panic::resume_unwind;

use tokio::runtime::{Handle, RuntimeFlavor};

thread_local! {
    /// Set while this thread runs work that already left the runtime.
    static ESCAPED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside a tokio runtime that pg-isolate's blocking
/// work has not yet left.
pub(crate) fn in_runtime() -> bool {
    !ESCAPED.with(Cell::get) && Handle::try_current().is_ok()
}

/// Runs `work` outside any tokio runtime this thread is in (see the module
/// docs); a panic in `work` is passed on to the caller.
pub(crate) fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    let Ok(handle) = Handle::try_current() else {
        return work();
    };
    if ESCAPED.with(Cell::get) {
        return work();
    }
    if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| {
            let _escaped = Escaped::set();
            work()
        })
    } else {
        std::thread::scope(|scope| {
            match std::thread::Builder::new()
                .name("pg-isolate-blocking".to_owned())
                .spawn_scoped(scope, work)
            {
                Ok(thread) => thread.join().unwrap_or_else(|panic| resume_unwind(panic)),
                // No thread to be had (resource limits): nothing better
                // than to fail the way the caller's own code would.
                Err(error) => panic!("pg-isolate could not start a helper thread: {error}"),
            }
        })
    }
}

/// Marks this thread as escaped for its lifetime.
struct Escaped(bool);

impl Escaped {
    fn set() -> Self {
        Self(ESCAPED.with(|e| e.replace(true)))
    }
}

impl Drop for Escaped {
    fn drop(&mut self) {
        ESCAPED.with(|e| e.set(self.0));
    }
}
