//! Finding a repository's shared paths from any directory inside it.

use std::path::{Path, PathBuf};

use git2::Repository;

use crate::{Error, Result};

/// The paths shared by every worktree of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepoPaths {
    /// The common git dir (`.git` of the main worktree), canonical.
    pub common_dir: PathBuf,
    /// The main worktree's root, canonical; `None` for a bare repository.
    pub main_root: Option<PathBuf>,
}

/// The full id of the commit `revision` names (a branch, tag, commit id or
/// any expression `git rev-parse` takes) as git reads it in `path`: any
/// directory inside a repository or one of its worktrees, where `HEAD` is
/// that worktree's own. [`Error::BaseNotFound`] when it names no commit.
pub fn resolve_commit(path: impl AsRef<Path>, revision: &str) -> Result<String> {
    let path = path.as_ref();
    let repo = Repository::discover(path).map_err(|source| Error::NotARepository {
        path: path.to_owned(),
        source,
    })?;
    crate::worktrees::resolve_revision(&repo, revision).map(|commit| commit.to_string())
}

/// Finds the repository containing `path` — any directory inside it or
/// inside one of its worktrees — without changing anything on disk.
pub fn discover(path: impl AsRef<Path>) -> Result<RepoPaths> {
    let path = path.as_ref();
    let repo = Repository::discover(path).map_err(|source| Error::NotARepository {
        path: path.to_owned(),
        source,
    })?;
    let common_dir = repo
        .commondir()
        .canonicalize()
        .map_err(crate::error::io("resolve", repo.commondir()))?;
    let main = Repository::open(&common_dir).map_err(|source| Error::NotARepository {
        path: common_dir.clone(),
        source,
    })?;
    let main_root = if main.is_bare() {
        None
    } else {
        main.workdir()
            .map(|w| w.canonicalize().map_err(crate::error::io("resolve", w)))
            .transpose()?
    };
    Ok(RepoPaths {
        common_dir,
        main_root,
    })
}
