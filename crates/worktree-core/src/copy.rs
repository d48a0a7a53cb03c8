//! Copies of the main worktree's ignored entries (dependency directories,
//! build outputs, local `.env` files) into a new worktree, so that it does
//! not start with a cold install or build.
//!
//! What is copied: the entries that git ignores in the main worktree (as
//! `git status --ignored` lists them: an ignored directory as a whole) and
//! that match the given gitignore-style patterns or those of
//! `.worktreeinclude` at the main worktree's root. Never a tracked file,
//! never the worktrees dir, never anything the new worktree already has at
//! that path (a tracked file of its commit, or a pooled worktree's kept
//! build output), nor through a symlink of the new worktree: those are
//! skipped. Missing parent directories are created (they hold ignored
//! entries only). An ignored directory that matches no
//! pattern is looked into only for a pattern that names a path inside it
//! (`target/debug/`).
//!
//! How: every regular file is cloned by reflink (copy-on-write, the
//! `FICLONE` ioctl) where the file system supports it, else copied; the
//! directories are walked by several threads; symlinks are recreated as
//! symlinks (never followed); permission bits are kept. Sockets, FIFOs and
//! device files are skipped.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use git2::{Repository, StatusOptions};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;

use crate::error::{Error, Result, git, io};

/// The file at the main worktree's root whose gitignore-style patterns
/// name ignored entries to copy into new worktrees.
pub const WORKTREE_INCLUDE: &str = ".worktreeinclude";

/// What [`copy_tree`] (or a whole [`Worktrees::copy_ignored`](crate::Worktrees::copy_ignored)) copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyStats {
    /// Regular files copied.
    pub files: u64,
    /// Of those, the files cloned by reflink (sharing their blocks until
    /// either side writes).
    pub reflinked: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks recreated.
    pub symlinks: u64,
}

impl CopyStats {
    fn add(&mut self, other: CopyStats) {
        self.files += other.files;
        self.reflinked += other.reflinked;
        self.bytes += other.bytes;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
    }
}

/// What [`Worktrees::copy_ignored`](crate::Worktrees::copy_ignored) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Copied {
    /// The entries copied, relative to the worktree's root.
    pub entries: Vec<PathBuf>,
    /// Matching entries left out because the worktree already has
    /// something at that path, or something other than a directory (a
    /// tracked symlink, say) on the way to it.
    pub skipped: Vec<PathBuf>,
    /// Totals over every entry copied.
    pub stats: CopyStats,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    reflinked: AtomicU64,
    bytes: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
}

impl Counters {
    fn stats(&self) -> CopyStats {
        CopyStats {
            files: self.files.load(Ordering::Relaxed),
            reflinked: self.reflinked.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dirs: self.dirs.load(Ordering::Relaxed),
            symlinks: self.symlinks.load(Ordering::Relaxed),
        }
    }
}

/// Copies `from` (a file, a symlink or a directory tree) to `to`, which
/// must not exist: files by reflink where the file system supports it,
/// else by copy, directories by several threads, symlinks as symlinks,
/// permission bits kept. What was copied stays if it fails midway.
pub fn copy_tree(from: &Path, to: &Path) -> Result<CopyStats> {
    let counters = Counters::default();
    copy_entry(from, to, &counters)?;
    Ok(counters.stats())
}

fn copy_entry(from: &Path, to: &Path, counters: &Counters) -> Result<()> {
    let metadata = std::fs::symlink_metadata(from).map_err(io("stat", from))?;
    let kind = metadata.file_type();
    if kind.is_dir() {
        copy_dir(from, to, metadata.permissions().mode(), counters)
    } else if kind.is_symlink() {
        let target = std::fs::read_link(from).map_err(io("read symlink", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io("create symlink", to))?;
        counters.symlinks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    } else if kind.is_file() {
        copy_file(from, to, metadata.permissions().mode(), counters)
    } else {
        tracing::debug!(path = %from.display(), "not copying a special file");
        Ok(())
    }
}

fn copy_dir(from: &Path, to: &Path, mode: u32, counters: &Counters) -> Result<()> {
    // Writable by us while it fills; its own mode once full.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .map_err(io("create directory", to))?;
    counters.dirs.fetch_add(1, Ordering::Relaxed);
    let entries = std::fs::read_dir(from)
        .map_err(io("read directory", from))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io("read directory", from))?;
    entries
        .par_iter()
        .try_for_each(|name| copy_entry(&from.join(name), &to.join(name), counters))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io("set the permissions of", to))
}

fn copy_file(from: &Path, to: &Path, mode: u32, counters: &Counters) -> Result<()> {
    // A reflink shares the blocks (instant, no space); where the file
    // system cannot, a copy (`copy_file_range`, in the kernel).
    let copied = reflink_copy::reflink_or_copy(from, to).map_err(io("copy to", to))?;
    let bytes = match copied {
        None => {
            counters.reflinked.fetch_add(1, Ordering::Relaxed);
            std::fs::symlink_metadata(to).map_or(0, |m| m.len())
        }
        Some(bytes) => bytes,
    };
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io("set the permissions of", to))?;
    counters.files.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

/// The patterns of what to copy: `patterns` (from the caller's
/// configuration) and the lines of `<main root>/.worktreeinclude` when it
/// is a regular file. `None` when there are none.
pub(crate) struct Include {
    matcher: Gitignore,
    /// Every positive pattern, without a leading `/`: the ones naming a
    /// path inside a directory make the walk look into it.
    anchors: Vec<String>,
}

impl Include {
    pub(crate) fn load(main_root: &Path, patterns: &[String]) -> Result<Option<Self>> {
        let mut builder = GitignoreBuilder::new(main_root);
        let mut lines: Vec<String> = Vec::new();
        for pattern in patterns {
            builder
                .add_line(None, pattern)
                .map_err(|source| Error::CopyPattern {
                    origin: "the options".to_owned(),
                    source,
                })?;
            lines.push(pattern.clone());
        }
        let file = main_root.join(WORKTREE_INCLUDE);
        if std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
            let text = std::fs::read_to_string(&file).map_err(io("read", &file))?;
            for line in text.lines() {
                builder
                    .add_line(Some(file.clone()), line)
                    .map_err(|source| Error::CopyPattern {
                        origin: file.display().to_string(),
                        source,
                    })?;
                lines.push(line.to_owned());
            }
        }
        let anchors: Vec<String> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
            .map(|l| l.trim_start_matches('/').to_owned())
            .collect();
        if anchors.is_empty() {
            return Ok(None);
        }
        let matcher = builder.build().map_err(|source| Error::CopyPattern {
            origin: file.display().to_string(),
            source,
        })?;
        Ok(Some(Self { matcher, anchors }))
    }

    fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        self.matcher
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }

    /// Whether a pattern names a path inside directory `rel`.
    fn looks_inside(&self, rel: &Path) -> bool {
        let prefix = format!("{}/", rel.display());
        self.anchors
            .iter()
            .any(|a| a.starts_with(&prefix) && a.len() > prefix.len())
    }
}

/// The ignored entries of the main worktree at `main_root` that `include`
/// selects, relative to it; nothing under `skip` (the worktrees dir).
pub(crate) fn select(main_root: &Path, include: &Include, skip: &Path) -> Result<Vec<PathBuf>> {
    let repo = Repository::open(main_root).map_err(git("open", main_root.display()))?;
    let mut options = StatusOptions::new();
    options
        .include_ignored(true)
        .recurse_ignored_dirs(false)
        .include_untracked(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(git("read ignored files of", main_root.display()))?;
    let mut selected = Vec::new();
    let mut look_into = Vec::new();
    for status in statuses.iter() {
        if !status.status().contains(git2::Status::IGNORED) {
            continue;
        }
        let Ok(raw) = std::str::from_utf8(status.path_bytes()) else {
            continue;
        };
        let is_dir = raw.ends_with('/');
        let rel = PathBuf::from(raw.trim_end_matches('/'));
        let full = main_root.join(&rel);
        if full.starts_with(skip) || skip.starts_with(&full) {
            continue;
        }
        if include.matches(&rel, is_dir) {
            selected.push(rel);
        } else if is_dir && include.looks_inside(&rel) {
            look_into.push(rel);
        }
    }
    // Inside ignored directories that match no pattern, only where a
    // pattern names a path: everything in them is ignored too.
    while let Some(dir) = look_into.pop() {
        let full = main_root.join(&dir);
        let Ok(entries) = std::fs::read_dir(&full) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(io("read directory", &full))?;
            let rel = dir.join(entry.file_name());
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if include.matches(&rel, is_dir) {
                selected.push(rel);
            } else if is_dir && include.looks_inside(&rel) {
                look_into.push(rel);
            }
        }
    }
    selected.sort();
    Ok(selected)
}

/// Copies each of `entries` (relative paths) from `main_root` into
/// `worktree`, the entries in parallel, creating missing parent
/// directories; one that the worktree already has, or that a non-directory
/// on its way (a symlink, a file) would lead elsewhere, is skipped.
pub(crate) fn copy_entries(
    main_root: &Path,
    worktree: &Path,
    entries: Vec<PathBuf>,
) -> Result<Copied> {
    let outcomes = entries
        .into_par_iter()
        .map(|rel| {
            let to = worktree.join(&rel);
            if !parents_ready(main_root, worktree, &rel)? || std::fs::symlink_metadata(&to).is_ok()
            {
                return Ok((rel, None));
            }
            let stats = copy_tree(&main_root.join(&rel), &to)?;
            Ok((rel, Some(stats)))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut copied = Copied::default();
    for (rel, stats) in outcomes {
        match stats {
            Some(stats) => {
                copied.stats.add(stats);
                copied.entries.push(rel);
            }
            None => copied.skipped.push(rel),
        }
    }
    Ok(copied)
}

/// Makes sure every directory on the way to `rel` in `worktree` is a real
/// directory, creating the missing ones (with the main worktree's modes;
/// they hold ignored entries only, so `git status` stays clean). `false`
/// when one is not a directory (a tracked symlink must not lead the copy
/// elsewhere, nor a file be replaced).
fn parents_ready(main_root: &Path, worktree: &Path, rel: &Path) -> Result<bool> {
    let mut parents: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    parents.reverse();
    for parent in parents {
        let dir = worktree.join(parent);
        match std::fs::symlink_metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mode = std::fs::metadata(main_root.join(parent))
                    .map_or(0o755, |m| m.permissions().mode() & 0o7777);
                match std::fs::DirBuilder::new().mode(mode).create(&dir) {
                    Ok(()) => {}
                    // A parallel copy made it first.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io("create directory", &dir)(e)),
                }
            }
            Err(e) => return Err(io("stat", &dir)(e)),
        }
    }
    Ok(true)
}
