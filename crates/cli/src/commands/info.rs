//! `isolane list`, `show` and `env`: the registry, reconciled with what is
//! really on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{InputError, age, print_json};
use crate::cli::EnvFormat;
use crate::context::Repo;
use crate::envfile;
use crate::state::{Entry, Phase, now};

/// One worktree as `list` and `show` report it.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) id: String,
    /// ready, creating, removing, interrupted-create, interrupted-remove,
    /// missing-directory, dirty, in-use.
    pub(crate) state: String,
    pub(crate) path: PathBuf,
    pub(crate) branch: Option<String>,
    pub(crate) age_seconds: u64,
    pub(crate) ports: BTreeMap<String, u16>,
    pub(crate) database: Option<String>,
    pub(crate) dirty_files: Vec<String>,
    pub(crate) unmerged_commits: Vec<String>,
    pub(crate) locked: Option<String>,
}

/// Reconciles every registry entry with git's view of the worktrees.
pub(crate) fn statuses(repo: &Repo) -> Result<Vec<Status>> {
    let doc = repo.registry.read()?;
    let infos = repo.worktrees.list()?;
    let now = now();
    let mut statuses: Vec<Status> = doc
        .entries
        .values()
        .map(|entry| {
            let info = infos.iter().find(|i| i.managed && i.id == entry.id);
            status(entry, info, now)
        })
        .collect();
    // An interrupted operation or a missing directory, judged from the
    // snapshot, may be a create that finished and exited, or a remove that
    // began, after it was read. Read again (after every judgement): an
    // entry that changed meanwhile is shown as it is now, an entry that
    // went is not shown.
    if statuses.iter().any(|s| s.in_doubt()) {
        let fresh = repo.registry.read()?;
        statuses.retain_mut(|s| {
            if !s.in_doubt() {
                return true;
            }
            let (Some(then), Some(current)) = (doc.entries.get(&s.id), fresh.entries.get(&s.id))
            else {
                return false;
            };
            if current.phase != then.phase || current.actor != then.actor {
                s.state = current.phase.as_str().to_owned();
                s.ports = current.ports.clone();
                s.database = current.database.clone();
            }
            true
        });
    }
    Ok(statuses)
}

impl Status {
    /// A state that a command running beside this one can fake.
    fn in_doubt(&self) -> bool {
        matches!(
            self.state.as_str(),
            "interrupted-create" | "interrupted-remove" | "missing-directory"
        )
    }
}

fn status(entry: &Entry, info: Option<&worktree_core::WorktreeInfo>, now: u64) -> Status {
    let locked = info
        .and_then(|i| i.lock.as_ref())
        .filter(|lock| lock.owner_alive)
        .map(|lock| lock.reason.clone());
    let dirty_files = info.map(|i| i.dirty_files.clone()).unwrap_or_default();
    let state = match entry.phase {
        Phase::Creating if entry.is_abandoned() => "interrupted-create",
        Phase::Removing if entry.is_abandoned() => "interrupted-remove",
        Phase::Creating => "creating",
        Phase::Removing => "removing",
        Phase::Ready if !entry.path.is_dir() => "missing-directory",
        Phase::Ready if locked.is_some() || entry.is_running() => "in-use",
        Phase::Ready if !dirty_files.is_empty() => "dirty",
        Phase::Ready => "ready",
    };
    Status {
        id: entry.id.clone(),
        state: state.to_owned(),
        path: entry.path.clone(),
        branch: entry.branch.clone(),
        age_seconds: now.saturating_sub(entry.created),
        ports: entry.ports.clone(),
        database: entry.database.clone(),
        dirty_files,
        unmerged_commits: info.map(|i| i.unmerged_commits.clone()).unwrap_or_default(),
        locked,
    }
}

/// Starts the database server when it is down (an idle stop of the
/// embedded server, a reboot) and one of `databases` is listed, so the
/// `DATABASE_URL`s in the worktrees' `.env.test` work again. A server that
/// cannot be reached is said, not fatal: the listing is useful all the same.
fn serve(repo: &Repo, mut databases: impl Iterator<Item = bool>) {
    if !repo.config.database.enabled || !databases.any(|has| has) {
        return;
    }
    if let Err(error) = repo.server() {
        super::progress(format_args!(
            "the database server is not reachable: {error:#}"
        ));
    }
}

pub(super) fn list(json: bool) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    crate::runs::stop_leftovers(&repo)?;
    serve(
        &repo,
        repo.registry
            .read()?
            .entries
            .values()
            .map(|e| e.database.is_some()),
    );
    let statuses = statuses(&repo)?;
    if json {
        print_json(&statuses)?;
        return Ok(ExitCode::SUCCESS);
    }
    if statuses.is_empty() {
        println!("no test worktrees (isolane create --purpose test-... --identifier ...)");
        return Ok(ExitCode::SUCCESS);
    }
    let ports: Vec<String> = statuses
        .iter()
        .map(|s| {
            s.ports
                .values()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let width = |cells: &mut dyn Iterator<Item = usize>, header: &str| {
        cells.max().unwrap_or(0).max(header.len())
    };
    let id_w = width(&mut statuses.iter().map(|s| s.id.len()), "ID");
    let ports_w = width(&mut ports.iter().map(String::len), "PORTS");
    let db_w = width(
        &mut statuses
            .iter()
            .map(|s| s.database.as_deref().map_or(1, str::len)),
        "DATABASE",
    );
    println!(
        "{:<id_w$}  {:<18}  {:>7}  {:<ports_w$}  {:<db_w$}  BRANCH",
        "ID", "STATE", "AGE", "PORTS", "DATABASE"
    );
    for (s, ports) in statuses.iter().zip(&ports) {
        println!(
            "{:<id_w$}  {:<18}  {:>7}  {:<ports_w$}  {:<db_w$}  {}",
            s.id,
            s.state,
            age(s.age_seconds),
            ports,
            s.database.as_deref().unwrap_or("-"),
            s.branch.as_deref().unwrap_or("(detached)")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn show(id: &str, json: bool) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    crate::runs::stop_leftovers(&repo)?;
    let entry = repo.entry(id)?;
    serve(&repo, std::iter::once(entry.database.is_some()));
    let status = statuses(&repo)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| InputError(format!("worktree {id} was removed meanwhile")))?;
    if json {
        print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", status.id);
    println!("  state     {}", status.state);
    println!("  path      {}", status.path.display());
    println!(
        "  branch    {}",
        status.branch.as_deref().unwrap_or("(detached)")
    );
    println!("  age       {}", age(status.age_seconds));
    for (name, port) in &status.ports {
        println!("  {name:<9} {port}");
    }
    println!(
        "  database  {}",
        status.database.as_deref().unwrap_or("(none)")
    );
    if let Some(reason) = &status.locked {
        println!("  locked    {reason}");
    }
    for file in &status.dirty_files {
        println!("  dirty     {file}");
    }
    for commit in &status.unmerged_commits {
        println!("  unmerged  {commit}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn env(id: &str, format: EnvFormat) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    let env = repo.environment(&repo.entry(id)?)?;
    match format {
        EnvFormat::Dotenv => print!("{}", envfile::dotenv(&env)),
        EnvFormat::Shell => print!("{}", envfile::shell(&env)),
        EnvFormat::Json => print_json(&env)?,
    }
    Ok(ExitCode::SUCCESS)
}
