//! `isolane pool [list | drain]`: the warm pool of worktrees that `remove`
//! fills and `create` takes from (`[worktrees] pool` in isolane.toml).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{age, print_json};
use crate::cli::PoolCommand;
use crate::context::Repo;

#[derive(Debug, Serialize)]
struct PooledRow {
    path: PathBuf,
    /// The commit its HEAD is detached at.
    head: Option<String>,
    /// Seconds since it was pooled.
    age_seconds: u64,
    /// Files changed since it was pooled (such a worktree is never handed
    /// out, and `drain` keeps it).
    dirty_files: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Drained {
    removed: Vec<PathBuf>,
    kept_dirty: Vec<PathBuf>,
}

pub(super) fn run(command: Option<PoolCommand>, json: bool) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    match command.unwrap_or(PoolCommand::List) {
        PoolCommand::List => {
            let rows: Vec<PooledRow> = repo
                .worktrees
                .pool()?
                .into_iter()
                .map(|info| PooledRow {
                    age_seconds: info.age().map_or(0, |a| a.as_secs()),
                    path: info.path,
                    head: info.head,
                    dirty_files: info.dirty_files,
                })
                .collect();
            if json {
                print_json(&rows)?;
            } else {
                for row in &rows {
                    let head = row.head.as_deref().unwrap_or("?");
                    let state = if row.dirty_files.is_empty() {
                        "clean".to_owned()
                    } else {
                        format!("dirty: {}", row.dirty_files.join(", "))
                    };
                    println!(
                        "{}  {}  {:>6}  {state}",
                        row.path.display(),
                        &head[..head.len().min(10)],
                        age(row.age_seconds)
                    );
                }
                println!(
                    "{} pooled worktree(s); the pool keeps {} ([worktrees] pool)",
                    rows.len(),
                    repo.config.worktrees.pool
                );
            }
        }
        PoolCommand::Drain => {
            let (removed, kept_dirty) = repo.worktrees.drain_pool()?;
            let drained = Drained {
                removed,
                kept_dirty,
            };
            if json {
                print_json(&drained)?;
            } else {
                for path in &drained.removed {
                    println!("removed {}", path.display());
                }
                for path in &drained.kept_dirty {
                    println!("kept (dirty) {}", path.display());
                }
                println!(
                    "pool drained: {} removed, {} kept",
                    drained.removed.len(),
                    drained.kept_dirty.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
