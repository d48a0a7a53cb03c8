//! Python fixtures: a virtualenv made with the machine's `python3`, with
//! packages installed from PyPI, or an error that says what is missing —
//! never a silent skip.

use std::io;
use std::path::Path;
use std::process::Command;

/// Makes a virtualenv at `dir` (without pip when `packages` is empty) and
/// installs `packages` into it, caching pip's downloads in `pip_cache` so
/// that only a machine's first run fetches them.
pub fn venv(dir: &Path, packages: &[&str], pip_cache: &Path) -> io::Result<()> {
    let mut make = Command::new("python3");
    make.args(["-m", "venv"]);
    if packages.is_empty() {
        make.arg("--without-pip");
    }
    match make.arg(dir).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(io::Error::other(format!(
                "python3 -m venv failed: {}; Python tests need python3 with the venv module \
                 (Debian: apt-get install python3-venv; `.ci/run` installs it)",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Err(error) => {
            return Err(io::Error::other(format!(
                "cannot run python3 ({error}); Python tests need python3 with the venv module \
                 (Debian: apt-get install python3 python3-venv; `.ci/run` installs them)"
            )));
        }
    }
    if packages.is_empty() {
        return Ok(());
    }
    let out = Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--prefer-binary",
        ])
        .args(packages)
        .env("PIP_CACHE_DIR", pip_cache)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "pip install {packages:?} failed (is PyPI reachable?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Copies the directory tree `from` into `to` (which must exist), leaving
/// out Python's caches and virtualenvs.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "__pycache__" || name == ".venv" || name == ".pytest_cache" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
