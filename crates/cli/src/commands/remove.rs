//! `isolane remove`, and the teardown that remove, gc, doctor and a failed
//! create share: every step idempotent, the intent recorded first.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::create::record;
use super::{print_json, progress};
use crate::cli::RemoveArgs;
use crate::context::Repo;
use crate::envfile;
use crate::state::{Entry, Phase};

/// How far a teardown may go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Teardown {
    /// Remove even with uncommitted or unmerged work, or a live lock.
    pub(crate) force: bool,
    /// Keep the branch even if isolane created it.
    pub(crate) keep_branch: bool,
    /// Run the `pre_remove` hooks first.
    pub(crate) hooks: bool,
}

impl Teardown {
    /// Undoing an unfinished create: the user never had the worktree, so
    /// nothing in it is theirs.
    pub(crate) fn rollback() -> Self {
        Self {
            force: true,
            keep_branch: false,
            hooks: false,
        }
    }

    /// Finishing what a crashed process left: a create is rolled back, a
    /// remove is carried on without force (work found meanwhile is kept).
    pub(crate) fn finishing(entry: &Entry) -> Self {
        match entry.phase {
            Phase::Creating => Self::rollback(),
            Phase::Ready | Phase::Removing => Self {
                force: false,
                keep_branch: false,
                hooks: false,
            },
        }
    }
}

/// What a teardown did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct TornDown {
    pub(crate) id: String,
    pub(crate) worktree_removed: bool,
    pub(crate) branch_deleted: Option<String>,
    pub(crate) database_dropped: Option<String>,
    pub(crate) ports_released: Vec<u16>,
}

pub(super) fn run(args: &RemoveArgs) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    crate::runs::stop_leftovers(&repo)?;
    let entry = repo.entry(&args.id)?;
    let done = teardown(
        &repo,
        &entry,
        Teardown {
            force: args.force,
            keep_branch: args.keep_branch,
            hooks: true,
        },
    )?;
    if args.json {
        print_json(&done)?;
    } else {
        println!("removed {}", done.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes the worktree, then its database, then its ports, then the
/// registry entry. The worktree goes first because it is the step that may
/// refuse (work at stake): nothing else is touched until it is gone.
pub(crate) fn teardown(repo: &Repo, entry: &Entry, how: Teardown) -> Result<TornDown> {
    let id = entry.id.as_str();
    repo.check_path(entry)?;
    let previous = entry.phase;
    record(repo, id, |e| {
        e.phase = Phase::Removing;
        e.actor = registry::ProcessIdentity::current();
    })?;
    registry::fault_point("remove.after_intent");
    let mut done = TornDown {
        id: id.to_owned(),
        ..TornDown::default()
    };

    // A path replaced by a symlink is not followed: no hook runs in what it
    // points at (worktree-core then refuses to remove it).
    if how.hooks && previous == Phase::Ready && entry.has_real_dir() && !entry.path_preexisting {
        // The hooks run only once removal is certain: a worktree kept for
        // its work must not have been half torn down by them.
        if !how.force {
            refuse_if_work_at_stake(repo, entry, previous)?;
        }
        let env = envfile::environment(entry, None);
        for hook in &repo.config.hooks.pre_remove {
            super::create::run_hook(hook, &entry.path, &env)?;
        }
    }

    if entry.path_preexisting {
        // Something stood at the path before this entry: not ours to delete.
        progress(format_args!(
            "leaving {} alone: it existed before isolane",
            entry.path.display()
        ));
    } else {
        let options = worktree_core::RemoveOptions {
            force: how.force,
            delete_branch: entry.branch_created && !how.keep_branch,
        };
        let existed = std::fs::symlink_metadata(&entry.path).is_ok();
        match repo.worktrees.remove(id, options) {
            Ok(removed) => {
                progress(format_args!("removed worktree {}", removed.path.display()));
                done.worktree_removed = true;
                done.branch_deleted = removed.branch_deleted;
            }
            Err(worktree_core::Error::NotFound { .. }) => {}
            Err(failed) if existed && std::fs::symlink_metadata(&entry.path).is_err() => {
                // The directory is gone all the same (the failure came after
                // it left): nothing is kept, so the entry stays `removing`
                // for the next remove, gc or doctor --fix to finish.
                return Err(anyhow::Error::from(failed).context(format!(
                    "removing worktree {id} failed after its directory was deleted; \
                     `isolane remove {id}` or `isolane gc` finishes the removal"
                )));
            }
            Err(escapes @ worktree_core::Error::Escapes { .. }) => {
                // --force does not help here: what the link points at is
                // not the worktree's to delete.
                restore_phase(repo, id, previous)?;
                return Err(anyhow::Error::from(escapes).context(format!(
                    "worktree {id} was kept, with its database and ports: its path is a \
                     symlink; delete the link, then `isolane remove {id}` finishes"
                )));
            }
            Err(refused) => {
                restore_phase(repo, id, previous)?;
                return Err(anyhow::Error::from(refused).context(kept_message(id)));
            }
        }
    }
    registry::fault_point("remove.after_worktree");

    if let Some(database) = &entry.database {
        let server = repo.server()?;
        let owner = repo.owner(id);
        let info = server
            .list_databases()?
            .into_iter()
            .find(|d| &d.name == database);
        match info {
            None => {}
            Some(info)
                if info.owner.as_ref().and_then(|o| o.label.as_deref()) == Some(owner.as_str()) =>
            {
                server
                    .drop_database(database)
                    .with_context(|| format!("cannot drop database {database} of {id}"))?;
                progress(format_args!("dropped database {database}"));
                done.database_dropped = Some(database.clone());
            }
            Some(_) => progress(format_args!(
                "leaving database {database} alone: its owner record does not name {id} of this repository"
            )),
        }
    }
    registry::fault_point("remove.after_database");

    done.ports_released = repo.ports()?.release_owner(&repo.owner(id))?;
    registry::fault_point("remove.after_ports");

    remove_logs(repo, id);
    repo.registry.update(|doc| {
        doc.entries.remove(id);
        Ok::<_, registry::Error>(())
    })?;
    Ok(done)
}

/// Deletes the services' logs of worktree `id` (best effort: they are ours,
/// under the git dir, and nothing depends on them).
fn remove_logs(repo: &Repo, id: &str) {
    let dir = repo.log_dir(id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot delete service logs"),
    }
}

/// Whether `entry`, read from a registry snapshot, is still what the
/// registry holds: same phase, recorded by the same process.
pub(crate) fn unchanged(repo: &Repo, entry: &Entry) -> Result<bool> {
    Ok(repo
        .registry
        .read()?
        .entries
        .get(&entry.id)
        .is_some_and(|now| now.phase == entry.phase && now.actor == entry.actor))
}

/// Whether `entry`, read from a registry snapshot, was left unfinished by a
/// process that is gone. Its actor being gone is not enough: the actor may
/// have finished (and exited) after the snapshot was read, and tearing its
/// fresh worktree down as "interrupted" would destroy it. A gone process
/// writes no more, so if the registry still shows the phase and actor it
/// left after the actor was found gone, it left them unfinished.
pub(crate) fn abandoned(repo: &Repo, entry: &Entry) -> Result<bool> {
    Ok(entry.is_abandoned() && unchanged(repo, entry)?)
}

fn kept_message(id: &str) -> String {
    format!("worktree {id} was kept, with its database and ports (use --force to remove it anyway)")
}

/// Puts a refused entry back as it was: nothing was removed.
fn restore_phase(repo: &Repo, id: &str, previous: Phase) -> Result<()> {
    if previous == Phase::Ready {
        record(repo, id, |e| e.phase = Phase::Ready)?;
    }
    Ok(())
}

/// Refuses, before anything is run or removed, a worktree with
/// uncommitted, untracked or unmerged work or a live lock.
fn refuse_if_work_at_stake(repo: &Repo, entry: &Entry, previous: Phase) -> Result<()> {
    let Some(info) = repo
        .worktrees
        .list()?
        .into_iter()
        .find(|i| i.managed && i.id == entry.id)
    else {
        return Ok(());
    };
    let at_stake = if let Some(lock) = info.lock.as_ref().filter(|l| l.owner_alive) {
        Some(format!("it is in use ({})", lock.reason))
    } else if !info.dirty_files.is_empty() {
        Some(format!(
            "it has uncommitted changes: {}",
            info.dirty_files.join(", ")
        ))
    } else if !info.unmerged_commits.is_empty() {
        Some(format!(
            "{} commit(s) exist nowhere else: {}",
            info.unmerged_commits.len(),
            info.unmerged_commits.join(", ")
        ))
    } else {
        None
    };
    match at_stake {
        Some(reason) => {
            restore_phase(repo, &entry.id, previous)?;
            Err(anyhow::anyhow!(
                "worktree {} at {}: {reason}",
                entry.id,
                entry.path.display()
            )
            .context(kept_message(&entry.id)))
        }
        None => Ok(()),
    }
}
