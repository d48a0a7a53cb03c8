//! A fresh PostgreSQL database per worktree and per test.
//!
//! Not implemented yet: this crate is a placeholder that the pg-isolate issue
//! fills in. It exposes nothing so that nothing can pretend to work.
#![deny(missing_docs)]
