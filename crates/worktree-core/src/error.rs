use std::fmt::Write as _;
use std::path::PathBuf;

use registry::ProcessIdentity;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A purpose, identifier or branch name was refused.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        /// What the name was for (`purpose`, `identifier`, `branch`).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The request combines options that exclude each other.
    #[error("invalid request for worktree {id}: {reason}")]
    InvalidRequest {
        /// The worktree id.
        id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The path is not inside a git repository.
    #[error("{path} is not inside a git repository")]
    NotARepository {
        /// The path given.
        path: PathBuf,
        /// What libgit2 said.
        #[source]
        source: git2::Error,
    },
    /// A bare repository has no main worktree to put `worktrees/` in.
    #[error("repository {git_dir} is bare: set Options::worktrees_dir")]
    BareNeedsWorktreesDir {
        /// The repository's git dir.
        git_dir: PathBuf,
    },
    /// The worktree (or its directory) exists already.
    #[error("worktree {id} already exists at {path}")]
    AlreadyExists {
        /// The worktree id.
        id: String,
        /// Its path.
        path: PathBuf,
    },
    /// No worktree has this id.
    #[error("no worktree {id} under {worktrees_dir}")]
    NotFound {
        /// The id looked for.
        id: String,
        /// Where it was looked for.
        worktrees_dir: PathBuf,
    },
    /// The branch is checked out in another worktree.
    #[error("branch {branch} is already checked out in worktree {worktree}")]
    BranchCheckedOut {
        /// The branch.
        branch: String,
        /// The worktree that has it checked out.
        worktree: PathBuf,
    },
    /// The base revision does not name a commit.
    #[error("base revision {base:?} does not name a commit")]
    BaseNotFound {
        /// The revision as given.
        base: String,
        /// What libgit2 said.
        #[source]
        source: git2::Error,
    },
    /// The worktree has uncommitted changes or untracked files.
    #[error("worktree {id} at {path} has uncommitted changes: {}", list(files))]
    Dirty {
        /// The worktree id.
        id: String,
        /// Its path.
        path: PathBuf,
        /// The changed, staged or untracked files (relative paths).
        files: Vec<String>,
    },
    /// The worktree's HEAD has commits that no other branch, tag or remote
    /// ref contains.
    #[error(
        "worktree {id} has {} commit(s) on {} that exist nowhere else: {}",
        commits.len(),
        branch.as_deref().unwrap_or("its detached HEAD"),
        list(commits)
    )]
    Unmerged {
        /// The worktree id.
        id: String,
        /// Its branch (`None` when detached).
        branch: Option<String>,
        /// The commits at stake (hex ids, newest first).
        commits: Vec<String>,
    },
    /// The worktree is locked by a process that is still running, or by
    /// someone other than this crate (`git worktree lock`).
    #[error("worktree {id} is locked ({reason}){}", owner_text(owner))]
    Locked {
        /// The worktree id.
        id: String,
        /// The lock reason.
        reason: String,
        /// The owning process, when known.
        owner: Option<ProcessIdentity>,
    },
    /// The main worktree cannot be removed or pooled.
    #[error("{path} is the main worktree of the repository")]
    MainWorktree {
        /// Its path.
        path: PathBuf,
    },
    /// The requested operation is not supported yet.
    #[error("worktree {id}: {what} is not supported yet")]
    Unsupported {
        /// The worktree id.
        id: String,
        /// What was asked for.
        what: &'static str,
    },
    /// A commit's tree holds a path that a checkout must never write (it
    /// could leave the worktree or replace its `.git`); nothing was written.
    #[error("refusing to check out commit {commit}: unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The offending path, as far as it was read.
        path: String,
        /// The commit whose tree holds it (hex).
        commit: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path isolane would write in, move into or delete leads outside
    /// the directory it belongs to (a symlink, or a parent that is one):
    /// it is never followed.
    #[error("{path} leads to {resolved}, outside {inside}: refusing to follow it")]
    Escapes {
        /// The path as isolane would use it.
        path: PathBuf,
        /// Where it really leads.
        resolved: PathBuf,
        /// The directory it must stay inside.
        inside: PathBuf,
    },
    /// A libgit2 operation failed.
    #[error("git: cannot {action} {target}")]
    Git {
        /// What was being done.
        action: &'static str,
        /// On what (a path, branch, revision or id).
        target: String,
        /// What libgit2 said.
        #[source]
        source: git2::Error,
    },
    /// A `required` filter driver failed on a file being checked out.
    #[error("smudge filter {driver} failed on {path}: {reason}")]
    Filter {
        /// The file.
        path: String,
        /// The driver (`filter.<driver>.*`).
        driver: String,
        /// What went wrong.
        reason: String,
    },
    /// Initialising the submodules of a new worktree failed.
    #[error("cannot initialise the submodules of {path}: {reason}")]
    Submodules {
        /// The worktree.
        path: PathBuf,
        /// What git said.
        reason: String,
    },
    /// A file system operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A pattern of what to copy into a new worktree (`.worktreeinclude`,
    /// or one given) is not a valid gitignore-style pattern.
    #[error("invalid copy pattern in {origin}")]
    CopyPattern {
        /// Where the pattern came from (a file, or `the options`).
        origin: String,
        /// What the pattern parser said.
        #[source]
        source: ignore::Error,
    },
    /// Creating a worktree failed; what it had made was rolled back.
    #[error("creating worktree {id} at {path} failed while trying to {step} (rolled back)")]
    CreateFailed {
        /// The worktree id.
        id: String,
        /// Its path.
        path: PathBuf,
        /// The step that failed.
        step: &'static str,
        /// The failure.
        #[source]
        source: Box<Error>,
    },
}

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const SHOWN: usize = 10;

fn list(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        let _ = write!(out, " and {} more", items.len() - SHOWN);
    }
    out
}

fn owner_text(owner: &Option<ProcessIdentity>) -> String {
    match owner {
        Some(owner) => format!(" by running process {}", owner.pid),
        None => String::new(),
    }
}

pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

pub(crate) fn git(
    action: &'static str,
    target: impl ToString,
) -> impl FnOnce(git2::Error) -> Error {
    let target = target.to_string();
    move |source| Error::Git {
        action,
        target,
        source,
    }
}

impl Error {
    /// Whether the error is about the caller's input (a refused name, an
    /// unknown id or revision, a worktree or branch already taken) rather
    /// than the state of the repository or the machine.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::InvalidName { .. }
            | Self::InvalidRequest { .. }
            | Self::AlreadyExists { .. }
            | Self::NotFound { .. }
            | Self::BranchCheckedOut { .. }
            | Self::BaseNotFound { .. } => true,
            Self::CreateFailed { source, .. } => source.is_invalid_input(),
            _ => false,
        }
    }
}
