//! Git worktree lifecycle for isolated test environments, built on `git2`.
//!
//! Not implemented yet: this crate is a placeholder that the worktree-core
//! issue fills in. It exposes nothing so that nothing can pretend to work.
#![deny(missing_docs)]
