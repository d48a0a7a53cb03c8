//! Atomic, durable replacement of one file.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Permissions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Replaces the file at `path` with `bytes`, atomically and durably.
///
/// The bytes go to a temp file with a unique name in the same directory
/// (`.<file name>.tmp-<random>`), created with permission `mode` (subject to
/// the umask, as with `open(2)`); the temp file is fsynced, renamed over
/// `path`, and the directory is fsynced. A process killed or a machine
/// losing power at any moment leaves either the old or the new content at
/// `path`, never a mix. On failure the temp file is removed; if only the
/// final directory fsync fails, the new content is in place but may not
/// survive a power loss.
///
/// `path`'s parent directory must exist; an existing file's permissions are
/// not kept (the new file has `mode`).
///
/// ```
/// use std::os::unix::fs::PermissionsExt as _;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("secret");
/// registry::write_atomically(&path, b"old", 0o600)?;
/// registry::write_atomically(&path, b"new", 0o600)?;
/// assert_eq!(std::fs::read(&path)?, b"new");
/// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
/// // Nothing is left behind but the file itself.
/// assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = parent(path);
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(file_name))
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    // On failure the returned temp file is dropped, which removes it.
    temp.persist(path).map_err(|persist| persist.error)?;
    sync_dir(dir)
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// How the temp files of [`write_atomically`] for `file_name` start.
pub(crate) fn temp_prefix(file_name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    prefix
}

/// Fsyncs a directory, making renames and removals in it durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
