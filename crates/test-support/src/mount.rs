//! A tiny tmpfs mounted for one test: a filesystem that really fills up
//! (`ENOSPC`) and really turns read-only (`EROFS`), even for root, which
//! ignores permission bits.
//!
//! Mounting needs `CAP_SYS_ADMIN` (root in CI and in the dev container).
//! When it is not available, [`Tmpfs::new`] and [`Tmpfs::mount_on`] return
//! an error saying so: a test using them fails, it never skips.

use std::io::{self, ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory, unmounted when dropped (lazily, should
/// something still hold it open).
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
    /// The temp dir holding the mount point, when [`Tmpfs::new`] made it.
    _owned: Option<tempfile::TempDir>,
}

/// The name of the file [`Tmpfs::fill`] fills the filesystem with.
pub const FILLER: &str = "filler";

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on a new temp directory.
    pub fn new(size_bytes: u64) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("isolane-tmpfs-")
            .tempdir()?;
        let path = dir.path().canonicalize()?.join("mnt");
        std::fs::create_dir(&path)?;
        mount(&path, size_bytes)?;
        Ok(Self {
            path,
            _owned: Some(dir),
        })
    }

    /// Mounts a tmpfs of `size_bytes` over the existing directory `dir`,
    /// first copying what is in it (files and directories, recursively)
    /// onto the new filesystem, so that it stays visible. The original
    /// contents reappear, unchanged, when the tmpfs is unmounted.
    pub fn mount_on(dir: &Path, size_bytes: u64) -> io::Result<Self> {
        let mut tree = Vec::new();
        snapshot(dir, Path::new(""), &mut tree)?;
        mount(dir, size_bytes)?;
        let mounted = Self {
            path: dir.to_owned(),
            _owned: None,
        };
        for (relative, contents) in tree {
            let target = dir.join(relative);
            match contents {
                Some(bytes) => std::fs::write(target, bytes)?,
                None => std::fs::create_dir(target)?,
            }
        }
        Ok(mounted)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes [`FILLER`] until the filesystem is full (`ENOSPC`); returns
    /// how many bytes it took.
    pub fn fill(&self) -> io::Result<u64> {
        let mut file = std::fs::File::create(self.path.join(FILLER))?;
        let chunk = [0xA5u8; 4096];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) if error.raw_os_error() == Some(28) => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        // tmpfs allocates whole pages; a write of the remaining partial
        // page may have succeeded: one more byte must fail now.
        match file.write(&[0]) {
            Err(error) if error.raw_os_error() == Some(28) => Ok(written),
            Ok(_) => Err(io::Error::other(format!(
                "{} did not fill up",
                self.path.display()
            ))),
            Err(error) => Err(error),
        }
    }

    /// Removes [`FILLER`], freeing the space [`Tmpfs::fill`] took.
    pub fn free(&self) -> io::Result<()> {
        std::fs::remove_file(self.path.join(FILLER))
    }

    /// Remounts the filesystem read-only. Fails (`EBUSY`) while any file on
    /// it is open for writing.
    pub fn remount_read_only(&self) -> io::Result<()> {
        mount_command(&["-o", "remount,ro"], &self.path)
    }

    /// Remounts the filesystem read-write.
    pub fn remount_read_write(&self) -> io::Result<()> {
        mount_command(&["-o", "remount,rw"], &self.path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .output()
            .is_ok_and(|out| out.status.success());
        if !unmounted {
            // Something still holds it open (a server, a child): detach it
            // now, the kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        }
    }
}

/// The files (`Some(contents)`) and directories (`None`) under `root`, each
/// directory before what it holds; symlinks and other kinds are skipped.
fn snapshot(
    root: &Path,
    relative: &Path,
    tree: &mut Vec<(PathBuf, Option<Vec<u8>>)>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_file() {
            tree.push((path, Some(std::fs::read(entry.path())?)));
        } else if kind.is_dir() {
            tree.push((path.clone(), None));
            snapshot(root, &path, tree)?;
        }
    }
    Ok(())
}

fn mount(path: &Path, size_bytes: u64) -> io::Result<()> {
    let options = format!("size={size_bytes},mode=0755");
    mount_command(&["-t", "tmpfs", "-o", &options, "tmpfs"], path).map_err(|error| {
        io::Error::other(format!(
            "cannot mount a tmpfs on {} (this test needs root or CAP_SYS_ADMIN \
             to get a really full or read-only filesystem): {error}",
            path.display()
        ))
    })
}

fn mount_command(args: &[&str], path: &Path) -> io::Result<()> {
    let output = Command::new("mount").args(args).arg(path).output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "mount {} {} failed with {}: {}",
        args.join(" "),
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
