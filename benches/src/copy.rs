//! `copy`: worktree-core's copy of an ignored build tree into a new
//! worktree (`copy_tree`: reflink where the file system can, else a copy,
//! by several threads) beside `cp -r` of the same tree, interleaved. The
//! tree is shaped like a Rust `target/` dir: many small files, some
//! medium ones, a few large ones, and symlinks. Copies are deleted between
//! iterations, untimed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{BenchResult, Config, Report, Row, Samples, ms, ratio, time};

/// Builds (once) a `target/`-like tree under `parent`: `dirs` directories
/// of 48 files each (1-64 KiB, deterministic sizes), 4 files of 4 MiB, and
/// a symlink per directory.
fn build_tree(parent: &Path, quick: bool) -> BenchResult<PathBuf> {
    let dirs = if quick { 8 } else { 64 };
    let tree = parent.join(format!("copy-target-{dirs}"));
    let done = tree.join(".complete");
    if done.exists() {
        return Ok(tree);
    }
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for d in 0..dirs {
        let dir = tree.join(format!("debug/deps/crate{d}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..48 {
            let size = 1024 * (1 + (next() % 64) as usize);
            let byte = (next() % 251) as u8;
            std::fs::write(dir.join(format!("unit{f}.rlib")), vec![byte; size])?;
        }
        std::os::unix::fs::symlink("unit0.rlib", dir.join("latest"))?;
    }
    let big = tree.join("debug/incremental");
    std::fs::create_dir_all(&big)?;
    for f in 0..4 {
        std::fs::write(
            big.join(format!("query-cache{f}.bin")),
            vec![f as u8; 4 << 20],
        )?;
    }
    std::fs::write(&done, "")?;
    Ok(tree)
}

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let fixtures = config.scratch.join("fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let tree = build_tree(&fixtures, config.quick)?;
    let scratch = tempfile::tempdir_in(&config.scratch)?;
    let to = scratch.path().join("copy");
    let ours =
        || -> BenchResult<worktree_core::CopyStats> { Ok(worktree_core::copy_tree(&tree, &to)?) };
    let theirs = || -> BenchResult {
        let status = Command::new("cp").arg("-r").arg(&tree).arg(&to).status()?;
        if !status.success() {
            return Err(format!("cp -r failed: {status}").into());
        }
        Ok(())
    };
    // Interleaved by hand: each copy is deleted (untimed) before the next.
    let iterations = config.iterations(10, 3);
    let (mut copy_times, mut cp_times) = (Vec::new(), Vec::new());
    let mut stats = worktree_core::CopyStats::default();
    for round in 0..=iterations {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let (took, copied) = time(ours)?;
                stats = copied;
                copy_times.push(took);
            } else {
                cp_times.push(time(theirs)?.0);
            }
            std::fs::remove_dir_all(&to)?;
        }
        if round == 0 {
            // The warm-up round.
            copy_times.clear();
            cp_times.clear();
        }
    }
    let (copy, cp) = (Samples::new(copy_times), Samples::new(cp_times));
    let (files, reflinked) = (stats.files, stats.reflinked);
    report.figure("copy.copy_ms_p50", ms(copy.percentile(50.0)));
    report.figure("copy.cp_ms_p50", ms(cp.percentile(50.0)));
    report.figure(
        "copy.vs_cp",
        ratio(copy.percentile(50.0), cp.percentile(50.0)),
    );
    report.figure("copy.reflinked_files", reflinked as f64);
    report.row(Row {
        group: "copy",
        subject: format!("copy_tree of a target/-like tree ({files} files, {reflinked} reflinked)"),
        samples: copy,
        baseline: Some(("cp -r".to_owned(), cp)),
    });
    Ok(())
}
