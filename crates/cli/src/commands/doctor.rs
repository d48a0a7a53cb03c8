//! `isolane doctor [--fix]`: registry, git worktrees, port leases and
//! databases checked against each other; every inconsistency reported and,
//! with `--fix`, repaired — never by deleting anything that holds work.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::remove::{Teardown, teardown};
use super::{print_json, progress};
use crate::context::Repo;
use crate::state::Phase;

#[derive(Debug, Serialize)]
struct Finding {
    /// What kind of inconsistency.
    kind: &'static str,
    /// The worktree id, lease owner or database concerned.
    subject: String,
    detail: String,
    /// Whether `--fix` repaired it.
    fixed: bool,
}

pub(super) fn run(fix: bool, json: bool) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    let mut findings = Vec::new();

    // A corrupt registry is reported, and only moved aside on --fix (the
    // bad copy is kept); the checks below then see what is left unowned.
    if let Err(registry::Error::Corrupt { path, .. }) = repo.registry.read() {
        let kept = if fix {
            repo.registry.recover_corrupt()?
        } else {
            None
        };
        findings.push(Finding {
            kind: "corrupt-registry",
            subject: path.display().to_string(),
            detail: match &kept {
                Some(copy) => format!("moved aside to {}", copy.display()),
                None => "unreadable; --fix moves it aside (a copy is kept)".to_owned(),
            },
            fixed: kept.is_some(),
        });
    }
    let doc = repo.registry.read()?;
    let tear = |entry, how| teardown(&repo, entry, how).map(drop);

    for entry in doc.entries.values() {
        if entry.is_abandoned() {
            let how = Teardown::finishing(entry);
            findings.push(repair(
                fix,
                "interrupted-operation",
                &entry.id,
                format!(
                    "left in state {} by a process that is gone",
                    entry.phase.as_str()
                ),
                || tear(entry, how),
            ));
        } else if entry.phase == Phase::Ready && !entry.path.is_dir() {
            let how = Teardown {
                force: false,
                keep_branch: true,
                hooks: false,
            };
            findings.push(repair(
                fix,
                "entry-without-directory",
                &entry.id,
                format!(
                    "{} is gone; --fix drops its database and releases its ports",
                    entry.path.display()
                ),
                || tear(entry, how),
            ));
        }
    }

    let known: BTreeSet<&str> = doc.entries.keys().map(String::as_str).collect();
    for info in repo.worktrees.list()? {
        if !info.managed || info.main || info.pooled || known.contains(info.id.as_str()) {
            continue;
        }
        let holds_work = !info.dirty_files.is_empty() || !info.unmerged_commits.is_empty();
        let detail = format!("{} is not in the registry", info.path.display());
        if holds_work {
            findings.push(Finding {
                kind: "directory-without-entry",
                subject: info.id.clone(),
                detail: format!("{detail}; it holds work, so it is left for you to remove (isolane never deletes work)"),
                fixed: false,
            });
            continue;
        }
        findings.push(repair(
            fix,
            "directory-without-entry",
            &info.id,
            detail,
            || {
                if registered_meanwhile(&repo, &info.id)? {
                    return Ok(());
                }
                repo.worktrees
                    .remove(&info.id, worktree_core::RemoveOptions::default())
                    .map(drop)
                    .map_err(anyhow::Error::from)
            },
        ));
    }

    let ports = repo.ports()?;
    for lease in ports.list()? {
        let Some(id) = repo.id_of_owner(&lease.owner) else {
            continue;
        };
        if known.contains(id) {
            continue;
        }
        let detail = format!(
            "ports {:?} leased to a worktree the registry does not know",
            lease.ports
        );
        findings.push(repair(fix, "lease-without-entry", id, detail, || {
            if registered_meanwhile(&repo, id)? {
                return Ok(());
            }
            ports
                .release_owner(&lease.owner)
                .map(drop)
                .map_err(anyhow::Error::from)
        }));
    }

    if repo.config.database.enabled {
        let server = repo.server()?;
        let referenced: BTreeSet<&str> = doc
            .entries
            .values()
            .filter_map(|e| e.database.as_deref())
            .collect();
        for database in server.list_databases()? {
            let ours = database
                .owner
                .as_ref()
                .and_then(|owner| owner.label.as_deref())
                .and_then(|label| repo.id_of_owner(label));
            let Some(id) = ours else {
                continue;
            };
            if referenced.contains(database.name.as_str()) {
                continue;
            }
            let detail = format!("database of worktree {id}, which the registry does not know");
            findings.push(repair(
                fix,
                "database-without-entry",
                &database.name,
                detail,
                || {
                    if registered_meanwhile(&repo, id)? {
                        return Ok(());
                    }
                    server
                        .drop_database(&database.name)
                        .map_err(anyhow::Error::from)
                },
            ));
        }
    }

    let unresolved = findings.iter().filter(|f| !f.fixed).count();
    if json {
        print_json(&findings)?;
    } else if findings.is_empty() {
        println!("doctor: registry, worktrees, ports and databases agree");
    } else {
        for f in &findings {
            let mark = if f.fixed { "fixed" } else { "found" };
            println!("{mark}: {} {}: {}", f.kind, f.subject, f.detail);
        }
        println!(
            "doctor: {} finding(s), {} unresolved",
            findings.len(),
            unresolved
        );
        if !fix && unresolved > 0 {
            println!("run `isolane doctor --fix` to repair what can be repaired safely");
        }
    }
    Ok(if unresolved == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether `id` got a registry entry since the snapshot the checks used (a
/// create running beside doctor): then what looked unowned is that
/// create's, and must be left alone.
fn registered_meanwhile(repo: &Repo, id: &str) -> Result<bool> {
    Ok(repo.registry.read()?.entries.contains_key(id))
}

/// A finding, repaired by `action` when `fix` is set.
fn repair(
    fix: bool,
    kind: &'static str,
    subject: &str,
    detail: String,
    action: impl FnOnce() -> Result<()>,
) -> Finding {
    let mut finding = Finding {
        kind,
        subject: subject.to_owned(),
        detail,
        fixed: false,
    };
    if fix {
        progress(format_args!("fixing {kind} {subject}"));
        match action() {
            Ok(()) => finding.fixed = true,
            Err(error) => finding.detail = format!("{}; repair failed: {error:#}", finding.detail),
        }
    }
    finding
}
