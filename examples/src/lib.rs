//! Runnable programs that embed the isolane libraries; see `examples/*.rs`
//! and run one with `cargo run -p examples --example NAME`.
#![deny(missing_docs)]
