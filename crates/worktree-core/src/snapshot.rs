//! A cheap proof that a pooled worktree is still exactly as clean as when it
//! was pooled: the stat data of every tracked file matches the index, and no
//! tracked directory (nor the index) changed since the snapshot, so no file
//! appeared or vanished. Anything that does not match sends the caller to a
//! full status scan, which has the final word.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, git, io};
use crate::state::write_atomic;

const FILE: &str = "isolane-pool-snapshot.json";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Snapshot {
    index: (i64, i64, u64),
    dirs: Vec<(PathBuf, i64, i64)>,
}

fn stamp(meta: &std::fs::Metadata) -> (i64, i64) {
    (meta.mtime(), meta.mtime_nsec())
}

/// The tracked directories (relative, the root as "") of the index at
/// `index_path`.
fn tracked_dirs(index_path: &Path) -> Result<BTreeSet<PathBuf>> {
    let index = git2::Index::open(index_path).map_err(git("open index", index_path.display()))?;
    let mut dirs = BTreeSet::new();
    dirs.insert(PathBuf::new());
    for entry in index.iter() {
        let mut parent = Path::new(OsStr::from_bytes(&entry.path)).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            if !dirs.insert(dir.to_owned()) {
                break;
            }
            parent = dir.parent();
        }
    }
    Ok(dirs)
}

fn take(root: &Path, admin: &Path) -> Result<Snapshot> {
    let index_path = admin.join("index");
    let dirs = tracked_dirs(&index_path)?;
    let index_meta = std::fs::metadata(&index_path).map_err(io("stat", &index_path))?;
    let (s, ns) = stamp(&index_meta);
    let mut stamped = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let path = root.join(&dir);
        let meta = std::fs::symlink_metadata(&path).map_err(io("stat", &path))?;
        let (s, ns) = stamp(&meta);
        stamped.push((dir, s, ns));
    }
    Ok(Snapshot {
        index: (s, ns, index_meta.size()),
        dirs: stamped,
    })
}

/// Records the snapshot of the (clean) worktree at `root`.
pub(crate) fn record(root: &Path, admin: &Path) -> Result<()> {
    let snapshot = take(root, admin)?;
    let json = serde_json::to_vec(&snapshot).expect("a snapshot always serializes");
    write_atomic(&admin.join(FILE), &json)
}

/// Forgets the snapshot (the worktree leaves the pool).
pub(crate) fn forget(admin: &Path) {
    let _ = std::fs::remove_file(admin.join(FILE));
}

/// The worktree's index if the worktree at `root` is provably unchanged
/// since [`record`]; `None` means "not proven", not "dirty".
pub(crate) fn unchanged(root: &Path, admin: &Path) -> Option<git2::Index> {
    let bytes = std::fs::read(admin.join(FILE)).ok()?;
    let recorded = serde_json::from_slice::<Snapshot>(&bytes).ok()?;
    let index_path = admin.join("index");
    let index_meta = std::fs::metadata(&index_path).ok()?;
    let (s, ns) = stamp(&index_meta);
    if recorded.index != (s, ns, index_meta.size()) {
        return None;
    }
    let dirs_same = recorded.dirs.par_iter().all(|(dir, s, ns)| {
        std::fs::symlink_metadata(root.join(dir))
            .is_ok_and(|m| m.is_dir() && stamp(&m) == (*s, *ns))
    });
    if !dirs_same {
        return None;
    }
    let index = git2::Index::open(&index_path).ok()?;
    let entries: Vec<git2::IndexEntry> = index.iter().collect();
    let files_same = entries.par_iter().all(|entry| {
        if entry.mode == 0o160_000 {
            return true;
        }
        let path = root.join(OsStr::from_bytes(&entry.path));
        std::fs::symlink_metadata(path).is_ok_and(|m| {
            m.mtime() as i32 == entry.mtime.seconds()
                && m.mtime_nsec() as u32 == entry.mtime.nanoseconds()
                && m.ctime() as i32 == entry.ctime.seconds()
                && m.ctime_nsec() as u32 == entry.ctime.nanoseconds()
                && m.ino() as u32 == entry.ino
                && m.size() as u32 == entry.file_size
        })
    });
    files_same.then_some(index)
}
