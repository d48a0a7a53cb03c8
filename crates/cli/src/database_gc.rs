//! pg-isolate's leak cleanup as the CLI runs and shows it, shared by
//! `isolane gc` and `isolane db gc`.

use anyhow::Result;
use serde::Serialize;

/// One database `db gc` (or `gc`) dropped or kept.
#[derive(Debug, Serialize)]
pub(crate) struct GcRow {
    pub(crate) name: String,
    pub(crate) kind: Option<String>,
    pub(crate) reason: String,
}

/// What pg-isolate's gc did, for printing.
#[derive(Debug, Default, Serialize)]
pub(crate) struct GcRows {
    pub(crate) dropped: Vec<GcRow>,
    pub(crate) kept: Vec<GcRow>,
    pub(crate) dry_run: bool,
}

/// Runs pg-isolate's gc on `server` (dropping nothing on a dry run).
pub(crate) fn server_gc(server: &pg_isolate::Server, dry_run: bool) -> Result<GcRows> {
    let report = server.gc(&pg_isolate::GcOptions {
        dry_run,
        ..pg_isolate::GcOptions::default()
    })?;
    let rows = |entries: Vec<pg_isolate::GcEntry>| {
        entries
            .into_iter()
            .map(|e| GcRow {
                name: e.name,
                kind: e.kind.map(|k| format!("{k:?}").to_lowercase()),
                reason: e.reason.to_string(),
            })
            .collect()
    };
    Ok(GcRows {
        dropped: rows(report.dropped),
        kept: rows(report.kept),
        dry_run,
    })
}

/// Whether `database` is a worktree database isolane created for a
/// repository that no longer exists on this host (deleted without
/// `isolane remove`, as CI does with its workspace): a named database with
/// an isolane label whose recorded repository (git common dir) is gone.
pub(crate) fn of_gone_repository(database: &pg_isolate::DatabaseInfo) -> bool {
    database.owner.as_ref().is_some_and(|owner| {
        owner.kind == pg_isolate::DatabaseKind::Named
            && owner
                .label
                .as_deref()
                .is_some_and(|label| label.starts_with("isolane-"))
            && owner.owner_path_gone()
    })
}

/// Takes back what a deleted repository's worktree held, given its
/// database ([`of_gone_repository`]): drops the database if it is still the
/// gone repository's (another process may have taken it over since it was
/// listed) with the databases Django and pytest-django derived from it,
/// then releases the port lease of the same owner (the database's label is
/// the lease owner). Returns the ports released, or `None` if the
/// database was no longer the gone repository's.
pub(crate) fn take_back(
    server: &pg_isolate::Server,
    ports: &port_alloc::PortAllocator,
    database: &pg_isolate::DatabaseInfo,
) -> Result<Option<Vec<u16>>> {
    let same_owner =
        |now: &pg_isolate::DatabaseInfo| of_gone_repository(now) && now.owner == database.owner;
    if !server.drop_database_if(&database.name, same_owner)? {
        return Ok(None);
    }
    // What Django and pytest-django derived from it (`test_<name>`, ...)
    // went with its repository too; a new worktree of the same name must
    // not find another branch's test database (`--keepdb`, `--reuse-db`).
    crate::worktree_db::drop_derived(server, &database.name)?;
    let owner = database.owner.as_ref().and_then(|o| o.label.as_deref());
    Ok(Some(match owner {
        Some(owner) => ports.release_owner(owner)?,
        None => Vec::new(),
    }))
}

/// Takes back the databases and leases of every repository that is gone
/// ([`take_back`]); returns the database names and the ports (those it
/// would drop, on a dry run, and no ports).
pub(crate) fn reclaim_gone_repositories(
    server: &pg_isolate::Server,
    ports: &port_alloc::PortAllocator,
    dry_run: bool,
) -> Result<(Vec<String>, Vec<u16>)> {
    let (mut dropped, mut released) = (Vec::new(), Vec::new());
    for database in server.list_databases()? {
        if !of_gone_repository(&database) {
            continue;
        }
        if !dry_run {
            match take_back(server, ports, &database)? {
                Some(ports) => released.extend(ports),
                None => continue,
            }
        }
        dropped.push(database.name);
    }
    Ok((dropped, released))
}
