//! Deterministic fixture repositories for the benchmarks, built with the git
//! CLI (`git fast-import`, so building one takes seconds) and reused across
//! runs.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::BenchResult;

/// Bumped whenever the generator changes, so stale fixtures are rebuilt.
const VERSION: u32 = 1;

/// The branch of [`large_repo`] that differs from `main` in a few files:
/// `main` has 20 commits; `bench/previous` is `main~1` (about 20 files
/// differ).
pub const PREVIOUS_BRANCH: &str = "bench/previous";

/// A repository of about 5,000 files / 60 MB (1,000 files / 12 MB when
/// `quick`) with 20 commits of history on `main`, its main worktree checked
/// out, under `parent`. Deterministic (same content and commit ids every
/// time); built once and reused while its marker file is there.
pub fn large_repo(parent: &Path, quick: bool) -> BenchResult<PathBuf> {
    let (name, files) = if quick {
        ("large-repo-quick", 1_000)
    } else {
        ("large-repo", 5_000)
    };
    let repo = parent.join(name);
    let marker = repo
        .join(".git")
        .join(format!("isolane-fixture-v{VERSION}"));
    if marker.exists() {
        return Ok(repo);
    }
    if repo.exists() {
        std::fs::remove_dir_all(&repo)?;
    }
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "--quiet", "--initial-branch=main"])?;
    git(&repo, &["config", "user.name", "Bench"])?;
    git(&repo, &["config", "user.email", "bench@example.com"])?;

    let mut child = test_support::git_command(&repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()?;
    {
        let stdin = child.stdin.take().ok_or("fast-import has no stdin")?;
        let mut out = BufWriter::with_capacity(1 << 20, stdin);
        let mut rng = Rng(0x1505_1a9e);
        let paths: Vec<String> = (0..files).map(|i| path_of(i, files)).collect();
        let commits = 20u64;
        for commit in 0..commits {
            writeln!(out, "commit refs/heads/main\nmark :{}", commit + 1)?;
            writeln!(
                out,
                "committer Bench <bench@example.com> {} +0000",
                1_700_000_000 + commit * 3600
            )?;
            let message = format!("commit {commit}");
            writeln!(out, "data {}\n{message}", message.len())?;
            let touched: Vec<usize> = if commit == 0 {
                (0..files).collect()
            } else {
                (0..20).map(|_| rng.below(files as u64) as usize).collect()
            };
            for i in touched {
                let size = 2_000 + rng.below(22_000) as usize;
                let body = content(&mut rng, size);
                let mode = if i % 97 == 0 { "100755" } else { "100644" };
                writeln!(out, "M {mode} inline {}", paths[i])?;
                writeln!(out, "data {}", body.len())?;
                out.write_all(&body)?;
                writeln!(out)?;
            }
            writeln!(out)?;
            if commit == commits - 2 {
                writeln!(
                    out,
                    "reset refs/heads/{PREVIOUS_BRANCH}\nfrom :{}\n",
                    commit + 1
                )?;
            }
        }
        writeln!(out, "done")?;
        out.flush()?;
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("git fast-import failed with {status}").into());
    }
    git(&repo, &["repack", "-a", "-d", "-q"])?;
    git(&repo, &["reset", "--hard", "-q", "main"])?;
    std::fs::write(&marker, "")?;
    Ok(repo)
}

fn git(dir: &Path, args: &[&str]) -> BenchResult {
    test_support::git(dir, args)?;
    Ok(())
}

/// `src/pkgNN/modNN/file_NNNN.rs`: about 100 files per directory.
fn path_of(i: usize, files: usize) -> String {
    let dirs = files.div_ceil(100);
    let dir = i % dirs;
    format!("src/pkg{:02}/mod{:02}/file_{i:04}.rs", dir / 10, dir % 10)
}

/// Source-like text: lines of words from a small vocabulary, so it
/// compresses about as well as code does.
pub(crate) fn content(rng: &mut Rng, size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "fn", "let", "mut", "self", "match", "return", "impl", "struct", "pub", "use", "if",
        "else", "for", "in", "while", "loop", "Some", "None", "Ok", "Err", "value", "index",
        "buffer", "count", "result", "error", "config", "worktree", "branch", "commit", "path",
        "=", "==", "+", "{", "}", "(", ")", ";", "->", "&", "::", "0", "1", "42", "name",
    ];
    let mut out = Vec::with_capacity(size + 64);
    while out.len() < size {
        let indent = rng.below(4) as usize * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        for w in 0..(3 + rng.below(8)) {
            if w > 0 {
                out.push(b' ');
            }
            let word = WORDS[rng.below(WORDS.len() as u64) as usize];
            out.extend_from_slice(word.as_bytes());
            if rng.below(8) == 0 {
                out.extend_from_slice(rng.below(100_000).to_string().as_bytes());
            }
        }
        out.push(b'\n');
    }
    out
}

/// splitmix64: small, fast and deterministic.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
