//! `isolane create`: worktree, ports, database, files, hooks — all or
//! nothing.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::database_gc::{of_gone_repository, take_back};
use super::remove::{Teardown, teardown};
use super::{InputError, print_json, progress};
use crate::cli::CreateArgs;
use crate::config::looks_like_port_name;
use crate::context::Repo;
use crate::envfile;
use crate::state::{Entry, Phase, now};

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
    let id = format!("{}-{}", args.purpose, args.identifier);
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

    // The intent comes first: from here on a crash leaves an entry in
    // `creating` that gc / doctor roll back.
    let path = repo.worktrees.path_of(&id);
    repo.registry.update(|doc| {
        if let Some(existing) = doc.entries.get(&id) {
            let hint = if existing.is_abandoned() {
                "an interrupted command left it behind; `isolane gc` finishes the cleanup"
            } else {
                "remove it first, or choose another identifier"
            };
            return Err(anyhow::Error::from(InputError(format!(
                "worktree {id} already exists ({}); {hint}",
                existing.phase.as_str()
            ))));
        }
        doc.entries.insert(
            id.clone(),
            Entry {
                id: id.clone(),
                purpose: args.purpose.clone(),
                identifier: args.identifier.clone(),
                branch: args.branch.clone(),
                branch_created: false,
                path_preexisting: path.exists(),
                path: path.clone(),
                created: now(),
                ports: BTreeMap::new(),
                database: None,
                phase: Phase::Creating,
                actor: registry::ProcessIdentity::current(),
            },
        );
        Ok(())
    })?;
    registry::fault_point("create.after_intent");

    match build(&repo, args, &id, &port_names, want_database) {
        Ok(created) => {
            let entry = repo.entry(&id)?;
            let summary = Summary {
                id: &id,
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
        Err(error) => {
            progress(format_args!("create failed; rolling back {id}"));
            match repo.entry(&id) {
                Ok(entry) => {
                    if let Err(cleanup) = teardown(&repo, &entry, Teardown::rollback()) {
                        progress(format_args!(
                            "rollback incomplete ({cleanup:#}); `isolane gc` will finish it"
                        ));
                    }
                }
                Err(lookup) => progress(format_args!("rollback skipped: {lookup:#}")),
            }
            Err(error)
        }
    }
}

struct Created {
    database_url: Option<String>,
    from_pool: bool,
}

fn build(
    repo: &Repo,
    args: &CreateArgs,
    id: &str,
    port_names: &[String],
    want_database: bool,
) -> Result<Created> {
    progress(format_args!(
        "creating worktree {}",
        repo.worktrees.path_of(id).display()
    ));
    let mut request = worktree_core::CreateRequest::new(&args.purpose, &args.identifier);
    request.branch = args.branch.clone();
    request.base = args.base.clone();
    let worktree = repo.worktrees.create(&request)?;
    record(repo, id, |entry| {
        entry.path = worktree.path.clone();
        entry.branch = worktree.branch.clone();
        entry.branch_created = worktree.branch_created;
    })?;
    registry::fault_point("create.after_worktree");

    let names: Vec<&str> = port_names.iter().map(String::as_str).collect();
    let lease = repo
        .ports()?
        .lease(&repo.owner(id), &names, port_alloc::Holder::Manual)?;
    record(repo, id, |entry| entry.ports = lease.ports.clone())?;
    registry::fault_point("create.after_ports");

    let database_url = if want_database {
        let server = repo.server()?;
        let template = match repo.migrations()? {
            Some(migrations) => {
                progress(format_args!(
                    "preparing the template of {} migrations in {}",
                    migrations.len(),
                    migrations.dir().display()
                ));
                Some(migrations.template(&server)?)
            }
            None => None,
        };
        let short = crate::context::database_stem(id);
        let name = server.database_name(&short)?;
        let owner = repo.owner(id);
        let options = pg_isolate::CreateOptions {
            template: template.as_ref().map(pg_isolate::Template::name),
            label: Some(&owner),
            owner_path: Some(&repo.common_dir),
            ..pg_isolate::CreateOptions::default()
        };
        progress(format_args!("creating database {name}"));
        match server.create_database(&name, options.clone()) {
            Err(pg_isolate::Error::DatabaseExists { .. }) => {
                let gone = server
                    .list_databases()?
                    .into_iter()
                    .find(|db| db.name == name && of_gone_repository(db))
                    .ok_or_else(|| pg_isolate::Error::DatabaseExists {
                        database: name.clone(),
                    })?;
                progress(format_args!(
                    "database {name} belongs to a repository that no longer exists on this \
                     host; taking it over"
                ));
                take_back(&server, &repo.ports()?, &gone)?;
                server.create_database(&name, options)?;
            }
            created => {
                created?;
            }
        }
        // Recorded only once it is ours: a name taken by someone else
        // (DatabaseExists) must never reach the rollback's drop. A crash
        // right here leaves a database labelled with our owner name and no
        // entry, which `isolane doctor --fix` drops.
        record(repo, id, |entry| entry.database = Some(name.clone()))?;
        registry::fault_point("create.after_database");
        Some(server.url(&name))
    } else {
        None
    };

    let entry = repo.entry(id)?;
    let config = &repo.config;
    envfile::write_files(
        &entry.path,
        &config.env_file,
        &config.metadata_file,
        &entry,
        database_url.as_deref(),
    )
    .with_context(|| {
        format!(
            "cannot write {} and {} in {}",
            config.env_file,
            config.metadata_file,
            entry.path.display()
        )
    })?;
    repo.worktrees.exclude(&format!("/{}", config.env_file))?;
    repo.worktrees
        .exclude(&format!("/{}", config.metadata_file))?;

    let env = envfile::environment(&entry, database_url.as_deref());
    for hook in &config.hooks.post_create {
        registry::fault_point("create.during_hooks");
        run_hook(hook, &entry.path, &env)?;
    }

    record(repo, id, |entry| {
        entry.phase = Phase::Ready;
        entry.actor = registry::ProcessIdentity::current();
    })?;
    Ok(Created {
        database_url,
        from_pool: worktree.from_pool,
    })
}

/// Changes entry `id` in the registry.
pub(crate) fn record(repo: &Repo, id: &str, change: impl FnOnce(&mut Entry)) -> Result<()> {
    repo.registry.update(|doc| match doc.entries.get_mut(id) {
        Some(entry) => {
            change(entry);
            Ok(())
        }
        None => bail!("registry entry {id} disappeared while in use (another isolane removed it?)"),
    })
}

/// Runs a hook in `dir` with the worktree environment; its output is
/// streamed to stderr (stdout stays for results).
pub(crate) fn run_hook(hook: &str, dir: &Path, env: &BTreeMap<String, String>) -> Result<()> {
    progress(format_args!("running hook: {hook}"));
    let stdout = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(hook)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .status()
        .with_context(|| format!("cannot start hook `{hook}`"))?;
    if !status.success() {
        bail!("hook `{hook}` failed with {status} in {}", dir.display());
    }
    Ok(())
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
