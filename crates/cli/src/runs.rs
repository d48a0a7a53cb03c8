//! The record of an `isolane run` in the registry, and the stopping of what
//! a killed run left running.
//!
//! `run` records itself (its process identity and a token) before it starts
//! anything, and each process group it starts as soon as it exists. Every
//! process it starts carries the token in its environment. If `run` is
//! killed (SIGKILL leaves it no chance to clean up), the next `run`, `list`,
//! `show`, `gc`, `doctor` or `remove` in the repository finds the record of
//! a dead runner and stops what is left: each recorded group whose leader
//! still has the recorded identity, and each process that carries the
//! token. Nothing else is ever signalled.

use std::time::Duration;

use anyhow::Result;
use registry::ProcessIdentity;

use crate::commands::progress;
use crate::context::Repo;
use crate::procs::{self, Target};
use crate::state::{RunGroup, RunRecord};

/// The variable that marks every process of a run.
pub(crate) const TOKEN_VAR: &str = registry::RUN_TOKEN_ENV;

/// How long a leftover process gets between TERM and KILL.
const GRACE: Duration = Duration::from_secs(5);

/// Records that this process runs in worktree `id`; returns the token its
/// processes must carry. Refuses if another live run is recorded there.
pub(crate) fn begin(repo: &Repo, id: &str) -> Result<String> {
    // A record of a dead run is acted on, never overwritten.
    stop_leftovers(repo)?;
    let me = ProcessIdentity::current();
    let token = format!("{}-{}", me.pid, me.start_time);
    let record = RunRecord {
        runner: me,
        token: token.clone(),
        groups: Vec::new(),
    };
    repo.registry.update(|doc| {
        let Some(entry) = doc.entries.get_mut(id) else {
            anyhow::bail!("registry entry {id} disappeared (another isolane removed it?)");
        };
        if let Some(other) = &entry.run
            && other.runner != me
            && other.runner.is_alive()
        {
            anyhow::bail!(
                "worktree {id} is in use by isolane run (pid {})",
                other.runner.pid
            );
        }
        entry.run = Some(record);
        Ok(())
    })?;
    Ok(token)
}

/// Records the process group led by `leader` (just spawned) as `name`'s.
fn add_group(repo: &Repo, id: &str, name: &str, leader: u32) -> Result<()> {
    let Some(leader) = ProcessIdentity::of_pid(leader) else {
        // Already gone: nothing of it to stop later but what carries the
        // token, which is found without the record.
        return Ok(());
    };
    let me = ProcessIdentity::current();
    repo.registry.update(|doc| {
        if let Some(run) = doc
            .entries
            .get_mut(id)
            .and_then(|entry| entry.run.as_mut())
            .filter(|run| run.runner == me)
        {
            // Groups that are gone need no record (a comparison starts
            // services every round).
            run.groups.retain(|group| group.leader.is_alive());
            run.groups.push(RunGroup {
                name: name.to_owned(),
                leader,
            });
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// A recorder of the process groups a run starts, for
/// [`services::start_all`](crate::services::start_all) and
/// [`services::run_foreground`](crate::services::run_foreground): a group
/// that cannot be recorded is still found by the token.
pub(crate) fn recorder(repo: &Repo, id: &str) -> impl FnMut(&str, u32) {
    move |name: &str, leader: u32| {
        if let Err(error) = add_group(repo, id, name, leader) {
            tracing::warn!(id, name, leader, "cannot record a process group: {error:#}");
        }
    }
}

/// Ends the run of this process in worktree `id`: stops what it started
/// that is still running outside its groups, and removes its record.
pub(crate) fn finish(repo: &Repo, id: &str, token: &str) {
    let strays = stop_strays(token);
    if strays > 0 {
        progress(format_args!(
            "stopped {strays} process(es) this run started that had left their process group"
        ));
    }
    if let Err(error) = end(repo, id) {
        progress(format_args!(
            "cannot clear the run record of {id}: {error:#}"
        ));
    }
}

/// Removes this process's run record from worktree `id`.
fn end(repo: &Repo, id: &str) -> Result<()> {
    let me = ProcessIdentity::current();
    repo.registry.update(|doc| {
        if let Some(entry) = doc.entries.get_mut(id)
            && entry.run.as_ref().is_some_and(|run| run.runner == me)
        {
            entry.run = None;
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// Stops the processes of this run that are still running after its groups
/// were stopped: those that left their group (a daemon's `setsid`) but
/// still carry the run's token. Returns how many there were.
fn stop_strays(token: &str) -> usize {
    if token.is_empty() {
        return 0;
    }
    let strays: Vec<Target> = procs::carrying(TOKEN_VAR, token)
        .into_iter()
        .map(Target::Process)
        .collect();
    if !strays.is_empty() {
        tracing::info!(?strays, "stopping processes that left the run's groups");
        procs::terminate(&strays, GRACE);
    }
    strays.len()
}

/// What was stopped for one killed run.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) id: String,
    /// `name (pid N)` of each recorded group that was still running.
    pub(crate) groups: Vec<String>,
    /// How many processes were stopped in all (groups count their members
    /// found by the token).
    pub(crate) processes: usize,
}

/// Stops what killed runs left running in this repository, clears their
/// records, and says so on stderr. Cheap when there is nothing to do: one
/// registry read.
pub(crate) fn stop_leftovers(repo: &Repo) -> Result<Vec<Stopped>> {
    let doc = repo.registry.read()?;
    let dead: Vec<(String, RunRecord)> = doc
        .entries
        .values()
        .filter_map(|entry| Some((entry.id.clone(), entry.run.clone()?)))
        .filter(|(_, run)| !run.runner.is_alive())
        .collect();
    let mut report = Vec::new();
    for (id, run) in dead {
        let stopped = stop(&id, &run);
        // Only the record that was judged: a new run may have begun since.
        repo.registry.update(|doc| {
            if let Some(entry) = doc.entries.get_mut(&id)
                && entry.run.as_ref() == Some(&run)
            {
                entry.run = None;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        if stopped.processes > 0 {
            let what = if stopped.groups.is_empty() {
                String::new()
            } else {
                format!(": {}", stopped.groups.join(", "))
            };
            progress(format_args!(
                "stopped {} process(es) left running by a killed `isolane run` in {id}{what}",
                stopped.processes
            ));
        }
        report.push(stopped);
    }
    Ok(report)
}

/// Stops the groups and token carriers of a dead run.
fn stop(id: &str, run: &RunRecord) -> Stopped {
    let mut targets = Vec::new();
    let mut groups = Vec::new();
    for group in &run.groups {
        if group.leader.is_alive()
            && let Ok(pgid) = i32::try_from(group.leader.pid)
        {
            targets.push(Target::Group(pgid));
            groups.push(format!("{} (pid {})", group.name, group.leader.pid));
        }
    }
    let carriers = procs::carrying(TOKEN_VAR, &run.token);
    let processes = carriers.len().max(groups.len());
    targets.extend(carriers.into_iter().map(Target::Process));
    if !targets.is_empty() {
        tracing::info!(id, ?targets, "stopping what a killed run left running");
        let stubborn = procs::terminate(&targets, GRACE);
        if !stubborn.is_empty() {
            tracing::warn!(id, ?stubborn, "leftover processes ignored TERM; sent KILL");
        }
    }
    Stopped {
        id: id.to_owned(),
        groups,
        processes,
    }
}
