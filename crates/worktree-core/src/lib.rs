//! Git worktree lifecycle for isolated test environments, built on `git2`.
//!
//! [`Worktrees`] creates, lists, locks, pools and removes worktrees of one
//! repository under a worktrees dir (default `worktrees/` at the main
//! worktree's root, added to `.git/info/exclude`). Every worktree is a
//! first-class git worktree: `git worktree list` shows it, `git status` in it
//! is clean, `git worktree remove` works on it, and `git worktree prune`
//! leaves it alone while it is locked.
//!
//! - **Create** `<purpose>-<identifier>` on an existing branch, a new branch
//!   from a base revision, or a detached HEAD. The files are written by
//!   several threads straight from the object database and the index is
//!   built from their stat data. A tree with a path that could leave the
//!   worktree or replace its `.git` (`..`, `.git` in any case, empty or
//!   `/`-holding names) is refused with [`Error::UnsafePath`] before anything
//!   is written. Creation is all or nothing: each step is
//!   recorded first, a failure rolls back what was made, and the next call
//!   rolls back what a crashed process left.
//! - **Remove** never loses work: uncommitted changes, untracked files and
//!   commits that exist nowhere else are refused (and listed) unless forced.
//!   The directory is first renamed to a tombstone in `<worktrees dir>/.trash/`
//!   (atomic), then the admin entry and the tombstone are deleted, so a crash
//!   never leaves a half-deleted worktree; the next call finishes the job.
//! - **Lock** with git's own lock plus the owning process, so that
//!   [`Worktrees::select_stale`] can tell "old" from "in use".
//! - **Pool**: [`Worktrees::release_to_pool`] keeps a finished worktree, and
//!   the next create re-points it at the requested branch, writing only the
//!   files that differ and keeping ignored build outputs (`target/`,
//!   `node_modules/`, ...). A pooled worktree is handed out only when it is
//!   provably unchanged since it was pooled (stat data of every tracked file
//!   and directory) or a full status scan finds it clean; pooled worktrees
//!   are locked, so `git worktree prune` keeps them.
//!   [`Worktrees::release_to_pool_with`] does it under the rules of a
//!   remove (a worktree with work at stake is never pooled) and deletes
//!   named files of the last user first; [`Worktrees::pool`] lists the
//!   pool, [`Worktrees::trim_pool`] trims it (oldest first) and
//!   [`Worktrees::drain_pool`] empties it.
//! - **Copies of ignored files**: [`Worktrees::copy_ignored`] gives a new
//!   worktree a copy of the main worktree's ignored entries that match
//!   gitignore-style patterns (given, and those of `.worktreeinclude`):
//!   dependency directories, build outputs, local `.env` files. Files are
//!   cloned by reflink (copy-on-write) where the file system supports it,
//!   else copied, by several threads ([`copy_tree`]); never a tracked file,
//!   never over anything the worktree has.
//!
//! Bookkeeping lives in `<git common dir>/isolane/worktree-core/`: a lock
//! file per worktree id and one for short repository-wide steps, and an
//! intent record per operation in progress, which [`Worktrees::recover`]
//! (run by every mutating call) rolls back once its process is gone.
//!
//! A checkout is what `git worktree add` makes, byte for byte: files are
//! converted as git converts them (attributes, end of lines, `ident`,
//! `working-tree-encoding`, smudge and long-running filter drivers such as
//! git-lfs), the main worktree's sparse checkout is inherited, and
//! submodule paths are left empty unless [`CreateRequest::submodules`] asks
//! for them to be initialised (by `git submodule update --init
//! --recursive`).
//!
//! Crash testing: with `ISOLANE_FAULT=<step>` in the environment the process
//! kills itself with SIGKILL at that step ([`registry::fault_point`]) (`worktree.after_intent`, `worktree.after_branch`,
//! `worktree.after_admin_dir`, `worktree.after_files`,
//! `worktree.after_checkout`, `worktree.handout_after_switch`,
//! `worktree.handout_after_move`, `worktree.release_after_intent`,
//! `worktree.release_after_move`,
//! `worktree.remove_after_rename`, `worktree.remove_during_trash`).
//!
//! ```
//! use worktree_core::{CreateRequest, Options, RemoveOptions, Worktrees};
//!
//! # let dir = tempfile::tempdir()?;
//! # let repo = dir.path().join("repo");
//! # let git = |args: &[&str]| std::process::Command::new("git").current_dir(&repo)
//! #     .env("GIT_CONFIG_GLOBAL", "/dev/null").env("GIT_CONFIG_NOSYSTEM", "1")
//! #     .args(["-c", "user.name=a", "-c", "user.email=a@example.com"]).args(args).status();
//! # std::fs::create_dir(&repo)?;
//! # git(&["init", "-q", "-b", "main"])?;
//! # std::fs::write(repo.join("README.md"), "hello\n")?;
//! # git(&["add", "."])?;
//! # git(&["commit", "-q", "-m", "first"])?;
//! let worktrees = Worktrees::open(&repo, Options::default())?;
//! let created = worktrees.create(
//!     &CreateRequest::new("test-migration", "add-user-roles").branch("feature/user-roles"),
//! )?;
//! assert!(created.path.join("README.md").is_file());
//! assert_eq!(created.id, "test-migration-add-user-roles");
//!
//! let removed = worktrees.remove(&created.id, RemoveOptions { delete_branch: true, ..Default::default() })?;
//! assert_eq!(removed.branch_deleted.as_deref(), Some("feature/user-roles"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod admin;
mod attributes;
mod checkout;
mod convert;
mod copy;
mod discover;
mod error;
mod names;
mod snapshot;
mod sparse;
mod state;
mod worktrees;

pub use copy::{Copied, CopyStats, WORKTREE_INCLUDE, copy_tree};
pub use discover::{RepoPaths, discover, resolve_commit};
pub use error::{Error, Result};
pub use names::{MAX_NAME_LEN, validate_branch, validate_name};
pub use worktrees::{
    CreateRequest, LockInfo, Options, Release, ReleaseOptions, Released, RemoveOptions, Removed,
    Selection, SkipReason, Worktree, WorktreeInfo, Worktrees,
};
