//! `isolane gc`: finish interrupted creates and removes, remove test
//! worktrees past their age (never one in use, dirty or unmerged), and
//! reclaim the port leases of dead processes.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::info::statuses;
use super::{age, print_json, progress};
use crate::cli::GcArgs;
use crate::context::{Cleanup, Repo};
use crate::database_gc::{reclaim_gone_repositories, server_gc};
use crate::lifecycle::{Teardown, abandoned, teardown};
use crate::state::Phase;

#[derive(Debug, Default, Serialize)]
struct Report {
    /// Interrupted creates rolled back and interrupted removes finished.
    finished: Vec<String>,
    /// Old worktrees removed.
    removed: Vec<String>,
    /// Old worktrees kept, and why.
    skipped: Vec<Skipped>,
    /// Port leases of dead processes freed (host-wide).
    reclaimed_ports: Vec<u16>,
    /// Databases pg-isolate's gc dropped (or would drop): half-created
    /// ones, test databases of dead processes, unused templates, ...
    dropped_databases: Vec<String>,
    /// Pooled worktrees removed (or that would be) to trim the warm pool
    /// to `[worktrees] pool`, oldest first.
    trimmed_pool: Vec<std::path::PathBuf>,
    /// Operations that failed (the rest went on).
    errors: Vec<String>,
    dry_run: bool,
}

#[derive(Debug, Serialize)]
struct Skipped {
    id: String,
    reason: String,
}

pub(super) fn run(args: &GcArgs) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    // Before anything is judged idle: a killed run's services must not
    // outlive the worktree gc may remove under them.
    crate::runs::stop_leftovers(&repo)?;
    let max_age = args.max_age.unwrap_or(repo.config.gc.max_age).as_secs();
    let prefix = args
        .purpose_prefix
        .clone()
        .unwrap_or_else(|| repo.config.gc.purpose_prefix.clone());
    let mut report = Report {
        dry_run: args.dry_run,
        ..Report::default()
    };

    let doc = repo.registry.read()?;
    for entry in doc.entries.values() {
        if !abandoned(&repo, entry)? {
            continue;
        }
        if !args.dry_run {
            let how = Teardown::finishing(entry);
            progress(format_args!(
                "finishing the interrupted {} of {}",
                phase_verb(entry.phase),
                entry.id
            ));
            if let Err(error) = teardown(&repo, entry, how) {
                report.errors.push(format!("{}: {error:#}", entry.id));
                continue;
            }
        }
        report.finished.push(entry.id.clone());
    }

    for status in statuses(&repo)? {
        let Some(entry) = doc.entries.get(&status.id) else {
            continue;
        };
        if entry.phase != Phase::Ready
            || !entry.purpose.starts_with(&prefix)
            || status.age_seconds < max_age
        {
            continue;
        }
        let reason = if let Some(lock) = &status.locked {
            Some(format!("in use ({lock})"))
        } else if !status.dirty_files.is_empty() {
            Some(format!("dirty: {}", status.dirty_files.join(", ")))
        } else if !status.unmerged_commits.is_empty() {
            Some(format!(
                "{} unmerged commit(s)",
                status.unmerged_commits.len()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            report.skipped.push(Skipped {
                id: status.id,
                reason,
            });
            continue;
        }
        if !args.dry_run {
            progress(format_args!(
                "removing {} (age {})",
                status.id,
                age(status.age_seconds)
            ));
            let how = Teardown {
                force: false,
                keep_branch: false,
                hooks: true,
            };
            if let Err(error) = teardown(&repo, entry, how) {
                report.errors.push(format!("{}: {error:#}", status.id));
                continue;
            }
        }
        report.removed.push(status.id);
    }

    let keep = repo.config.worktrees.pool;
    if args.dry_run {
        let pooled = repo.worktrees.pool()?;
        let excess = pooled.len().saturating_sub(keep);
        report.trimmed_pool = pooled.into_iter().take(excess).map(|i| i.path).collect();
    } else {
        match repo.worktrees.trim_pool(keep) {
            Ok((trimmed, _dirty)) => report.trimmed_pool = trimmed,
            Err(error) => report.errors.push(format!("trimming the pool: {error:#}")),
        }
    }

    if !args.dry_run {
        for reclaimed in repo.ports()?.reclaim()? {
            report.reclaimed_ports.extend(reclaimed.ports.values());
        }
    }
    if repo.config.database.enabled {
        let server = repo.server_with(Cleanup::unless(args.dry_run))?;
        let rows = server_gc(&server, args.dry_run)?;
        report.dropped_databases = rows.dropped.into_iter().map(|r| r.name).collect();
        let (dropped, released) = reclaim_gone_repositories(&server, &repo.ports()?, args.dry_run)?;
        report.dropped_databases.extend(dropped);
        report.reclaimed_ports.extend(released);
    }

    if args.json {
        print_json(&report)?;
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let finished = if args.dry_run {
            "would finish interrupted operation"
        } else {
            "finished interrupted operation"
        };
        for id in &report.finished {
            println!("{finished}: {id}");
        }
        for id in &report.removed {
            println!("{verb}: {id}");
        }
        for path in &report.trimmed_pool {
            println!("{verb} from the pool: {}", path.display());
        }
        for skipped in &report.skipped {
            println!("kept: {} ({})", skipped.id, skipped.reason);
        }
        let dropped = if args.dry_run {
            "would drop database"
        } else {
            "dropped database"
        };
        for name in &report.dropped_databases {
            println!("{dropped}: {name}");
        }
        if !report.reclaimed_ports.is_empty() {
            println!("reclaimed ports: {:?}", report.reclaimed_ports);
        }
        for error in &report.errors {
            println!("failed: {error}");
        }
        let (removed, finished) = if args.dry_run {
            ("would remove", "would finish")
        } else {
            ("removed", "finished")
        };
        println!(
            "gc: {} {removed}, {} {finished}, {} kept, {} failed",
            report.removed.len(),
            report.finished.len(),
            report.skipped.len(),
            report.errors.len()
        );
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn phase_verb(phase: Phase) -> &'static str {
    match phase {
        Phase::Creating => "create",
        Phase::Removing => "remove",
        Phase::Ready => "operation",
    }
}
