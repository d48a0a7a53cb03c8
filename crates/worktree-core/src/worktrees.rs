use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use git2::{BranchType, Oid, Repository, StatusOptions};
use registry::ProcessIdentity;

use crate::admin::{self, Admin, Head, Sidecar};
use crate::checkout;
use crate::copy::{self, Copied};
use crate::error::{Error, Result, git, io};
use crate::names::{validate_branch, validate_id, worktree_id};
use crate::snapshot;
use crate::sparse::{self, Sparse};
use crate::state::{FileLock, Intent, StateDir};

/// The git lock reason of worktrees that sit in the pool.
const POOL_REASON: &str = "isolane: pooled worktree, reused by the next create";
/// The directory (under the worktrees dir) that holds pooled worktrees; its
/// leading dot keeps it apart from every valid id.
const POOL_DIR: &str = ".pool";
/// The directory (under the worktrees dir) where removed worktrees are
/// moved (as tombstones) before they are deleted.
const TRASH_DIR: &str = ".trash";

/// Optional settings of [`Worktrees::open`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Where worktrees are created; relative paths are relative to the main
    /// worktree's root. Default: `worktrees/` at the main worktree's root
    /// (required for bare repositories). A directory given inside the main
    /// worktree (without `..`) must stay inside it once symlinks are
    /// resolved: one that leads outside is refused with [`Error::Escapes`].
    pub worktrees_dir: Option<PathBuf>,
    /// How many finished worktrees the pool keeps for reuse; `0` disables
    /// the pool. Default: 4.
    pub pool_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            worktrees_dir: None,
            pool_size: 4,
        }
    }
}

/// What to create: `<worktrees dir>/<purpose>-<identifier>`.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// What the worktree is for (`test-migration`); see [`validate_name`](crate::validate_name).
    pub purpose: String,
    /// Which one (`add-user-roles`).
    pub identifier: String,
    /// The branch to check out; created from `base` when it does not exist.
    /// `None`: a branch named like the worktree id (unless `detach`).
    pub branch: Option<String>,
    /// The revision a new branch (or a detached HEAD) starts from; default
    /// `HEAD`. Ignored when `branch` exists.
    pub base: Option<String>,
    /// Detached HEAD at `base` instead of a branch (`branch` must be `None`).
    pub detach: bool,
    /// Initialise the submodules (recursively, as `git submodule update
    /// --init --recursive` does, by running it); by default they are left
    /// uninitialised (empty directories) as `git worktree add` leaves them.
    pub submodules: bool,
    /// Take a clean worktree from the pool when one is there (default true).
    pub use_pool: bool,
}

impl CreateRequest {
    /// A request for a new branch named like the worktree, from `HEAD`.
    pub fn new(purpose: impl Into<String>, identifier: impl Into<String>) -> Self {
        Self {
            purpose: purpose.into(),
            identifier: identifier.into(),
            branch: None,
            base: None,
            detach: false,
            submodules: false,
            use_pool: true,
        }
    }

    /// The same request for `branch`.
    pub fn branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = Some(branch.into());
        self
    }

    /// The same request starting from `base`.
    pub fn base(mut self, base: impl Into<String>) -> Self {
        self.base = Some(base.into());
        self
    }
}

/// A worktree that [`Worktrees::create`] made or handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Worktree {
    /// `<purpose>-<identifier>`.
    pub id: String,
    /// Its directory.
    pub path: PathBuf,
    /// Its branch (`None` when detached).
    pub branch: Option<String>,
    /// Whether the branch was created for it.
    pub branch_created: bool,
    /// The commit checked out (hex).
    pub head: String,
    /// Whether it came from the pool.
    pub from_pool: bool,
    /// How many files were written (all of them, or the differing ones for
    /// a pooled worktree).
    pub files_written: usize,
}

/// A git lock on a worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The reason (what `git worktree list` shows).
    pub reason: String,
    /// The process that took it, when this crate took it.
    pub owner: Option<ProcessIdentity>,
    /// Whether that owner still runs (`true` when the owner is unknown).
    pub owner_alive: bool,
}

/// One worktree of the repository, as [`Worktrees::list`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorktreeInfo {
    /// The directory name (the id for worktrees under the worktrees dir).
    pub id: String,
    /// The directory.
    pub path: PathBuf,
    /// Whether this is the repository's main worktree.
    pub main: bool,
    /// Whether it sits in the pool.
    pub pooled: bool,
    /// Whether it lives in the worktrees dir (so this crate manages it).
    pub managed: bool,
    /// Its branch (`None` when detached).
    pub branch: Option<String>,
    /// The commit checked out (hex), if HEAD resolves.
    pub head: Option<String>,
    /// Its git lock.
    pub lock: Option<LockInfo>,
    /// Its directory is gone (git would prune it, unless locked).
    pub prunable: bool,
    /// Changed, staged and untracked (not ignored) files.
    pub dirty_files: Vec<String>,
    /// Commits of HEAD that no other branch, tag or remote ref contains
    /// (unpushed or unmerged work), newest first.
    pub unmerged_commits: Vec<String>,
    /// When it was created (or handed out of the pool).
    pub created: Option<SystemTime>,
}

impl WorktreeInfo {
    /// Time since creation.
    pub fn age(&self) -> Option<Duration> {
        self.created.and_then(|c| c.elapsed().ok())
    }
}

/// How to remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveOptions {
    /// Remove even with uncommitted changes, unmerged commits or a lock
    /// held by a live process; delete the branch even if unmerged.
    pub force: bool,
    /// Delete the worktree's branch too (only if fully merged, unless forced).
    pub delete_branch: bool,
}

/// What [`Worktrees::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removed {
    /// The worktree id.
    pub id: String,
    /// Its directory.
    pub path: PathBuf,
    /// The directory was already gone.
    pub directory_was_missing: bool,
    /// The branch deleted, if any.
    pub branch_deleted: Option<String>,
}

/// What [`Worktrees::release_to_pool`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Released {
    /// The worktree now waits in the pool at this path.
    Pooled(PathBuf),
    /// The pool was full: the worktree was removed.
    Removed(Removed),
}

/// How [`Worktrees::release_to_pool_with`] retires a worktree.
#[derive(Debug, Clone, Default)]
pub struct ReleaseOptions {
    /// What a remove would do. `delete_branch`: delete the worktree's
    /// branch once it is pooled (under the rules of a remove: its commits
    /// then count as work at stake). `force`: a worktree that cannot be
    /// pooled (uncommitted changes, untracked files, unmerged commits, a
    /// live lock) is removed as a forced remove would, instead of refused.
    /// A worktree with work at stake is never pooled.
    pub remove: RemoveOptions,
    /// Plain file names (no `/`) in the worktree's root that belong to its
    /// last user (an environment file, say): deleted before the worktree
    /// goes into the pool, so that its next user never sees them.
    pub forget: Vec<String>,
}

/// What [`Worktrees::release_to_pool_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Release {
    /// Pooled, or removed (the pool was full, or it could not be pooled
    /// and the remove was forced).
    pub outcome: Released,
    /// The branch deleted, if any (for a removal also in
    /// [`Removed::branch_deleted`]).
    pub branch_deleted: Option<String>,
}

/// Why [`Worktrees::select_stale`] kept a worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Locked by a live process or by someone other than this crate.
    Locked(LockInfo),
    /// Uncommitted changes or untracked files.
    Dirty(Vec<String>),
    /// Commits that exist nowhere else.
    Unmerged(Vec<String>),
}

/// The result of [`Worktrees::select_stale`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Selection {
    /// Old enough and safe to remove.
    pub removable: Vec<WorktreeInfo>,
    /// Old enough but kept, and why.
    pub skipped: Vec<(WorktreeInfo, SkipReason)>,
}

/// The worktrees of one repository.
#[derive(Debug, Clone)]
pub struct Worktrees {
    common_dir: PathBuf,
    main_root: Option<PathBuf>,
    worktrees_dir: PathBuf,
    pool_dir: PathBuf,
    pool_size: usize,
    state: StateDir,
}

struct Target {
    commit: Oid,
    branch: Option<String>,
    branch_created: Option<(String, String)>,
}

impl Worktrees {
    /// Opens the repository containing `path` (any directory inside it, or
    /// inside one of its worktrees), creates the worktrees dir and adds it
    /// to the repository's `info/exclude`.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Self> {
        let crate::RepoPaths {
            common_dir,
            main_root,
        } = crate::discover(path)?;
        let worktrees_dir = match (&options.worktrees_dir, &main_root) {
            (Some(dir), Some(root)) => root.join(dir),
            (Some(dir), None) => dir.clone(),
            (None, Some(root)) => root.join("worktrees"),
            (None, None) => {
                return Err(Error::BareNeedsWorktreesDir {
                    git_dir: common_dir,
                });
            }
        };
        // Checked before anything is created (a symlinked parent would
        // have create_dir_all make directories outside), and again after.
        let confined = main_root.as_deref().filter(|root| {
            worktrees_dir.starts_with(root)
                && !worktrees_dir
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
        });
        if let Some(root) = confined {
            confine(&worktrees_dir, &resolve_existing(&worktrees_dir), root)?;
        }
        std::fs::create_dir_all(&worktrees_dir).map_err(io("create directory", &worktrees_dir))?;
        let resolved = worktrees_dir
            .canonicalize()
            .map_err(io("resolve", &worktrees_dir))?;
        if let Some(root) = confined {
            confine(&worktrees_dir, &resolved, root)?;
        }
        let worktrees_dir = resolved;
        let state = StateDir::new(&common_dir);
        state.ensure()?;
        let this = Self {
            pool_dir: worktrees_dir.join(POOL_DIR),
            common_dir,
            main_root,
            worktrees_dir,
            pool_size: options.pool_size,
            state,
        };
        if let Some(root) = &this.main_root
            && let Ok(rel) = this.worktrees_dir.strip_prefix(root)
            && !rel.as_os_str().is_empty()
        {
            this.exclude(&format!("/{}/", rel.display()))?;
        }
        Ok(this)
    }

    /// The directory worktrees are created in.
    pub fn worktrees_dir(&self) -> &Path {
        &self.worktrees_dir
    }

    /// The repository's common git dir (`.git` of the main worktree).
    pub fn common_dir(&self) -> &Path {
        &self.common_dir
    }

    /// The main worktree's root (`None` for a bare repository).
    pub fn main_root(&self) -> Option<&Path> {
        self.main_root.as_deref()
    }

    /// The path a worktree with this id has.
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.worktrees_dir.join(id)
    }

    /// Adds a pattern line to the repository's `info/exclude` (shared by all
    /// worktrees) unless it is there already.
    pub fn exclude(&self, pattern: &str) -> Result<()> {
        if pattern.is_empty() || pattern.contains(['\n', '\r']) {
            return Err(Error::InvalidName {
                kind: "exclude pattern",
                name: pattern.to_owned(),
                reason: "it is empty or spans lines",
            });
        }
        let info = self.common_dir.join("info");
        std::fs::create_dir_all(&info).map_err(io("create directory", &info))?;
        let path = info.join("exclude");
        let current = match std::fs::read_to_string(&path) {
            Ok(current) => current,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io("read", path)(e)),
        };
        if current.lines().any(|line| line.trim_end() == pattern) {
            return Ok(());
        }
        let mut next = current;
        if !next.is_empty() && !next.ends_with('\n') {
            next.push('\n');
        }
        next.push_str(pattern);
        next.push('\n');
        crate::state::write_atomic(&path, next.as_bytes())?;
        tracing::debug!(pattern, path = %path.display(), "added exclude pattern");
        Ok(())
    }

    fn repo(&self) -> Result<Repository> {
        Repository::open(&self.common_dir).map_err(|source| Error::NotARepository {
            path: self.common_dir.clone(),
            source,
        })
    }

    // ----- create -----------------------------------------------------------

    /// Creates the worktree `<purpose>-<identifier>` (or hands out a pooled
    /// one re-pointed at the requested branch). All or nothing: on failure
    /// everything made is rolled back, and a crash midway is rolled back by
    /// the next call.
    pub fn create(&self, request: &CreateRequest) -> Result<Worktree> {
        let id = worktree_id(&request.purpose, &request.identifier)?;
        if let Some(branch) = &request.branch {
            validate_branch(branch)?;
        }
        if request.detach && request.branch.is_some() {
            return Err(Error::InvalidRequest {
                id,
                reason: "a detached worktree takes no branch",
            });
        }
        let repo = self.repo()?;
        let path = self.path_of(&id);
        let repo_lock = self.state.repo_lock()?;
        self.recover_locked(&repo)?;
        let Some(id_lock) = FileLock::try_acquire(&self.state.id_lock_path(&id))? else {
            return Err(Error::AlreadyExists { id, path });
        };
        let admins = admin::scan(&self.common_dir)?;
        if std::fs::symlink_metadata(&path).is_ok() || admins.iter().any(|a| a.path == path) {
            return Err(Error::AlreadyExists { id, path });
        }
        let target = self.target(&repo, &id, request, &admins)?;
        let commit = repo
            .find_commit(target.commit)
            .map_err(git("find commit", target.commit))?;
        let tree = commit.tree().map_err(git("read tree of", target.commit))?;
        // A pooled worktree's submodules are not re-initialised: a request
        // for them gets a fresh checkout.
        if request.use_pool
            && !request.submodules
            && self.pool_size > 0
            && let Some(pooled) = self.pick_pooled(&admins)
        {
            return self.handout(&repo, id, path, target, pooled, id_lock, repo_lock);
        }

        let files = checkout::tree_files(&tree, target.commit)?;
        let admin_dir = self.free_admin_dir(&id, &admins);
        let intent = Intent::Create {
            id: id.clone(),
            path: path.clone(),
            admin: admin_dir.clone(),
            branch_created: target.branch_created.clone(),
        };
        self.state.write_intent(&intent)?;
        registry::fault_point("worktree.after_intent");
        let mut step = "create the worktree directory";
        let result = (|| {
            std::fs::create_dir(&path).map_err(io("create directory", &path))?;
            step = "create the branch";
            if let Some((branch, _)) = &target.branch_created {
                repo.branch(branch, &commit, false)
                    .map_err(git("create branch", branch))?;
                registry::fault_point("worktree.after_branch");
            }
            step = "write the worktree admin directory";
            let head = admin::head_content(target.branch.as_deref(), &target.commit.to_string());
            admin::create(&admin_dir, &path, &head)?;
            registry::fault_point("worktree.after_admin_dir");
            Ok(())
        })();
        drop(repo_lock);
        let result = result.and_then(|()| {
            step = "check out the files";
            let sparse = Sparse::of_main(&self.common_dir);
            if sparse.is_some() {
                sparse::copy_settings(&self.common_dir, &admin_dir)?;
            }
            let entries =
                checkout::check_out(&repo, &self.common_dir, &path, &files, sparse.as_ref())?;
            registry::fault_point("worktree.after_files");
            step = "write the index";
            checkout::write_index(&admin_dir.join("index"), &entries)?;
            let written = entries.len();
            if request.submodules && checkout::has_gitlinks(&files) {
                step = "initialise the submodules";
                checkout::init_submodules(&path)?;
            }
            registry::fault_point("worktree.after_checkout");
            step = "finish";
            admin::write_sidecar(
                &admin_dir,
                &Sidecar {
                    created_unix: admin::now_unix(),
                    owner: None,
                    pooled: false,
                },
            )?;
            admin::unlock(&admin_dir)?;
            Ok(written)
        });
        match result {
            Ok(written) => {
                self.state.clear_intent(&id)?;
                id_lock.remove();
                tracing::info!(id, path = %path.display(), commit = %target.commit, files = written, "created worktree");
                Ok(Worktree {
                    id,
                    path,
                    branch: target.branch,
                    branch_created: target.branch_created.is_some(),
                    head: target.commit.to_string(),
                    from_pool: false,
                    files_written: written,
                })
            }
            Err(source) => {
                tracing::warn!(id, step, error = %source, "create failed, rolling back");
                self.roll_back(&repo, &intent)?;
                id_lock.remove();
                Err(Error::CreateFailed {
                    id,
                    path,
                    step,
                    source: Box::new(source),
                })
            }
        }
    }

    /// Resolves what to check out. Called with the repository lock held.
    fn target(
        &self,
        repo: &Repository,
        id: &str,
        request: &CreateRequest,
        admins: &[Admin],
    ) -> Result<Target> {
        let base_commit = || resolve_revision(repo, request.base.as_deref().unwrap_or("HEAD"));
        if request.detach {
            return Ok(Target {
                commit: base_commit()?,
                branch: None,
                branch_created: None,
            });
        }
        let branch = request.branch.clone().unwrap_or_else(|| id.to_owned());
        validate_branch(&branch)?;
        match repo.find_branch(&branch, BranchType::Local) {
            Ok(existing) => {
                if let Some(worktree) = self.checked_out_in(&branch, admins) {
                    return Err(Error::BranchCheckedOut { branch, worktree });
                }
                let commit = existing
                    .get()
                    .peel_to_commit()
                    .map_err(git("resolve branch", &branch))?
                    .id();
                Ok(Target {
                    commit,
                    branch: Some(branch),
                    branch_created: None,
                })
            }
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                let commit = base_commit()?;
                Ok(Target {
                    commit,
                    branch_created: Some((branch.clone(), commit.to_string())),
                    branch: Some(branch),
                })
            }
            Err(e) => Err(git("look up branch", &branch)(e)),
        }
    }

    /// The worktree that has `branch` checked out, if any.
    fn checked_out_in(&self, branch: &str, admins: &[Admin]) -> Option<PathBuf> {
        if let Some(root) = &self.main_root
            && let Ok(head) = std::fs::read_to_string(self.common_dir.join("HEAD"))
            && Head::parse(&head).branch() == Some(branch)
        {
            return Some(root.clone());
        }
        admins
            .iter()
            .find(|a| a.head.branch() == Some(branch))
            .map(|a| a.path.clone())
    }

    fn free_admin_dir(&self, id: &str, admins: &[Admin]) -> PathBuf {
        let root = self.common_dir.join("worktrees");
        let mut n = 0;
        loop {
            let name = if n == 0 {
                id.to_owned()
            } else {
                format!("{id}-{n}")
            };
            let dir = root.join(&name);
            if std::fs::symlink_metadata(&dir).is_err() && !admins.iter().any(|a| a.dir == dir) {
                return dir;
            }
            n += 1;
        }
    }

    // ----- pool -------------------------------------------------------------

    fn pooled(&self, admins: &[Admin]) -> Vec<Admin> {
        admins
            .iter()
            .filter(|a| a.path.parent() == Some(self.pool_dir.as_path()))
            .cloned()
            .collect()
    }

    /// The first pooled worktree that is clean and whose directory exists.
    fn pick_pooled(&self, admins: &[Admin]) -> Option<(Admin, Option<git2::Index>)> {
        for admin in self.pooled(admins) {
            if admin.head.branch().is_some() {
                continue;
            }
            if let Some(index) = snapshot::unchanged(&admin.path, &admin.dir) {
                return Some((admin, Some(index)));
            }
            match dirty_files(&admin.path) {
                Ok(files) if files.is_empty() => return Some((admin, None)),
                Ok(files) => {
                    tracing::warn!(path = %admin.path.display(), files = files.len(), "skipping dirty pooled worktree");
                }
                Err(error) => {
                    tracing::warn!(path = %admin.path.display(), %error, "skipping unusable pooled worktree");
                }
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn handout(
        &self,
        repo: &Repository,
        id: String,
        path: PathBuf,
        target: Target,
        (pooled, index): (Admin, Option<git2::Index>),
        id_lock: FileLock,
        repo_lock: FileLock,
    ) -> Result<Worktree> {
        let intent = Intent::Handout {
            id: id.clone(),
            slot: pooled.path.clone(),
            path: path.clone(),
            admin: pooled.dir.clone(),
            branch_created: target.branch_created.clone(),
        };
        // Every changed path is checked before anything is written.
        let prepared = (|| {
            let commit = repo
                .find_commit(target.commit)
                .map_err(git("find commit", target.commit))?;
            let Head::Detached(old) = &pooled.head else {
                return Err(Error::InvalidRequest {
                    id: id.clone(),
                    reason: "pooled worktree has no detached HEAD",
                });
            };
            let old = Oid::from_str(old).map_err(git("parse commit id", old))?;
            let old_tree = repo
                .find_commit(old)
                .and_then(|c| c.tree())
                .map_err(git("read tree of", old))?;
            let new_tree = commit.tree().map_err(git("read tree of", target.commit))?;
            let changes = checkout::changes(repo, &old_tree, &new_tree, target.commit)?;
            Ok((commit, changes))
        })();
        let (commit, changes) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                id_lock.remove();
                return Err(error);
            }
        };
        self.state.write_intent(&intent)?;
        let mut step = "create the branch";
        let result = (|| {
            if let Some((branch, _)) = &target.branch_created {
                repo.branch(branch, &commit, false)
                    .map_err(git("create branch", branch))?;
            }
            step = "switch the pooled worktree";
            snapshot::forget(&pooled.dir);
            let written = checkout::switch(
                repo,
                &pooled.path,
                &pooled.dir.join("index"),
                index,
                changes,
            )?;
            registry::fault_point("worktree.handout_after_switch");
            step = "move the pooled worktree into place";
            let head = admin::head_content(target.branch.as_deref(), &target.commit.to_string());
            admin::write_head(&pooled.dir, &head)?;
            admin::write_sidecar(
                &pooled.dir,
                &Sidecar {
                    created_unix: admin::now_unix(),
                    owner: None,
                    pooled: false,
                },
            )?;
            std::fs::rename(&pooled.path, &path).map_err(io("move pooled worktree to", &path))?;
            admin::set_path(&pooled.dir, &path)?;
            registry::fault_point("worktree.handout_after_move");
            admin::unlock(&pooled.dir)?;
            Ok(written)
        })();
        let outcome = match result {
            Ok(written) => {
                self.state.clear_intent(&id)?;
                tracing::info!(id, path = %path.display(), commit = %target.commit, files = written, "handed out pooled worktree");
                Ok(Worktree {
                    id,
                    path,
                    branch: target.branch,
                    branch_created: target.branch_created.is_some(),
                    head: target.commit.to_string(),
                    from_pool: true,
                    files_written: written,
                })
            }
            Err(source) => {
                tracing::warn!(id, step, error = %source, "pool hand-out failed, rolling back");
                self.roll_back(repo, &intent)?;
                Err(Error::CreateFailed {
                    id,
                    path,
                    step,
                    source: Box::new(source),
                })
            }
        };
        id_lock.remove();
        drop(repo_lock);
        outcome
    }

    /// Returns a finished worktree to the pool instead of deleting it: its
    /// HEAD is detached (its branch stays, free for others), its directory
    /// moves into the pool, ignored build outputs stay. Refused like
    /// [`remove`](Self::remove) when work could be lost; removed instead when
    /// the pool is full.
    pub fn release_to_pool(&self, id: &str) -> Result<Released> {
        Ok(self
            .release_to_pool_with(id, &ReleaseOptions::default())?
            .outcome)
    }

    /// [`release_to_pool`](Self::release_to_pool) with the options of a
    /// remove and the files of the last user to delete first. A worktree is
    /// pooled only when a remove without force would delete it (clean, no
    /// commits at stake, no live lock held by another process), its
    /// directory is real and the pool has room; otherwise it is removed as
    /// `options.remove` says (which refuses work at stake unless forced).
    /// Crash-safe: the move into the pool (and the branch deletion) is
    /// recorded first and finished by the next call.
    pub fn release_to_pool_with(&self, id: &str, options: &ReleaseOptions) -> Result<Release> {
        validate_id(id)?;
        if let Some(bad) = options.forget.iter().find(|name| {
            name.is_empty() || *name == "." || *name == ".." || name.contains(['/', '\0'])
        }) {
            tracing::debug!(name = %bad, "refusing a file to forget");
            return Err(Error::InvalidRequest {
                id: id.to_owned(),
                reason: "a file to forget must be a plain file name",
            });
        }
        let repo = self.repo()?;
        let _repo_lock = self.state.repo_lock()?;
        self.recover_locked(&repo)?;
        let id_lock = self.state.id_lock(id)?;
        let admins = admin::scan(&self.common_dir)?;
        let admin = self.find(id, &admins)?;
        let real_dir = std::fs::symlink_metadata(&admin.path).is_ok_and(|m| m.is_dir())
            && admin::owns(&admin.dir, &admin.path);
        let poolable = real_dir
            && self.pooled(&admins).len() < self.pool_size
            && self.main_root.as_deref() != Some(admin.path.as_path());
        let pooled = poolable
            && match self.check_removable(&repo, id, &admin, false, options.remove.delete_branch) {
                Ok(()) => true,
                Err(refused) if !options.remove.force => return Err(refused),
                Err(_) => false,
            };
        let head = resolve_head(&repo, &admin);
        let Some(head) = head.filter(|_| pooled) else {
            let removed = self.remove_locked(&repo, id, &admin, options.remove)?;
            id_lock.remove();
            return Ok(Release {
                branch_deleted: removed.branch_deleted.clone(),
                outcome: Released::Removed(removed),
            });
        };
        for name in &options.forget {
            let file = admin.path.join(name);
            match std::fs::symlink_metadata(&file) {
                Ok(metadata) if !metadata.is_dir() => match std::fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io("remove", &file)(e));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        let delete_branch = options
            .remove
            .delete_branch
            .then(|| admin.head.branch())
            .flatten()
            .and_then(|branch| {
                let found = repo.find_branch(branch, BranchType::Local).ok()?;
                let commit = found.get().target()?;
                Some((branch.to_owned(), commit.to_string()))
            });
        self.own_dir(&self.pool_dir)?;
        std::fs::create_dir_all(&self.pool_dir).map_err(io("create directory", &self.pool_dir))?;
        let mut n = 0;
        let slot = loop {
            let slot = self.pool_dir.join(format!("p{n}"));
            if std::fs::symlink_metadata(&slot).is_err() {
                break slot;
            }
            n += 1;
        };
        let intent = Intent::Release {
            id: id.to_owned(),
            path: admin.path.clone(),
            slot: slot.clone(),
            admin: admin.dir.clone(),
            head: head.to_string(),
            delete_branch,
        };
        self.state.write_intent(&intent)?;
        registry::fault_point("worktree.release_after_intent");
        finish_release(&intent)?;
        let branch_deleted = self.delete_released_branch(&repo, &intent)?;
        snapshot::record(&slot, &admin.dir)?;
        self.state.clear_intent(id)?;
        id_lock.remove();
        tracing::info!(id, slot = %slot.display(), branch_deleted, "returned worktree to the pool");
        Ok(Release {
            outcome: Released::Pooled(slot),
            branch_deleted,
        })
    }

    /// Deletes the branch a release recorded, once the worktree is pooled
    /// (detached): only if it is still at the commit that was checked and
    /// checked out nowhere. Idempotent. Returns the branch deleted.
    fn delete_released_branch(&self, repo: &Repository, intent: &Intent) -> Result<Option<String>> {
        let Intent::Release {
            delete_branch: Some((branch, commit)),
            ..
        } = intent
        else {
            return Ok(None);
        };
        let admins = admin::scan(&self.common_dir)?;
        if self.checked_out_in(branch, &admins).is_none()
            && let Ok(found) = repo.find_branch(branch, BranchType::Local)
            && found.get().target().map(|t| t.to_string()).as_deref() == Some(commit.as_str())
        {
            delete_local_branch(repo, found, branch)?;
            return Ok(Some(branch.clone()));
        }
        Ok(None)
    }

    /// The pooled worktrees, oldest first (by when they were pooled).
    pub fn pool(&self) -> Result<Vec<WorktreeInfo>> {
        let repo = self.repo()?;
        let mut pooled = self.pooled(&admin::scan(&self.common_dir)?);
        pooled.sort_by_key(|a| a.sidecar.as_ref().map_or(0, |s| s.created_unix));
        Ok(pooled.iter().map(|a| self.info(&repo, a)).collect())
    }

    /// Removes the pooled worktrees (directory and admin entry); a pooled
    /// worktree that someone made dirty is kept and reported. Returns the
    /// paths removed and the paths kept.
    pub fn drain_pool(&self) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
        self.trim_pool(0)
    }

    /// Removes pooled worktrees, oldest first, until at most `keep` are
    /// left (a dirty one is kept and reported, and counts). Returns the
    /// paths removed and the dirty paths kept.
    pub fn trim_pool(&self, keep: usize) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
        let repo = self.repo()?;
        let _repo_lock = self.state.repo_lock()?;
        self.recover_locked(&repo)?;
        let (mut removed, mut kept) = (Vec::new(), Vec::new());
        let mut pooled = self.pooled(&admin::scan(&self.common_dir)?);
        // Newest first: the oldest beyond `keep` go.
        pooled.sort_by_key(|a| std::cmp::Reverse(a.sidecar.as_ref().map_or(0, |s| s.created_unix)));
        for admin in pooled.into_iter().skip(keep) {
            let present = admin.path.is_dir();
            if present && !dirty_files(&admin.path)?.is_empty() {
                tracing::warn!(path = %admin.path.display(), "keeping dirty pooled worktree");
                kept.push(admin.path);
                continue;
            }
            // Moved to the trash first (atomic), so a crash never leaves a
            // half-deleted pooled worktree; recovery drops the admin entry of
            // a pooled worktree whose directory is gone, and the tombstone.
            let mut trash = None;
            if present && admin::owns(&admin.dir, &admin.path) {
                let slot = admin
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tombstone = self.tombstone(&format!(".pool-{slot}"))?;
                std::fs::rename(&admin.path, &tombstone)
                    .map_err(io("move worktree to the trash at", &tombstone))?;
                registry::fault_point("worktree.remove_after_rename");
                trash = Some(tombstone);
            }
            std::fs::remove_dir_all(&admin.dir).map_err(io("remove directory", &admin.dir))?;
            if let Some(trash) = trash {
                delete_tombstone(&trash)?;
            }
            removed.push(admin.path);
        }
        Ok((removed, kept))
    }

    // ----- copies of ignored files -------------------------------------------

    /// Gives worktree `id` a copy of the main worktree's ignored entries
    /// that match `patterns` (gitignore-style) or the lines of
    /// `.worktreeinclude` at the main worktree's root: dependency
    /// directories, build outputs, local `.env` files. Files are cloned by
    /// reflink where the file system supports it, else copied, in
    /// parallel; symlinks stay symlinks; modes are kept. Never a tracked
    /// file, never the worktrees dir, never over anything the worktree
    /// already has (those entries are skipped). Without patterns (or in a
    /// bare repository) nothing is read or copied.
    pub fn copy_ignored(&self, id: &str, patterns: &[String]) -> Result<Copied> {
        validate_id(id)?;
        let Some(root) = &self.main_root else {
            return Ok(Copied::default());
        };
        let Some(include) = copy::Include::load(root, patterns)? else {
            return Ok(Copied::default());
        };
        let path = self.path_of(id);
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(Error::NotFound {
                id: id.to_owned(),
                worktrees_dir: self.worktrees_dir.clone(),
            });
        }
        let entries = copy::select(root, &include, &self.worktrees_dir)?;
        let copied = copy::copy_entries(root, &path, entries)?;
        tracing::info!(
            id,
            entries = copied.entries.len(),
            skipped = copied.skipped.len(),
            files = copied.stats.files,
            reflinked = copied.stats.reflinked,
            bytes = copied.stats.bytes,
            "copied ignored entries of the main worktree"
        );
        Ok(copied)
    }

    // ----- lock -------------------------------------------------------------

    /// Locks a worktree with git's own lock (`git worktree list` shows the
    /// reason; prune leaves it alone) and records `owner`, so that cleanup
    /// can tell a worktree in use from an abandoned one.
    pub fn lock(&self, id: &str, reason: &str, owner: ProcessIdentity) -> Result<()> {
        validate_id(id)?;
        let _id_lock = self.state.id_lock(id)?;
        let admins = admin::scan(&self.common_dir)?;
        let admin = self.find(id, &admins)?;
        if let Some(lock) = lock_info(&admin)
            && lock.owner != Some(owner)
            && lock.owner_alive
        {
            return Err(Error::Locked {
                id: id.to_owned(),
                reason: lock.reason,
                owner: lock.owner,
            });
        }
        let mut sidecar = admin.sidecar.clone().unwrap_or_default();
        sidecar.owner = Some(owner);
        admin::write_sidecar(&admin.dir, &sidecar)?;
        admin::lock(&admin.dir, reason.trim())?;
        tracing::debug!(id, reason, pid = owner.pid, "locked worktree");
        Ok(())
    }

    /// Removes the lock (whoever holds it).
    pub fn unlock(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let _id_lock = self.state.id_lock(id)?;
        let admins = admin::scan(&self.common_dir)?;
        let admin = self.find(id, &admins)?;
        admin::unlock(&admin.dir)?;
        if let Some(mut sidecar) = admin.sidecar.clone() {
            sidecar.owner = None;
            admin::write_sidecar(&admin.dir, &sidecar)?;
        }
        Ok(())
    }

    // ----- list -------------------------------------------------------------

    /// Every worktree of the repository: the main one, those in the
    /// worktrees dir, pooled ones and any other linked worktree.
    pub fn list(&self) -> Result<Vec<WorktreeInfo>> {
        let repo = self.repo()?;
        let mut out = Vec::new();
        if let Some(root) = &self.main_root {
            let head = repo.head().ok();
            out.push(WorktreeInfo {
                id: root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: root.clone(),
                main: true,
                pooled: false,
                managed: false,
                branch: head
                    .as_ref()
                    .filter(|h| h.is_branch())
                    .and_then(|h| h.shorthand().map(str::to_owned)),
                head: head
                    .as_ref()
                    .and_then(|h| h.target())
                    .map(|o| o.to_string()),
                lock: None,
                prunable: false,
                dirty_files: dirty_files(root).unwrap_or_default(),
                unmerged_commits: Vec::new(),
                created: None,
            });
        }
        for admin in admin::scan(&self.common_dir)? {
            out.push(self.info(&repo, &admin));
        }
        Ok(out)
    }

    fn info(&self, repo: &Repository, admin: &Admin) -> WorktreeInfo {
        let parent = admin.path.parent();
        let head = resolve_head(repo, admin);
        let prunable = !admin.path.is_dir();
        WorktreeInfo {
            id: admin
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| admin.name()),
            path: admin.path.clone(),
            main: false,
            pooled: parent == Some(self.pool_dir.as_path()),
            managed: parent == Some(self.worktrees_dir.as_path()),
            branch: admin.head.branch().map(str::to_owned),
            head: head.map(|h| h.to_string()),
            lock: lock_info(admin),
            prunable,
            // An unreadable status or history is reported as work at stake,
            // so that cleanup never takes it for clean.
            dirty_files: if prunable {
                Vec::new()
            } else {
                dirty_files(&admin.path).unwrap_or_else(|error| {
                    vec![format!("(cannot read status: {})", chain(&error))]
                })
            },
            unmerged_commits: match head {
                Some(head) => unique_commits(repo, head, admin.head.branch())
                    .unwrap_or_else(|error| vec![format!("(cannot read history: {error})")]),
                None => Vec::new(),
            },
            created: admin.created(),
        }
    }

    fn find(&self, id: &str, admins: &[Admin]) -> Result<Admin> {
        let path = self.path_of(id);
        admins
            .iter()
            .find(|a| a.path == path)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                id: id.to_owned(),
                worktrees_dir: self.worktrees_dir.clone(),
            })
    }

    // ----- remove -----------------------------------------------------------

    /// Removes a worktree: its directory, its admin entry (only that entry,
    /// never a repo-wide prune) and optionally its branch. Refuses, listing
    /// what is at stake, when it has uncommitted changes, untracked files or
    /// commits that exist nowhere else, or is locked by a live process,
    /// unless forced. A directory already deleted by hand is fine. After
    /// those checks the directory is renamed to a tombstone in the trash dir
    /// (`<worktrees dir>/.trash/`) before anything is deleted, so a process
    /// killed midway never leaves a half-deleted worktree: the next mutating
    /// call (or [`recover`](Self::recover)) finishes the removal.
    pub fn remove(&self, id: &str, options: RemoveOptions) -> Result<Removed> {
        validate_id(id)?;
        let repo = self.repo()?;
        {
            let _repo_lock = self.state.repo_lock()?;
            self.recover_locked(&repo)?;
        }
        let id_lock = self.state.id_lock(id)?;
        let admins = admin::scan(&self.common_dir)?;
        let admin = self.find(id, &admins)?;
        let removed = self.remove_locked(&repo, id, &admin, options)?;
        id_lock.remove();
        Ok(removed)
    }

    /// Refuses when work could be lost: a lock held by another live
    /// process, uncommitted changes, untracked files, or commits of HEAD that
    /// exist nowhere else (for a branch only when `branch_counts`: a branch
    /// that is kept keeps its commits).
    fn check_removable(
        &self,
        repo: &Repository,
        id: &str,
        admin: &Admin,
        force: bool,
        branch_counts: bool,
    ) -> Result<()> {
        if force {
            return Ok(());
        }
        if let Some(lock) = lock_info(admin)
            && lock.owner_alive
            && lock.owner != Some(ProcessIdentity::current())
        {
            return Err(Error::Locked {
                id: id.to_owned(),
                reason: lock.reason,
                owner: lock.owner,
            });
        }
        if admin.path.is_dir() {
            let files = dirty_files(&admin.path)?;
            if !files.is_empty() {
                return Err(Error::Dirty {
                    id: id.to_owned(),
                    path: admin.path.clone(),
                    files,
                });
            }
        }
        let counts = branch_counts || admin.head.branch().is_none();
        if counts && let Some(head) = resolve_head(repo, admin) {
            let commits = unique_commits(repo, head, admin.head.branch())?;
            if !commits.is_empty() {
                return Err(Error::Unmerged {
                    id: id.to_owned(),
                    branch: admin.head.branch().map(str::to_owned),
                    commits,
                });
            }
        }
        Ok(())
    }

    fn remove_locked(
        &self,
        repo: &Repository,
        id: &str,
        admin: &Admin,
        options: RemoveOptions,
    ) -> Result<Removed> {
        if self.main_root.as_deref() == Some(admin.path.as_path()) {
            return Err(Error::MainWorktree {
                path: admin.path.clone(),
            });
        }
        self.check_removable(repo, id, admin, options.force, true)?;
        let delete_branch = options.delete_branch.then(|| admin.head.branch()).flatten();
        if let Some(branch) = delete_branch {
            let others: Vec<Admin> = admin::scan(&self.common_dir)?
                .into_iter()
                .filter(|a| a.dir != admin.dir)
                .collect();
            if let Some(worktree) = self.checked_out_in(branch, &others) {
                return Err(Error::BranchCheckedOut {
                    branch: branch.to_owned(),
                    worktree,
                });
            }
        }
        let delete_branch = delete_branch.and_then(|branch| {
            let found = repo.find_branch(branch, BranchType::Local).ok()?;
            let commit = found.get().target()?;
            Some((branch.to_owned(), commit.to_string()))
        });
        let metadata = std::fs::symlink_metadata(&admin.path);
        if metadata.as_ref().is_ok_and(|m| m.file_type().is_symlink()) {
            // Not even with force: what it points at is not the worktree's
            // to delete. Deleting the link by hand lets the remove finish.
            return Err(Error::Escapes {
                path: admin.path.clone(),
                resolved: std::fs::read_link(&admin.path).unwrap_or_default(),
                inside: self.worktrees_dir.clone(),
            });
        }
        let missing = metadata.is_err();
        if !missing && !admin::owns(&admin.dir, &admin.path) {
            return Err(Error::InvalidRequest {
                id: id.to_owned(),
                reason: "its directory's .git file does not point at its admin entry; not deleting it",
            });
        }
        // The directory leaves its place in one atomic rename before anything
        // is deleted, so a crash never leaves a half-deleted worktree behind a
        // live admin entry; the intent lets the next call finish the job.
        let trash = self.tombstone(id)?;
        let intent = Intent::Remove {
            id: id.to_owned(),
            path: admin.path.clone(),
            trash: trash.clone(),
            admin: admin.dir.clone(),
            delete_branch,
        };
        self.state.write_intent(&intent)?;
        if !missing && let Err(error) = std::fs::rename(&admin.path, &trash) {
            self.state.clear_intent(id)?;
            return Err(io("move worktree to the trash at", &trash)(error));
        }
        registry::fault_point("worktree.remove_after_rename");
        let branch_deleted = self.finish_remove(repo, &intent)?;
        self.state.clear_intent(id)?;
        tracing::info!(id, path = %admin.path.display(), missing, branch_deleted, "removed worktree");
        Ok(Removed {
            id: id.to_owned(),
            path: admin.path.clone(),
            directory_was_missing: missing,
            branch_deleted,
        })
    }

    /// A free tombstone path for `name` in the trash dir (created if
    /// needed): `<worktrees dir>/.trash/<name>-<pid>`, on the worktrees dir's
    /// file system so that moving a worktree there is one atomic rename. A
    /// leftover of a crashed process that had our pid is deleted first (the
    /// caller holds the lock that guards `name`).
    fn tombstone(&self, name: &str) -> Result<PathBuf> {
        let dir = self.worktrees_dir.join(TRASH_DIR);
        self.own_dir(&dir)?;
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let trash = dir.join(format!("{name}-{}", std::process::id()));
        delete_tombstone(&trash)?;
        Ok(trash)
    }

    /// Finishes a remove whose directory has left its place (moved to its
    /// tombstone, or deleted by hand): the admin entry (unless it now
    /// belongs to another worktree), the branch (only if still at the
    /// commit that was checked and checked out nowhere), then the
    /// tombstone. Idempotent. Returns the branch deleted.
    fn finish_remove(&self, repo: &Repository, intent: &Intent) -> Result<Option<String>> {
        let Intent::Remove {
            path,
            trash,
            admin: dir,
            delete_branch,
            ..
        } = intent
        else {
            return Ok(None);
        };
        match admin::read(dir)? {
            Some(other) if other.path != *path => {
                tracing::warn!(admin = %dir.display(), path = %other.path.display(), "admin entry now belongs to another worktree; keeping it");
            }
            _ => match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove directory", dir)(e)),
            },
        }
        let mut branch_deleted = None;
        if let Some((branch, commit)) = delete_branch {
            let admins = admin::scan(&self.common_dir)?;
            if self.checked_out_in(branch, &admins).is_none()
                && let Ok(found) = repo.find_branch(branch, BranchType::Local)
                && found.get().target().map(|t| t.to_string()).as_deref() == Some(commit.as_str())
            {
                delete_local_branch(repo, found, branch)?;
                branch_deleted = Some(branch.clone());
            }
        }
        delete_tombstone(trash)?;
        Ok(branch_deleted)
    }

    /// Deletes tombstones left in the trash dir by crashed processes; one
    /// named after a worktree id whose lock is held belongs to a remove in
    /// progress and is left alone. Called with the repository lock held.
    fn sweep_trash(&self) -> Result<()> {
        let dir = self.worktrees_dir.join(TRASH_DIR);
        self.own_dir(&dir)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("read directory", dir)(e)),
        };
        for entry in entries {
            let trash = entry.map_err(io("read directory", &dir))?.path();
            let name = trash
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id = name.rsplit_once('-').map_or(name.as_str(), |(id, _)| id);
            let lock = if validate_id(id).is_ok() {
                match FileLock::try_acquire(&self.state.id_lock_path(id))? {
                    Some(lock) => Some(lock),
                    None => continue,
                }
            } else {
                None
            };
            tracing::warn!(path = %trash.display(), "deleting a tombstone a crash left");
            delete_tombstone(&trash)?;
            if let Some(lock) = lock {
                lock.remove();
            }
        }
        Ok(())
    }

    /// Refuses one of our own directories in the worktrees dir (the trash,
    /// the pool) that is a symlink or not a directory: deleting in it or
    /// moving worktrees into it would reach outside. Absent is fine.
    fn own_dir(&self, dir: &Path) -> Result<()> {
        match std::fs::symlink_metadata(dir) {
            Ok(metadata) if !metadata.is_dir() => Err(Error::Escapes {
                path: dir.to_owned(),
                resolved: std::fs::read_link(dir).unwrap_or_else(|_| dir.to_owned()),
                inside: self.worktrees_dir.clone(),
            }),
            _ => Ok(()),
        }
    }

    // ----- cleanup ----------------------------------------------------------

    /// Worktrees in the worktrees dir whose id starts with `prefix` and that
    /// are older than `max_age`, split into those safe to remove and those
    /// kept (locked by a live process, dirty, or with unmerged commits).
    /// Nothing is removed.
    pub fn select_stale(&self, prefix: &str, max_age: Duration) -> Result<Selection> {
        let mut selection = Selection::default();
        for info in self.list()? {
            if !info.managed || !info.id.starts_with(prefix) {
                continue;
            }
            if info.age().is_none_or(|age| age < max_age) {
                continue;
            }
            if let Some(lock) = info.lock.clone().filter(|l| l.owner_alive) {
                selection.skipped.push((info, SkipReason::Locked(lock)));
            } else if !info.dirty_files.is_empty() {
                let files = info.dirty_files.clone();
                selection.skipped.push((info, SkipReason::Dirty(files)));
            } else if !info.unmerged_commits.is_empty() {
                let commits = info.unmerged_commits.clone();
                selection
                    .skipped
                    .push((info, SkipReason::Unmerged(commits)));
            } else {
                selection.removable.push(info);
            }
        }
        Ok(selection)
    }

    // ----- recovery ---------------------------------------------------------

    /// Rolls back (or, for a move into the pool or a remove whose directory
    /// has left its place, finishes) every operation that a crashed process
    /// left half done, drops pooled entries whose directory is gone and
    /// deletes leftover tombstones in the trash dir. Every mutating call does this
    /// first; `isolane doctor` can call it on its own. Returns the ids
    /// repaired.
    pub fn recover(&self) -> Result<Vec<String>> {
        let repo = self.repo()?;
        let _repo_lock = self.state.repo_lock()?;
        self.recover_locked(&repo)
    }

    fn recover_locked(&self, repo: &Repository) -> Result<Vec<String>> {
        let mut repaired = Vec::new();
        for intent in self.state.intents_recorded()? {
            let id = intent.id().to_owned();
            // Held by a live process: in progress, not abandoned.
            let Some(lock) = FileLock::try_acquire(&self.state.id_lock_path(&id))? else {
                continue;
            };
            // Finished (and unlocked) between our reading and our locking.
            if !self.state.has_intent(&id) {
                lock.remove();
                continue;
            }
            tracing::warn!(id, ?intent, "repairing an operation a crash interrupted");
            match &intent {
                Intent::Release { .. } => {
                    finish_release(&intent)?;
                    self.delete_released_branch(repo, &intent)?;
                }
                Intent::Remove { path, admin, .. } if admin::owns(admin, path) => {
                    tracing::info!(
                        id,
                        "remove stopped before moving the directory; worktree kept whole"
                    );
                }
                Intent::Remove { .. } => {
                    self.finish_remove(repo, &intent)?;
                }
                _ => self.roll_back(repo, &intent)?,
            }
            self.state.clear_intent(&id)?;
            lock.remove();
            repaired.push(id);
        }
        // A pooled worktree whose directory is gone (a drain killed after
        // moving it to the trash) is of no use: drop its admin entry.
        for admin in self.pooled(&admin::scan(&self.common_dir)?) {
            if std::fs::symlink_metadata(&admin.path).is_err() {
                tracing::warn!(admin = %admin.dir.display(), "dropping a pooled worktree whose directory is gone");
                std::fs::remove_dir_all(&admin.dir).map_err(io("remove directory", &admin.dir))?;
                repaired.push(admin.name());
            }
        }
        self.sweep_trash()?;
        Ok(repaired)
    }

    /// Undoes a create or a hand-out. Idempotent.
    fn roll_back(&self, repo: &Repository, intent: &Intent) -> Result<()> {
        let (dirs, admin_dir, branch_created) = match intent {
            Intent::Create {
                path,
                admin,
                branch_created,
                ..
            } => (vec![path.clone()], admin, branch_created),
            Intent::Handout {
                slot,
                path,
                admin,
                branch_created,
                ..
            } => (vec![slot.clone(), path.clone()], admin, branch_created),
            Intent::Release { .. } | Intent::Remove { .. } => return Ok(()),
        };
        for dir in dirs {
            let ours = admin::owns(admin_dir, &dir)
                || std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
            if ours {
                std::fs::remove_dir_all(&dir).map_err(io("remove directory", &dir))?;
            }
        }
        match std::fs::remove_dir_all(admin_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove directory", admin_dir)(e)),
        }
        if let Some((branch, commit)) = branch_created {
            let admins = admin::scan(&self.common_dir)?;
            if self.checked_out_in(branch, &admins).is_none()
                && let Ok(found) = repo.find_branch(branch, BranchType::Local)
                && found.get().target().map(|t| t.to_string()).as_deref() == Some(commit.as_str())
            {
                delete_local_branch(repo, found, branch)?;
            }
        }
        Ok(())
    }
}

/// Moves a worktree into its pool slot (idempotent, so recovery can finish
/// it): detached HEAD, pooled sidecar, git lock, directory moved, admin
/// entry re-pointed.
fn finish_release(intent: &Intent) -> Result<()> {
    let Intent::Release {
        path,
        slot,
        admin: dir,
        head,
        ..
    } = intent
    else {
        return Ok(());
    };
    admin::lock(dir, POOL_REASON)?;
    admin::write_head(dir, head)?;
    admin::write_sidecar(
        dir,
        &Sidecar {
            created_unix: admin::now_unix(),
            owner: None,
            pooled: true,
        },
    )?;
    if std::fs::symlink_metadata(slot).is_err() {
        std::fs::rename(path, slot).map_err(io("move worktree into the pool at", slot))?;
    }
    registry::fault_point("worktree.release_after_move");
    admin::set_path(dir, slot)
}

/// Deletes a tombstone (a worktree directory moved to the trash), if it is
/// there. Idempotent, so a delete killed midway is finished by the next.
fn delete_tombstone(trash: &Path) -> Result<()> {
    // A tombstone that is a symlink (a worktree path someone replaced by
    // one) is unlinked: listing it would list, and delete, its target.
    match std::fs::symlink_metadata(trash) {
        Ok(metadata) if !metadata.is_dir() => {
            return match std::fs::remove_file(trash) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", trash)(e)),
                _ => Ok(()),
            };
        }
        _ => {}
    }
    let entries = match std::fs::read_dir(trash) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read directory", trash)(e)),
    };
    let gone = |result: std::io::Result<()>, path: &Path| match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path)(e)),
        _ => Ok(()),
    };
    for (n, entry) in entries.enumerate() {
        let entry = entry.map_err(io("read directory", trash))?;
        let path = entry.path();
        // The entry's own type: a symlink is removed, never followed.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            gone(std::fs::remove_dir_all(&path), &path)?;
        } else {
            gone(std::fs::remove_file(&path), &path)?;
        }
        if n == 0 {
            registry::fault_point("worktree.remove_during_trash");
        }
    }
    gone(std::fs::remove_dir(trash), trash)
}

/// `path` resolved as far as it exists: its deepest existing ancestor made
/// canonical, with the rest appended.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut current = path;
    loop {
        if let Ok(resolved) = current.canonicalize() {
            return rest.iter().rev().fold(resolved, |acc, part| acc.join(part));
        }
        match (current.parent(), current.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                current = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

/// Refuses a worktrees dir that resolves outside the main worktree `root`.
fn confine(path: &Path, resolved: &Path, root: &Path) -> Result<()> {
    if resolved.starts_with(root) {
        Ok(())
    } else {
        Err(Error::Escapes {
            path: path.to_owned(),
            resolved: resolved.to_owned(),
            inside: root.to_owned(),
        })
    }
}

fn lock_info(admin: &Admin) -> Option<LockInfo> {
    let reason = admin.locked.as_ref()?.trim().to_owned();
    let owner = admin.sidecar.as_ref().and_then(|s| s.owner);
    Some(LockInfo {
        owner_alive: owner.is_none_or(|o| o.is_alive()),
        reason,
        owner,
    })
}

fn resolve_head(repo: &Repository, admin: &Admin) -> Option<Oid> {
    match &admin.head {
        Head::Detached(hex) => Oid::from_str(hex).ok(),
        Head::Branch(branch) => repo
            .find_branch(branch, BranchType::Local)
            .ok()
            .and_then(|b| b.get().target()),
        Head::Unknown => None,
    }
}

/// [`dirty_files`] as the git CLI sees them; `None` when git fails.
fn git_status(path: &Path) -> Option<Vec<String>> {
    let output = std::process::Command::new("git")
        .args([
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--ignore-submodules=all",
        ])
        .current_dir(path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let mut files = Vec::new();
    let mut fields = output.stdout.split(|&b| b == 0);
    while let Some(field) = fields.next() {
        if field.len() < 4 {
            continue;
        }
        files.push(String::from_utf8_lossy(&field[3..]).into_owned());
        // A rename or copy is followed by its source.
        if matches!(field[0], b'R' | b'C') {
            fields.next();
        }
    }
    Some(files)
}

/// An error with its causes (libgit2's own message included).
fn chain(error: &Error) -> String {
    let mut out = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Changed, staged and untracked (not ignored) files of the worktree at
/// `path`.
pub(crate) fn dirty_files(path: &Path) -> Result<Vec<String>> {
    let repo = Repository::open(path).map_err(git("open worktree", path.display()))?;
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = match repo.statuses(Some(&mut options)) {
        Ok(statuses) => statuses,
        // libgit2 refuses some trees git reads (directories nested more
        // than 100 deep): ask git, and keep libgit2's word if git fails too.
        Err(source) => {
            return git_status(path).ok_or_else(|| Error::Git {
                action: "read status of",
                target: path.display().to_string(),
                source,
            });
        }
    };
    // libgit2 knows no sparse checkout: a skip-worktree path, absent by
    // design, is not deleted.
    let index = repo.index().ok();
    let skipped = |path: &[u8]| {
        index
            .as_ref()
            .and_then(|index| index.get_path(Path::new(std::ffi::OsStr::from_bytes(path)), 0))
            .is_some_and(|entry| entry.flags_extended & 0x4000 != 0)
    };
    Ok(statuses
        .iter()
        .filter(|s| !s.status().is_empty() && !s.status().contains(git2::Status::IGNORED))
        .filter(|s| s.status() != git2::Status::WT_DELETED || !skipped(s.path_bytes()))
        .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
        .collect())
}

/// Commits reachable from `head` that no ref other than `own_branch`
/// reaches, newest first (at most 1000).
fn unique_commits(repo: &Repository, head: Oid, own_branch: Option<&str>) -> Result<Vec<String>> {
    let own = own_branch.map(|b| format!("refs/heads/{b}"));
    let walk = (|| {
        let mut walk = repo.revwalk()?;
        walk.push(head)?;
        for reference in repo.references()?.flatten() {
            if reference.name() == own.as_deref() || reference.name().is_none() {
                continue;
            }
            if let Ok(commit) = reference.peel_to_commit() {
                walk.hide(commit.id())?;
            }
        }
        Ok::<_, git2::Error>(walk)
    })();
    walk.and_then(|walk| {
        walk.take(1000)
            .map(|oid| oid.map(|oid| oid.to_string()))
            .collect()
    })
    .map_err(git("walk the history of", head))
}

/// Deletes local `branch`, whose checkout in any worktree the caller has
/// ruled out with [`Worktrees::checked_out_in`], with its configuration (as
/// `git branch -d` does). Not `git2::Branch::delete`: libgit2 1.9 reports a
/// branch as "the current HEAD of a linked repository" whenever the admin
/// entry of *any* worktree cannot be read (an operator-precedence slip in
/// `git_repository_foreach_worktree`), which is the case for a moment while
/// another process creates or removes a worktree; concurrent removes then
/// failed after their directory was gone.
fn delete_local_branch(repo: &Repository, found: git2::Branch<'_>, branch: &str) -> Result<()> {
    found
        .into_reference()
        .delete()
        .map_err(git("delete branch", branch))?;
    let prefix = format!("branch.{branch}.");
    let mut config = repo
        .config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .map_err(git("delete configuration of branch", branch))?;
    let mut names = Vec::new();
    {
        let entries = config
            .entries(None)
            .map_err(git("read configuration of branch", branch))?;
        entries
            .for_each(|entry| {
                // `branch.<branch>.<key>` only: `branch.fix.1.remote` belongs
                // to branch `fix.1`, not to `fix`.
                if let Some(name) = entry.name().filter(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|key| !key.contains('.'))
                }) {
                    names.push(name.to_owned());
                }
            })
            .map_err(git("read configuration of branch", branch))?;
    }
    // A key with several values is listed once per value.
    names.sort();
    names.dedup();
    for name in names {
        match config.remove_multivar(&name, ".*") {
            Err(e) if e.code() != git2::ErrorCode::NotFound => {
                return Err(git("delete configuration of branch", branch)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The commit `revision` names in `repo`.
pub(crate) fn resolve_revision(repo: &Repository, revision: &str) -> Result<Oid> {
    repo.revparse_single(revision)
        .and_then(|object| object.peel_to_commit())
        .map(|commit| commit.id())
        .map_err(|source| Error::BaseNotFound {
            base: revision.to_owned(),
            source,
        })
}
