//! A parallel checkout: the files of a tree are written from the object
//! database by several threads, and the index is built from the stat data of
//! what was written, so that `git status` finds it clean without re-reading a
//! single file.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use git2::{IndexEntry, IndexTime, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::convert::{Context, Filters, Plan};
use crate::error::{Error, Result, git, io};
use crate::sparse::Sparse;

/// Files per work item of the parallel checkout.
const CHUNK: usize = 32;

const MODE_FILE: u32 = 0o100_644;
const MODE_EXEC: u32 = 0o100_755;
const MODE_LINK: u32 = 0o120_000;
const MODE_GITLINK: u32 = 0o160_000;

/// Index entry flags: extended flags follow; the path is skip-worktree.
const INDEX_EXTENDED: u16 = 0x4000;
const INDEX_SKIP_WORKTREE: u16 = 0x4000;

/// One tracked path of a tree.
#[derive(Debug, Clone)]
pub(crate) struct TreeFile {
    pub(crate) path: Vec<u8>,
    pub(crate) oid: Oid,
    pub(crate) mode: u32,
}

/// Every blob, symlink and gitlink of `tree` (the tree of `commit`), sorted
/// in index order. Refuses, before anything is written, a tree with an entry
/// name that could leave the worktree or replace its `.git` (see
/// [`check_name`]).
pub(crate) fn tree_files(tree: &Tree<'_>, commit: Oid) -> Result<Vec<TreeFile>> {
    let mut files = Vec::new();
    let mut refused = None;
    let walked = tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let mode = entry.filemode() as u32;
        let mut path = dir.as_bytes().to_vec();
        path.extend_from_slice(entry.name_bytes());
        if let Err(error) = check_name(entry.name_bytes(), mode, &path, commit) {
            refused = Some(error);
            return TreeWalkResult::Abort;
        }
        if matches!(mode, MODE_FILE | MODE_EXEC | MODE_LINK | MODE_GITLINK) {
            files.push(TreeFile {
                path,
                oid: entry.id(),
                mode,
            });
        }
        TreeWalkResult::Ok
    });
    if let Some(error) = refused {
        return Err(error);
    }
    walked.map_err(git("walk tree", tree.id()))?;
    // A crafted tree may repeat a name or use one both as a file and as a
    // directory: harmless, as `write_all` creates every directory first and
    // never replaces anything, so the second one fails to be created.
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Refuses a tree entry name that a checkout must never write: empty, `.`,
/// `..`, containing `/` (so no absolute or multi-part names) or NUL, `.git`
/// in any case (it would replace the worktree's link to its repository), or
/// a `.gitmodules` that is a symlink. libgit2's and git's checkouts refuse
/// the same. `path` is the entry's full path, for the error.
pub(crate) fn check_name(name: &[u8], mode: u32, path: &[u8], commit: Oid) -> Result<()> {
    let reason = if name.is_empty() {
        Some("a path component is empty")
    } else if name == b"." || name == b".." {
        Some("a path component is '.' or '..'")
    } else if name.contains(&b'/') || name.contains(&0) {
        Some("a tree entry name contains '/' or NUL")
    } else if name.eq_ignore_ascii_case(b".git") {
        Some("a path component is '.git'")
    } else if mode == MODE_LINK && name.eq_ignore_ascii_case(b".gitmodules") {
        Some("'.gitmodules' is a symlink")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::UnsafePath {
            path: String::from_utf8_lossy(path).into_owned(),
            commit: commit.to_string(),
            reason,
        }),
    }
}

/// Checks out `files` (the tree of a commit, from [`tree_files`]) into the
/// empty worktree `root` of `repo` (whose common directory is `git_dir`)
/// and returns their index entries, in order. Files are converted as git
/// converts them (see [`crate::convert`]): in parallel, except those that
/// go through a filter driver, which one thread sends through the filter
/// while the others write the rest.
pub(crate) fn check_out(
    repo: &Repository,
    git_dir: &Path,
    root: &Path,
    files: &[TreeFile],
    sparse: Option<&Sparse>,
) -> Result<Vec<IndexEntry>> {
    if let Some(sparse) = sparse {
        // Paths outside the patterns are not written: their entries are
        // marked skip-worktree, as git marks them.
        let (kept, skipped): (Vec<TreeFile>, Vec<TreeFile>) = files
            .iter()
            .cloned()
            .partition(|f| sparse.includes(&f.path));
        let mut entries = check_out(repo, git_dir, root, &kept, None)?;
        entries.extend(skipped.iter().map(|f| {
            let mut entry = entry(f, None);
            entry.flags |= INDEX_EXTENDED;
            entry.flags_extended |= INDEX_SKIP_WORKTREE;
            entry
        }));
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        return Ok(entries);
    }
    let tree_attributes: Vec<(Vec<u8>, Oid)> = files
        .iter()
        .filter(|f| matches!(f.mode, MODE_FILE | MODE_EXEC))
        .filter_map(|f| {
            let dir = f.path.strip_suffix(b".gitattributes")?;
            (dir.is_empty() || dir.ends_with(b"/")).then(|| (dir.to_vec(), f.oid))
        })
        .collect();
    let Some(mut context) = Context::load(repo, &tree_attributes)? else {
        return write_all(git_dir, root, files, None);
    };
    let plans: Vec<Plan> = files
        .iter()
        .map(|f| {
            if matches!(f.mode, MODE_FILE | MODE_EXEC) {
                context.plan(repo, &f.path)
            } else {
                Plan::PLAIN
            }
        })
        .collect();
    let entries = write_all(git_dir, root, files, Some((&context, &plans)))?;
    // libgit2 cannot redo a filter driver's or an encoding's work: such
    // files must not look racily clean to it (modified in the second the
    // index was written), or its status would re-read and misjudge them.
    let newest = entries
        .iter()
        .zip(&plans)
        .filter(|(_, plan)| plan.foreign())
        .map(|(entry, _)| (entry.mtime.seconds(), entry.mtime.nanoseconds()))
        .max();
    if let Some(newest) = newest {
        wait_past(root, newest)?;
    }
    Ok(entries)
}

/// Waits until a file written now gets a modification time later than
/// `newest` (the file system's clock is coarser than the system's), probing
/// with a file of its own in `root` that it never lets replace anything.
fn wait_past(root: &Path, newest: (i32, u32)) -> Result<()> {
    let probe = root.join(format!(".isolane-clock-{}", std::process::id()));
    for _ in 0..1000 {
        let created = OpenOptions::new().write(true).create_new(true).open(&probe);
        let Ok(file) = created else {
            // The name is taken (a tracked file?): wait out a coarse tick.
            std::thread::sleep(std::time::Duration::from_millis(20));
            return Ok(());
        };
        let metadata = file.metadata().map_err(io("stat", &probe));
        drop(file);
        std::fs::remove_file(&probe).map_err(io("remove", &probe))?;
        let metadata = metadata?;
        if (metadata.mtime() as i32, metadata.mtime_nsec() as u32) > newest {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// Writes `files` under `root` (which exists) in parallel, reading blobs
/// from the repository at `git_dir`, converted by their plans when given,
/// and returns their index entries in the same order.
fn write_all(
    git_dir: &Path,
    root: &Path,
    files: &[TreeFile],
    convert: Option<(&Context, &[Plan])>,
) -> Result<Vec<IndexEntry>> {
    let mut dirs = BTreeSet::new();
    for file in files {
        let mut rel = Path::new(OsStr::from_bytes(&file.path)).parent();
        while let Some(dir) = rel.filter(|d| !d.as_os_str().is_empty()) {
            if !dirs.insert(dir.to_owned()) {
                break;
            }
            rel = dir.parent();
        }
    }
    for dir in &dirs {
        let path = root.join(dir);
        std::fs::create_dir(&path).map_err(io("create directory", path))?;
    }
    let filtered: Vec<usize> = match convert {
        Some((_, plans)) => (0..files.len()).filter(|&i| plans[i].filtered()).collect(),
        None => Vec::new(),
    };
    // One repository (and so one object cache) per thread, pulling chunks
    // of neighbouring paths (which often share delta bases) from a counter.
    // More threads than cores: file creation blocks in the kernel.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let threads = (cores * 2)
        .clamp(2, 8)
        .min(files.len().div_ceil(CHUNK).max(1));
    let next = AtomicUsize::new(0);
    let open = || -> Result<Repository> {
        Repository::open(git_dir).map_err(git("open repository", git_dir.display()))
    };
    let results: Vec<Result<Vec<(usize, IndexEntry)>>> = std::thread::scope(|scope| {
        let mut workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let repo = open()?;
                    let odb = repo
                        .odb()
                        .map_err(git("open object database", git_dir.display()))?;
                    let mut out = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= files.len() {
                            return Ok(out);
                        }
                        for (i, file) in files.iter().enumerate().skip(start).take(CHUNK) {
                            let plan = convert.map(|(context, plans)| (context, &plans[i]));
                            match plan {
                                Some((_, plan)) if plan.filtered() => continue,
                                Some((context, plan)) if *plan != Plan::PLAIN => {
                                    let object =
                                        odb.read(file.oid).map_err(git("read blob", file.oid))?;
                                    let data = context.convert(plan, file.oid, object.data());
                                    let data = data.as_deref().unwrap_or(object.data());
                                    out.push((i, write_file(root, file, data)?));
                                }
                                _ => out.push((i, write_one(&odb, root, file)?)),
                            }
                        }
                    }
                })
            })
            .collect();
        if let Some((context, plans)) = convert.filter(|_| !filtered.is_empty()) {
            let filtered = &filtered;
            workers.push(scope.spawn(move || {
                let repo = open()?;
                let odb = repo
                    .odb()
                    .map_err(git("open object database", git_dir.display()))?;
                let mut filters = Filters::new(context, root);
                let result = filtered
                    .iter()
                    .map(|&i| {
                        let (file, plan) = (&files[i], &plans[i]);
                        let object = odb.read(file.oid).map_err(git("read blob", file.oid))?;
                        let data = context
                            .convert(plan, file.oid, object.data())
                            .unwrap_or_else(|| object.data().to_vec());
                        let data = filters.smudge(plan, &file.path, data)?;
                        Ok((i, write_file(root, file, &data)?))
                    })
                    .collect::<Result<Vec<_>>>();
                filters.finish();
                result
            }));
        }
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut entries = Vec::with_capacity(files.len());
    for result in results {
        entries.extend(result?);
    }
    entries.sort_unstable_by_key(|(i, _)| *i);
    Ok(entries.into_iter().map(|(_, entry)| entry).collect())
}

/// Writes the regular file `file` with `data` (replacing nothing: the path
/// must be free) and returns its index entry.
fn write_file(root: &Path, file: &TreeFile, data: &[u8]) -> Result<IndexEntry> {
    let path = root.join(OsStr::from_bytes(&file.path));
    let perm = if file.mode == MODE_EXEC { 0o777 } else { 0o666 };
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm)
        .open(&path)
        .map_err(io("create file", &path))?;
    out.write_all(data).map_err(io("write file", &path))?;
    let metadata = out.metadata().map_err(io("stat", &path))?;
    Ok(entry(file, Some(&metadata)))
}

/// Writes one file (replacing nothing: the path must be free) and returns
/// its index entry.
pub(crate) fn write_one(odb: &git2::Odb<'_>, root: &Path, file: &TreeFile) -> Result<IndexEntry> {
    let path = root.join(OsStr::from_bytes(&file.path));
    let metadata = match file.mode {
        MODE_GITLINK => {
            std::fs::create_dir(&path).map_err(io("create directory", &path))?;
            return Ok(entry(file, None));
        }
        MODE_LINK => {
            let object = odb.read(file.oid).map_err(git("read blob", file.oid))?;
            std::os::unix::fs::symlink(OsStr::from_bytes(object.data()), &path)
                .map_err(io("create symlink", &path))?;
            std::fs::symlink_metadata(&path).map_err(io("stat", &path))?
        }
        _ => {
            let object = odb.read(file.oid).map_err(git("read blob", file.oid))?;
            return write_file(root, file, object.data());
        }
    };
    Ok(entry(file, Some(&metadata)))
}

fn entry(file: &TreeFile, metadata: Option<&std::fs::Metadata>) -> IndexEntry {
    let time = |secs: i64, nanos: i64| IndexTime::new(secs as i32, nanos as u32);
    IndexEntry {
        ctime: metadata.map_or(time(0, 0), |m| time(m.ctime(), m.ctime_nsec())),
        mtime: metadata.map_or(time(0, 0), |m| time(m.mtime(), m.mtime_nsec())),
        dev: metadata.map_or(0, |m| m.dev() as u32),
        ino: metadata.map_or(0, |m| m.ino() as u32),
        mode: file.mode,
        uid: metadata.map_or(0, |m| m.uid()),
        gid: metadata.map_or(0, |m| m.gid()),
        file_size: metadata.map_or(0, |m| m.size() as u32),
        id: file.oid,
        flags: 0,
        flags_extended: 0,
        path: file.path.clone(),
    }
}

/// Writes a new index file holding `entries` (sorted in index order).
pub(crate) fn write_index(index_path: &Path, entries: &[IndexEntry]) -> Result<()> {
    let mut index =
        git2::Index::open(index_path).map_err(git("open index", index_path.display()))?;
    index
        .clear()
        .map_err(git("clear index", index_path.display()))?;
    for entry in entries {
        index
            .add(entry)
            .map_err(git("add to index", String::from_utf8_lossy(&entry.path)))?;
    }
    index
        .write()
        .map_err(git("write index", index_path.display()))
}

/// One path that differs between two trees: its old and new (id, mode).
#[derive(Debug)]
struct Change {
    path: Vec<u8>,
    old: Option<(Oid, u32)>,
    new: Option<(Oid, u32)>,
}

/// The paths that differ between `old` and `new`, skipping identical
/// subtrees by id (so only the few trees on changed paths are read).
fn diff_trees(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: Option<&Tree<'_>>,
    prefix: &[u8],
    commit: Oid,
    out: &mut Vec<Change>,
) -> Result<()> {
    use std::collections::BTreeMap;
    type Side = BTreeMap<Vec<u8>, (Oid, u32)>;
    let side = |tree: Option<&Tree<'_>>| -> Side {
        tree.map(|t| {
            t.iter()
                .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode() as u32)))
                .collect()
        })
        .unwrap_or_default()
    };
    let (old_side, new_side) = (side(old), side(new));
    let names: BTreeSet<&Vec<u8>> = old_side.keys().chain(new_side.keys()).collect();
    let is_tree = |e: &Option<(Oid, u32)>| e.is_some_and(|(_, mode)| mode == 0o040_000);
    let subtree = |e: &Option<(Oid, u32)>| -> Result<Option<Tree<'_>>> {
        match e {
            Some((id, 0o040_000)) => Ok(Some(repo.find_tree(*id).map_err(git("read tree", id))?)),
            _ => Ok(None),
        }
    };
    for name in names {
        let o = old_side.get(name).copied();
        let n = new_side.get(name).copied();
        if o == n {
            continue;
        }
        let mut path = prefix.to_vec();
        path.extend_from_slice(name);
        for (_, mode) in o.iter().chain(n.iter()) {
            check_name(name, *mode, &path, commit)?;
        }
        if is_tree(&o) || is_tree(&n) {
            let mut dir = path.clone();
            dir.push(b'/');
            diff_trees(
                repo,
                subtree(&o)?.as_ref(),
                subtree(&n)?.as_ref(),
                &dir,
                commit,
                out,
            )?;
        }
        let o = o.filter(|_| !is_tree(&o));
        let n = n.filter(|_| !is_tree(&n));
        if o.is_some() || n.is_some() {
            out.push(Change {
                path,
                old: o,
                new: n,
            });
        }
    }
    Ok(())
}

/// The paths that differ between the trees `old` and `new` (the tree of
/// `commit`), every name on them checked with [`check_name`], so that a
/// hostile tree is refused before [`switch`] writes anything.
#[derive(Debug)]
pub(crate) struct Changes {
    list: Vec<Change>,
    /// The new tree.
    tree: Oid,
}

/// Compares `old` with `new` (the tree of `commit`); see [`Changes`].
pub(crate) fn changes(
    repo: &Repository,
    old: &Tree<'_>,
    new: &Tree<'_>,
    commit: Oid,
) -> Result<Changes> {
    let mut changes = Vec::new();
    diff_trees(repo, Some(old), Some(new), b"", commit, &mut changes)?;
    Ok(Changes {
        list: changes,
        tree: new.id(),
    })
}

/// Re-points the worktree at `root` by applying `changes`: writes only the
/// files that differ, removes the ones that are gone, and updates those
/// entries of the index at `index_path`; returns how many paths it wrote.
/// Untracked and ignored files are left alone unless a tracked path of the
/// new tree needs their place.
pub(crate) fn switch(
    repo: &Repository,
    root: &Path,
    index_path: &Path,
    index: Option<git2::Index>,
    Changes {
        list: changes,
        tree,
    }: Changes,
) -> Result<usize> {
    let odb = repo
        .odb()
        .map_err(git("open object database", repo.path().display()))?;
    // The changed files are converted with the new tree's attributes (git
    // rewrites only those, too).
    let mut context = if changes
        .iter()
        .any(|c| c.new.is_some_and(|(_, mode)| kind(mode) == MODE_FILE))
    {
        let tree = repo.find_tree(tree).map_err(git("read tree", tree))?;
        Context::load(repo, &attribute_files(&tree)?)?
    } else {
        None
    };
    let plans: Vec<Option<Plan>> = changes
        .iter()
        .map(|change| match (&mut context, change.new) {
            (Some(context), Some((_, mode))) if kind(mode) == MODE_FILE => {
                Some(context.plan(repo, &change.path))
            }
            _ => None,
        })
        .collect();
    let mut filters = context.as_ref().map(|c| Filters::new(c, root));
    let mut newest_foreign = None;
    let mut index = match index {
        Some(index) => index,
        None => git2::Index::open(index_path).map_err(git("open index", index_path.display()))?,
    };
    // Removals first (deepest first), so that a directory replacing a file,
    // or a file replacing a directory, finds its place.
    for change in changes.iter().rev() {
        if let Some((_, old_mode)) = change.old
            && change
                .new
                .is_none_or(|(_, new_mode)| kind(new_mode) != kind(old_mode))
        {
            let rel = Path::new(OsStr::from_bytes(&change.path));
            remove_path(root, rel)?;
            index
                .remove_path(rel)
                .map_err(git("remove from index", rel.display()))?;
        }
    }
    let mut written = 0;
    for (change, plan) in changes.iter().zip(&plans) {
        let Some((oid, mode)) = change.new else {
            continue;
        };
        let rel = Path::new(OsStr::from_bytes(&change.path));
        let target = root.join(rel);
        clear_way(root, rel)?;
        let file = TreeFile {
            path: change.path.clone(),
            oid,
            mode,
        };
        let converted = if kind(mode) == MODE_FILE {
            Some(content(
                &odb,
                context.as_ref(),
                filters.as_mut(),
                &file,
                plan.as_ref(),
            )?)
        } else {
            None
        };
        let entry = match (std::fs::symlink_metadata(&target), &converted) {
            (Ok(meta), _) if meta.is_dir() && mode == MODE_GITLINK => entry(&file, None),
            // Rewrite in place: no new inode to allocate.
            (Ok(meta), Some((data, _))) if meta.is_file() && meta.nlink() == 1 => {
                overwrite(&target, &file, data)?
            }
            (found, _) => {
                match found {
                    Ok(meta) if meta.is_dir() => {
                        std::fs::remove_dir_all(&target).map_err(io("remove directory", &target))?
                    }
                    Ok(_) => std::fs::remove_file(&target).map_err(io("remove file", &target))?,
                    Err(_) => {}
                }
                match &converted {
                    Some((data, _)) => write_file(root, &file, data)?,
                    None => write_one(&odb, root, &file)?,
                }
            }
        };
        if let Some((_, true)) = converted {
            newest_foreign = newest_foreign.max(Some(mtime(&entry)));
        }
        index
            .add(&entry)
            .map_err(git("add to index", rel.display()))?;
        written += 1;
    }
    if let Some(filters) = filters {
        filters.finish();
    }
    if let Some(newest) = newest_foreign {
        wait_past(root, newest)?;
    }
    index
        .write()
        .map_err(git("write index", index_path.display()))?;
    Ok(written)
}

fn mtime(entry: &IndexEntry) -> (i32, u32) {
    (entry.mtime.seconds(), entry.mtime.nanoseconds())
}

/// The `.gitattributes` files of `tree`: their directory (`""` or `a/b/`)
/// and blob.
fn attribute_files(tree: &Tree<'_>) -> Result<Vec<(Vec<u8>, Oid)>> {
    let mut found = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.name_bytes() == b".gitattributes"
            && matches!(entry.filemode() as u32, MODE_FILE | MODE_EXEC)
        {
            found.push((dir.as_bytes().to_vec(), entry.id()));
        }
        TreeWalkResult::Ok
    })
    .map_err(git("walk tree", tree.id()))?;
    Ok(found)
}

/// The content `file` gets in the worktree, and whether libgit2 could not
/// reproduce its conversion.
fn content(
    odb: &git2::Odb<'_>,
    context: Option<&Context>,
    filters: Option<&mut Filters<'_>>,
    file: &TreeFile,
    plan: Option<&Plan>,
) -> Result<(Vec<u8>, bool)> {
    let object = odb.read(file.oid).map_err(git("read blob", file.oid))?;
    let (Some(context), Some(plan)) = (context, plan) else {
        return Ok((object.data().to_vec(), false));
    };
    let data = context
        .convert(plan, file.oid, object.data())
        .unwrap_or_else(|| object.data().to_vec());
    let data = match filters {
        Some(filters) if plan.filtered() => filters.smudge(plan, &file.path, data)?,
        _ => data,
    };
    Ok((data, plan.foreign()))
}

/// Regular files (plain or executable), symlinks and gitlinks are different
/// kinds; a change of kind needs the old path removed first.
fn kind(mode: u32) -> u32 {
    if mode == MODE_EXEC { MODE_FILE } else { mode }
}

/// Rewrites the regular file `path` in place with `data` and `file`'s mode.
fn overwrite(path: &Path, file: &TreeFile, data: &[u8]) -> Result<IndexEntry> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io("open file", path))?;
    out.write_all(data).map_err(io("write file", path))?;
    let current = out
        .metadata()
        .map_err(io("stat", path))?
        .permissions()
        .mode();
    let exec = file.mode == MODE_EXEC;
    if (current & 0o100 != 0) != exec {
        let mode = if exec {
            current | ((current & 0o444) >> 2)
        } else {
            current & !0o111
        };
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io("change mode of", path))?;
    }
    let metadata = out.metadata().map_err(io("stat", path))?;
    Ok(entry(file, Some(&metadata)))
}

/// Makes sure every parent directory of `rel` exists as a directory.
fn clear_way(root: &Path, rel: &Path) -> Result<()> {
    let mut dir = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&dir).map_err(io("remove file", &dir))?;
                std::fs::create_dir(&dir).map_err(io("create directory", &dir))?;
            }
            Err(_) => std::fs::create_dir(&dir).map_err(io("create directory", &dir))?,
        }
    }
    Ok(())
}

/// Removes a tracked path and the directories it leaves empty.
fn remove_path(root: &Path, rel: &Path) -> Result<()> {
    let path = root.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            // A gitlink: remove only if empty.
            let _ = std::fs::remove_dir(&path);
        }
        Ok(_) => std::fs::remove_file(&path).map_err(io("remove file", &path))?,
        Err(_) => {}
    }
    let mut parent: Option<PathBuf> = path.parent().map(Path::to_path_buf);
    while let Some(dir) = parent {
        if dir == root || std::fs::remove_dir(&dir).is_err() {
            break;
        }
        parent = dir.parent().map(Path::to_path_buf);
    }
    Ok(())
}

/// Whether a tree has submodules.
pub(crate) fn has_gitlinks(files: &[TreeFile]) -> bool {
    files.iter().any(|f| f.mode == MODE_GITLINK)
}

/// Initialises the submodules of the new worktree at `root` (whose index is
/// written) by running `git submodule update --init --recursive` there.
pub(crate) fn init_submodules(root: &Path) -> Result<()> {
    let output = std::process::Command::new("git")
        .args(["submodule", "update", "--init", "--recursive", "--quiet"])
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io("run git submodule update in", root))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Submodules {
        path: root.to_path_buf(),
        reason: format!(
            "git submodule update exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}
