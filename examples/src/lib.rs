//! Runnable programs that embed the isolane libraries; see `examples/*.rs`
//! and run one with `cargo run -p examples --example NAME`.
#![deny(missing_docs)]

use std::path::PathBuf;

/// The example migrations (diesel layout) shipped in `examples/migrations/`,
/// found from the crate's manifest directory so any working directory works.
pub fn migrations_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations")
}
