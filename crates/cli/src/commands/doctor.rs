//! `isolane doctor [--fix]`: registry, git worktrees, port leases and
//! databases checked against each other; every inconsistency reported and,
//! with `--fix`, repaired — never by deleting anything that holds work.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{print_json, progress};
use crate::context::{Cleanup, Repo};
use crate::database_gc::{of_gone_repository, take_back};
use crate::lifecycle::{Teardown, abandoned, teardown, unchanged};
use crate::state::{Phase, Worktrees};

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
    // What a killed `isolane run` left running is stopped by any command,
    // this one included; it is reported as found and repaired.
    for stopped in crate::runs::stop_leftovers(&repo)? {
        findings.push(Finding {
            kind: "killed-run",
            subject: stopped.id,
            detail: format!(
                "an `isolane run` was killed; {} process(es) it left running were stopped",
                stopped.processes
            ),
            fixed: true,
        });
    }
    let doc = repo.registry.read()?;
    let tear = |entry, how| teardown(&repo, entry, how).map(drop);

    for entry in doc.entries.values() {
        if abandoned(&repo, entry)? {
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
        } else if entry.phase == Phase::Ready
            && !entry.path.is_dir()
            // Not a remove that began after the snapshot (it records its
            // intent before it deletes the directory).
            && unchanged(&repo, entry)?
        {
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
        let unknown = |doc: &Worktrees| !doc.entries.contains_key(&info.id);
        if !confirmed(&repo, unknown, || Ok(info.path.is_dir()))? {
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
        let unknown = |doc: &Worktrees| !doc.entries.contains_key(id);
        let still_leased = || Ok(ports.list()?.iter().any(|l| l.owner == lease.owner));
        if !confirmed(&repo, unknown, still_leased)? {
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
        // Without --fix doctor only reports: no automatic cleanup either.
        let server = repo.server_with(Cleanup::unless(!fix))?;
        let referenced: BTreeSet<&str> = doc
            .entries
            .values()
            .filter_map(|e| e.database.as_deref())
            .collect();
        let all = server.list_databases()?;
        let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
        for entry in doc.entries.values().filter(|e| e.phase == Phase::Ready) {
            let Some(base) = entry.database.as_deref() else {
                continue;
            };
            findings.extend(worktree_database_findings(
                &repo, &server, entry, base, &all, &names, fix,
            ));
        }
        for database in all.iter().cloned() {
            if database.owner.is_none() && referenced.contains(database.name.as_str()) {
                // Reported above, as the worktree's database replaced by hand.
                continue;
            }
            if database.owner.is_none() && database.name.starts_with(server.prefix()) {
                findings.extend(unrecorded(&server, &database, fix));
                continue;
            }
            if of_gone_repository(&database) {
                let name = database.name.as_str();
                let repository = database
                    .owner
                    .as_ref()
                    .and_then(|o| o.owner_path.as_deref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                findings.push(repair(
                    fix,
                    GONE_REPOSITORY,
                    name,
                    format!(
                        "its repository {repository} no longer exists; --fix drops it and \
                         releases its ports"
                    ),
                    || take_back(&server, &ports, &database).map(drop),
                ));
                continue;
            }
            let Some(id) = repo.worktree_of_database(&server, &database) else {
                continue;
            };
            if referenced.contains(database.name.as_str()) {
                continue;
            }
            let name = database.name.as_str();
            let still_there = || Ok(server.database_exists(name)?);
            if !confirmed_database(&repo, id, name, still_there)? {
                continue;
            }
            let detail = format!("database of worktree {id}, which the registry does not know");
            findings.push(repair(
                fix,
                "database-without-entry",
                &database.name,
                detail,
                || {
                    // Confirmed just above, with the registry read again.
                    server
                        .drop_database(&database.name)
                        .map_err(anyhow::Error::from)
                },
            ));
        }
    }

    // What doctor sees of the whole server rather than of this repository
    // (a database isolane did not make; a create killed in any repository
    // or test suite, which the next automatic cleanup drops; a deleted
    // repository's databases) is shown, but it does not fail this
    // repository's check.
    let unresolved = findings
        .iter()
        .filter(|f| !f.fixed && !HOST_WIDE.contains(&f.kind))
        .count();
    if json {
        print_json(&findings)?;
    } else if findings.is_empty() {
        println!("doctor: registry, worktrees, ports and databases agree");
    } else {
        for f in &findings {
            let mark = match (f.fixed, f.kind) {
                (true, _) => "fixed",
                (false, kind) if HOST_WIDE.contains(&kind) => "note",
                (false, _) => "found",
            };
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

/// A database a test runner derived from a worktree's (Django's or
/// pytest-django's `test_<name>`, kept by `--keepdb` / `--reuse-db`): shown,
/// dropped by `--fix` unless the worktree is in use, not a failure.
const DERIVED_DATABASE: &str = "derived-database";

/// What doctor finds of ready worktree `entry`'s database `base`: replaced
/// by hand (its exact name without an owner record; `--fix` replaces it
/// with a fresh clone that carries one), and the databases derived from it.
fn worktree_database_findings(
    repo: &Repo,
    server: &pg_isolate::Server,
    entry: &crate::state::Entry,
    base: &str,
    all: &[pg_isolate::DatabaseInfo],
    names: &[&str],
    fix: bool,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let replaced = all.iter().any(|d| d.name == base && d.owner.is_none())
        && repo.is_worktree_database_name(server, &entry.id, base);
    if replaced {
        findings.push(repair(
            fix,
            "database-replaced-by-hand",
            base,
            format!(
                "the database of worktree {} carries no owner record (a dropdb + createdb of \
                 its name?); it is still the worktree's: --fix (or `isolane db reset {}`) \
                 replaces it with a fresh one from the template",
                entry.id, entry.id
            ),
            || {
                let template = crate::template::for_worktree(repo, server, &entry.path, false)?;
                crate::worktree_db::drop_unrecorded(server, base)?;
                let owner = repo.owner(&entry.id);
                server.create_database(
                    base,
                    pg_isolate::CreateOptions {
                        template: template.as_ref().map(pg_isolate::Template::name),
                        label: Some(&owner),
                        owner_path: Some(&repo.common_dir),
                        ..pg_isolate::CreateOptions::default()
                    },
                )?;
                Ok(())
            },
        ));
    }
    for name in crate::worktree_db::derived(base, names) {
        if entry.is_running() {
            findings.push(Finding {
                kind: DERIVED_DATABASE,
                subject: name.to_owned(),
                detail: format!(
                    "derived from {base} by a test runner; worktree {} is in use, so it stays",
                    entry.id
                ),
                fixed: false,
            });
            continue;
        }
        findings.push(repair(
            fix,
            DERIVED_DATABASE,
            name,
            format!(
                "derived from {base} of worktree {} by a test runner (Django, pytest-django \
                 --reuse-db); --fix drops it, `isolane remove` does too",
                entry.id
            ),
            || crate::worktree_db::drop_unrecorded(server, name),
        ));
    }
    findings
}

/// A database under the prefix that isolane did not make.
const FOREIGN_DATABASE: &str = "database-without-record";

/// A database left under its birth name by a killed create.
const INTERRUPTED_CREATE: &str = "interrupted-database-create";

/// Findings about the whole server rather than this repository, and
/// databases a test runner keeps on purpose: shown, and repaired by `--fix`
/// where that is safe, but they do not fail the check.
const HOST_WIDE: [&str; 4] = [
    FOREIGN_DATABASE,
    INTERRUPTED_CREATE,
    DERIVED_DATABASE,
    GONE_REPOSITORY,
];

/// A worktree database of a repository deleted without `isolane remove`:
/// another repository's leftover, which the next `gc` anywhere takes back.
const GONE_REPOSITORY: &str = "database-of-gone-repository";

/// A database under the prefix without an owner record: one left under its
/// birth name by an interrupted create (dropped on `--fix`), or one that
/// pg-isolate did not make (only reported: isolane never drops it). `None`
/// for a create still running.
fn unrecorded(
    server: &pg_isolate::Server,
    database: &pg_isolate::DatabaseInfo,
    fix: bool,
) -> Option<Finding> {
    let name = database.name.as_str();
    match database.interrupted_create() {
        Some(false) => None,
        Some(true) => Some(repair(
            fix,
            INTERRUPTED_CREATE,
            name,
            "created by a process that is gone before its owner record was written; \
             --fix drops it"
                .to_owned(),
            || Ok(server.drop_interrupted_create(name)?),
        )),
        None => Some(Finding {
            kind: FOREIGN_DATABASE,
            subject: name.to_owned(),
            detail: format!(
                "under the prefix {:?} but without a pg-isolate owner record: not made by \
                 isolane, so it is left alone (drop or rename it yourself)",
                server.prefix()
            ),
            fixed: false,
        }),
    }
}

/// Whether what a check found unaccounted for (`unaccounted` of a registry
/// read) really is, rather than caught mid-way by a create or remove
/// running beside doctor: unaccounted for in a fresh read, still there
/// afterwards, and still unaccounted for after that. A create records its
/// entry before it makes a directory, lease or database, and a remove takes
/// them away before it deletes the entry, so a thing still there between
/// two reads that both lack its entry has none.
fn confirmed(
    repo: &Repo,
    unaccounted: impl Fn(&Worktrees) -> bool,
    still_there: impl FnOnce() -> Result<bool>,
) -> Result<bool> {
    Ok(
        unaccounted(&repo.registry.read()?)
            && still_there()?
            && unaccounted(&repo.registry.read()?),
    )
}

/// [`confirmed`] for database `name` labelled as worktree `id`'s: no entry
/// names it, and no entry `id` is at work (one left by a crashed create
/// that made the database but did not record it does not count).
fn confirmed_database(
    repo: &Repo,
    id: &str,
    name: &str,
    still_there: impl FnOnce() -> Result<bool>,
) -> Result<bool> {
    let unaccounted = |doc: &Worktrees| -> Result<bool> {
        if doc
            .entries
            .values()
            .any(|e| e.database.as_deref() == Some(name))
        {
            return Ok(false);
        }
        match doc.entries.get(id) {
            None => Ok(true),
            Some(entry) => abandoned(repo, entry),
        }
    };
    Ok(unaccounted(&repo.registry.read()?)?
        && still_there()?
        && unaccounted(&repo.registry.read()?)?)
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
