//! `isolane create`: worktree, ports, database, files, hooks — all or
//! nothing ([`crate::lifecycle::provision`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{InputError, print_json};
use crate::cli::CreateArgs;
use crate::config::looks_like_port_name;
use crate::context::Repo;
use crate::lifecycle::provision;

/// What `create` prints.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    id: &'a str,
    path: &'a Path,
    branch: Option<&'a str>,
    ports: &'a BTreeMap<String, u16>,
    database: Option<&'a str>,
    /// With any password masked.
    database_url: Option<String>,
    from_pool: bool,
}

pub(super) fn run(args: &CreateArgs) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    worktree_core::validate_name("purpose", &args.purpose)?;
    worktree_core::validate_name("identifier", &args.identifier)?;
    let port_names = if args.ports.is_empty() {
        repo.config.ports.names.clone()
    } else {
        args.ports.clone()
    };
    if let Some(bad) = port_names.iter().find(|n| !looks_like_port_name(n)) {
        return Err(InputError(format!(
            "port name {bad:?} must be an environment variable name (A-Z, 0-9, _)"
        ))
        .into());
    }
    if let Some(problem) = repo.config.ports.host_problem() {
        return Err(InputError(problem).into());
    }
    let want_database = repo.config.database.enabled && !args.no_db;

    let mut request = worktree_core::CreateRequest::new(&args.purpose, &args.identifier);
    request.branch = args.branch.clone();
    request.base = args.base.clone();
    request.submodules = repo.config.worktrees.submodules;
    let created = provision(&repo, &request, &port_names, want_database)?;
    let entry = &created.entry;
    let summary = Summary {
        id: &entry.id,
        path: &entry.path,
        branch: entry.branch.as_deref(),
        ports: &entry.ports,
        database: entry.database.as_deref(),
        database_url: created.database_url.as_deref().map(pg_isolate::redact_url),
        from_pool: created.from_pool,
    };
    if args.json {
        print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &Summary<'_>) {
    println!("created {}", summary.id);
    println!("  path      {}", summary.path.display());
    if let Some(branch) = summary.branch {
        println!("  branch    {branch}");
    }
    for (name, port) in summary.ports {
        println!("  {name:<9} {port}");
    }
    match (&summary.database, &summary.database_url) {
        (Some(name), Some(url)) => {
            println!("  database  {name}");
            println!("  url       {url}");
        }
        _ => println!("  database  (none)"),
    }
}
