//! Reading and writing git's per-worktree admin directories
//! (`<common dir>/worktrees/<name>/`) and this crate's sidecar file in them.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use registry::ProcessIdentity;
use serde::{Deserialize, Serialize};

use crate::error::{Result, io};
use crate::state::write_atomic;

/// The sidecar file this crate keeps in an admin directory (git ignores
/// files it does not know).
const SIDECAR: &str = "isolane.json";

/// What this crate records about a worktree it made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Sidecar {
    /// When the worktree was created (or handed out of the pool), seconds
    /// since the Unix epoch.
    pub(crate) created_unix: u64,
    /// The process holding the git lock, if this crate took it.
    pub(crate) owner: Option<ProcessIdentity>,
    /// Whether the worktree sits in the pool.
    pub(crate) pooled: bool,
}

/// What a worktree's HEAD points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    /// A branch (short name) or another symbolic ref (full name).
    Branch(String),
    /// A commit.
    Detached(String),
    /// Missing or unreadable.
    Unknown,
}

impl Head {
    pub(crate) fn parse(content: &str) -> Self {
        let content = content.trim();
        if let Some(target) = content.strip_prefix("ref:") {
            let target = target.trim();
            let short = target.strip_prefix("refs/heads/").unwrap_or(target);
            Head::Branch(short.to_owned())
        } else if content.len() >= 40 && content.bytes().all(|b| b.is_ascii_hexdigit()) {
            Head::Detached(content.to_owned())
        } else {
            Head::Unknown
        }
    }

    pub(crate) fn branch(&self) -> Option<&str> {
        match self {
            Head::Branch(branch) => Some(branch),
            _ => None,
        }
    }
}

/// One admin directory as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    /// The admin directory.
    pub(crate) dir: PathBuf,
    /// The worktree directory it points at (from `gitdir`).
    pub(crate) path: PathBuf,
    pub(crate) head: Head,
    /// The git lock reason, if locked.
    pub(crate) locked: Option<String>,
    pub(crate) sidecar: Option<Sidecar>,
}

impl Admin {
    pub(crate) fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub(crate) fn created(&self) -> Option<SystemTime> {
        match &self.sidecar {
            Some(sidecar) if sidecar.created_unix > 0 => {
                Some(UNIX_EPOCH + std::time::Duration::from_secs(sidecar.created_unix))
            }
            _ => std::fs::metadata(self.dir.join("gitdir"))
                .and_then(|m| m.modified())
                .ok(),
        }
    }
}

/// Every admin directory of the repository whose common dir is `common`.
pub(crate) fn scan(common: &Path) -> Result<Vec<Admin>> {
    let root = common.join("worktrees");
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read directory", root)(e)),
    };
    let mut admins = Vec::new();
    for entry in entries {
        let dir = entry.map_err(io("read directory", &root))?.path();
        if let Some(admin) = read(&dir)? {
            admins.push(admin);
        }
    }
    admins.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(admins)
}

/// Reads one admin directory; `None` if it is not one (no `gitdir`).
pub(crate) fn read(dir: &Path) -> Result<Option<Admin>> {
    let Some(gitdir) = read_optional(&dir.join("gitdir"))? else {
        return Ok(None);
    };
    let dotgit = PathBuf::from(gitdir.trim_end_matches(['\n', '\r']));
    let path = match dotgit.file_name() {
        Some(name) if name == ".git" => dotgit.parent().map(Path::to_path_buf).unwrap_or(dotgit),
        _ => dotgit,
    };
    let head = read_optional(&dir.join("HEAD"))?.map_or(Head::Unknown, |c| Head::parse(&c));
    let locked = read_optional(&dir.join("locked"))?;
    let sidecar = read_optional(&dir.join(SIDECAR))?.and_then(|c| serde_json::from_str(&c).ok());
    Ok(Some(Admin {
        dir: dir.to_owned(),
        path,
        head,
        locked,
        sidecar,
    }))
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(content) => Ok(Some(content)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Creates a new admin directory `dir` for a worktree at `path`, locked with
/// `initializing` so that a concurrent `git worktree prune` leaves it alone,
/// and the worktree's `.git` file pointing at it.
pub(crate) fn create(dir: &Path, path: &Path, head: &str) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io("create directory", parent))?;
    }
    std::fs::create_dir(dir).map_err(io("create directory", dir))?;
    write(dir, "locked", "initializing")?;
    write(dir, "commondir", "../..\n")?;
    write(dir, "HEAD", &format!("{head}\n"))?;
    set_path(dir, path)?;
    let dotgit = path.join(".git");
    std::fs::write(&dotgit, format!("gitdir: {}\n", dir.display())).map_err(io("write", dotgit))
}

/// Points the admin directory at the worktree directory `path`.
pub(crate) fn set_path(dir: &Path, path: &Path) -> Result<()> {
    write(dir, "gitdir", &format!("{}\n", path.join(".git").display()))
}

/// The HEAD file content for a branch or a commit.
pub(crate) fn head_content(branch: Option<&str>, commit: &str) -> String {
    match branch {
        Some(branch) => format!("ref: refs/heads/{branch}"),
        None => commit.to_owned(),
    }
}

pub(crate) fn write_head(dir: &Path, content: &str) -> Result<()> {
    write(dir, "HEAD", &format!("{content}\n"))
}

pub(crate) fn write_sidecar(dir: &Path, sidecar: &Sidecar) -> Result<()> {
    let json = serde_json::to_string_pretty(sidecar).expect("a sidecar always serializes");
    write(dir, SIDECAR, &json)
}

pub(crate) fn lock(dir: &Path, reason: &str) -> Result<()> {
    write(dir, "locked", reason)
}

pub(crate) fn unlock(dir: &Path) -> Result<()> {
    let path = dir.join("locked");
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> Result<()> {
    write_atomic(&dir.join(name), content.as_bytes())
}

/// Whether the worktree directory `path` belongs to the admin dir `dir`
/// (its `.git` file points there), so that deleting it deletes nothing else.
pub(crate) fn owns(dir: &Path, path: &Path) -> bool {
    let Ok(content) = std::fs::read_to_string(path.join(".git")) else {
        return false;
    };
    content
        .trim()
        .strip_prefix("gitdir:")
        .is_some_and(|target| Path::new(target.trim()) == dir)
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
