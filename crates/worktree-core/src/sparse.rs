//! The main worktree's sparse checkout, which a new worktree inherits as
//! with `git worktree add`: its patterns (`info/sparse-checkout`) and its
//! worktree configuration are copied, and the paths outside the patterns
//! are left out, marked skip-worktree in the index.

use std::path::Path;

use crate::attributes::wildmatch;
use crate::error::{Result, io};

/// The sparse-checkout patterns of the main worktree.
#[derive(Debug)]
pub(crate) struct Sparse {
    cone: bool,
    /// Cone mode: directories included with everything below them.
    recursive: Vec<Vec<u8>>,
    /// Cone mode: directories whose own files only are included.
    parents: Vec<Vec<u8>>,
    /// Non-cone mode: gitignore-style patterns, in file order.
    patterns: Vec<Vec<u8>>,
}

/// The value of `core.<key>` in the configuration files `files` (the later
/// ones win).
fn config_bool(files: &[&Path], key: &str) -> Option<bool> {
    files
        .iter()
        .rev()
        .filter(|f| f.is_file())
        .find_map(|f| git2::Config::open(f).ok()?.get_bool(key).ok())
}

impl Sparse {
    /// The main worktree's sparse checkout, `None` when it has none.
    pub(crate) fn of_main(common_dir: &Path) -> Option<Self> {
        let config = common_dir.join("config");
        let worktree_config = common_dir.join("config.worktree");
        let files = [config.as_path(), worktree_config.as_path()];
        if config_bool(&files, "core.sparsecheckout") != Some(true) {
            return None;
        }
        let cone = config_bool(&files, "core.sparsecheckoutcone").unwrap_or(true);
        let content = std::fs::read(common_dir.join("info").join("sparse-checkout")).ok()?;
        let lines: Vec<&[u8]> = content
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty() && l[0] != b'#')
            .collect();
        let mut sparse = Self {
            cone,
            recursive: Vec::new(),
            parents: Vec::new(),
            patterns: lines.iter().map(|l| l.to_vec()).collect(),
        };
        if cone {
            let mut dirs = Vec::new();
            for line in &lines {
                if *line == b"/*" || *line == b"!/*/" {
                    continue;
                }
                if let Some(parent) = line
                    .strip_prefix(b"!/")
                    .and_then(|l| l.strip_suffix(b"/*/"))
                {
                    sparse.parents.push(unescape(parent));
                } else if let Some(dir) = line.strip_prefix(b"/").and_then(|l| l.strip_suffix(b"/"))
                {
                    dirs.push(unescape(dir));
                }
            }
            sparse.recursive = dirs
                .into_iter()
                .filter(|d| !sparse.parents.contains(d))
                .collect();
        }
        Some(sparse)
    }

    /// Whether the file `path` is checked out.
    pub(crate) fn includes(&self, path: &[u8]) -> bool {
        let dir = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&path[..0], |slash| &path[..slash]);
        if self.cone {
            return dir.is_empty()
                || self.parents.iter().any(|p| p == dir)
                || self
                    .recursive
                    .iter()
                    .any(|r| dir.starts_with(r) && (dir.len() == r.len() || dir[r.len()] == b'/'));
        }
        // The last pattern matching the file decides, else the last one
        // matching its nearest directory, and so on up.
        if let Some(decision) = self.decide(path, false) {
            return decision;
        }
        let mut end = dir.len();
        while end > 0 {
            if let Some(decision) = self.decide(&path[..end], true) {
                return decision;
            }
            end = path[..end].iter().rposition(|&b| b == b'/').unwrap_or(0);
        }
        false
    }

    fn decide(&self, path: &[u8], is_dir: bool) -> Option<bool> {
        let basename = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(path, |slash| &path[slash + 1..]);
        self.patterns.iter().rev().find_map(|pattern| {
            let (negated, pattern) = match pattern.strip_prefix(b"!") {
                Some(rest) => (true, rest),
                None => (false, pattern.as_slice()),
            };
            let (dir_only, pattern) = match pattern.strip_suffix(b"/") {
                Some(rest) => (true, rest),
                None => (false, pattern),
            };
            if dir_only && !is_dir {
                return None;
            }
            let hit = if pattern.contains(&b'/') {
                wildmatch(pattern.strip_prefix(b"/").unwrap_or(pattern), path, true)
            } else {
                wildmatch(pattern, basename, false)
            };
            hit.then_some(!negated)
        })
    }
}

fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut escaped = false;
    for &b in text {
        if b == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

/// Copies the main worktree's sparse-checkout patterns and its worktree
/// configuration (but `core.bare` and `core.worktree`) into the new
/// worktree's admin directory, as `git worktree add` does.
pub(crate) fn copy_settings(common_dir: &Path, admin_dir: &Path) -> Result<()> {
    let patterns = common_dir.join("info").join("sparse-checkout");
    if patterns.is_file() {
        let info = admin_dir.join("info");
        std::fs::create_dir_all(&info).map_err(io("create directory", &info))?;
        let target = info.join("sparse-checkout");
        std::fs::copy(&patterns, &target).map_err(io("copy to", &target))?;
    }
    let worktree_config = common_dir.join("config.worktree");
    if worktree_config.is_file() {
        let content =
            std::fs::read_to_string(&worktree_config).map_err(io("read", &worktree_config))?;
        let mut out = String::new();
        let mut section = String::new();
        for line in content.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                section = trimmed.to_ascii_lowercase();
            } else if section == "[core]" {
                let key = trimmed
                    .split(['=', ' ', '\t'])
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if key == "bare" || key == "worktree" {
                    continue;
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        let target = admin_dir.join("config.worktree");
        std::fs::write(&target, out).map_err(io("write", &target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cone_and_non_cone_rules() {
        let cone = Sparse {
            cone: true,
            recursive: vec![b"a".to_vec(), b"b/c".to_vec()],
            parents: vec![b"b".to_vec()],
            patterns: Vec::new(),
        };
        assert!(cone.includes(b"top.txt"));
        assert!(cone.includes(b"a/x/y.txt"));
        assert!(cone.includes(b"b/own.txt"));
        assert!(cone.includes(b"b/c/d/e.txt"));
        assert!(!cone.includes(b"b/other/e.txt"));
        assert!(!cone.includes(b"ab/e.txt"));
        let plain = Sparse {
            cone: false,
            recursive: Vec::new(),
            parents: Vec::new(),
            patterns: vec![
                b"/*".to_vec(),
                b"!/*/".to_vec(),
                b"/docs/".to_vec(),
                b"*.md".to_vec(),
            ],
        };
        assert!(plain.includes(b"top.txt"));
        assert!(plain.includes(b"docs/a/b.txt"));
        assert!(plain.includes(b"src/readme.md"));
        assert!(!plain.includes(b"src/main.rs"));
    }
}
