//! The steps that bring a worktree entry into being and take it away
//! again, shared by create, remove, gc, doctor and compare (commands do not
//! call each other): [`provision`] (worktree, ports, database, files, hooks —
//! all or nothing) and [`teardown`] (every step idempotent, the intent
//! recorded first).

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::commands::{InputError, progress};
use crate::context::Repo;
use crate::database_gc::{of_gone_repository, take_back};
use crate::envfile;
use crate::state::{Entry, Phase, now};

/// What [`provision`] made.
#[derive(Debug)]
pub(crate) struct Provisioned {
    /// The registry entry, `ready`.
    pub(crate) entry: Entry,
    /// The database's URL (with its password), when one was created.
    pub(crate) database_url: Option<String>,
    /// Whether the worktree came from the warm pool.
    pub(crate) from_pool: bool,
}

/// Creates worktree `<purpose>-<identifier>` of `request`, leases
/// `port_names`, creates its database from the template when
/// `want_database`, writes its files and runs the `post_create` hooks.
/// All or nothing: the intent is recorded first, and a failure rolls back
/// whatever was made (or leaves it for `gc` to finish).
pub(crate) fn provision(
    repo: &Repo,
    request: &worktree_core::CreateRequest,
    port_names: &[String],
    want_database: bool,
) -> Result<Provisioned> {
    let id = format!("{}-{}", request.purpose, request.identifier);
    // Opened before the intent: a state dir that cannot serve (another
    // user's, say) is an error now, not an interrupted entry.
    let ports = repo.ports()?;
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
                purpose: request.purpose.clone(),
                identifier: request.identifier.clone(),
                branch: request.branch.clone(),
                branch_created: false,
                path_preexisting: path.exists(),
                path: path.clone(),
                created: now(),
                ports: BTreeMap::new(),
                database: None,
                phase: Phase::Creating,
                actor: registry::ProcessIdentity::current(),
                run: None,
            },
        );
        Ok(())
    })?;
    registry::fault_point("create.after_intent");

    match build(repo, &ports, request, &id, port_names, want_database) {
        Ok(created) => Ok(Provisioned {
            entry: repo.entry(&id)?,
            database_url: created.database_url,
            from_pool: created.from_pool,
        }),
        Err(error) => {
            progress(format_args!("create failed; rolling back {id}"));
            match repo.entry(&id) {
                Ok(entry) => {
                    if let Err(cleanup) = teardown(repo, &entry, Teardown::rollback()) {
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
    ports: &port_alloc::PortAllocator,
    request: &worktree_core::CreateRequest,
    id: &str,
    port_names: &[String],
    want_database: bool,
) -> Result<Created> {
    progress(format_args!(
        "creating worktree {}",
        repo.worktrees.path_of(id).display()
    ));
    // Opening the database server (which may start it, and runs the
    // automatic cleanup) does not depend on the worktree: it happens
    // meanwhile, on a thread of its own. The database itself waits for the
    // checkout, since its template is built from the worktree's own files.
    let (worktree, server) = std::thread::scope(|scope| {
        let server = scope.spawn(|| want_database.then(|| repo.server()).transpose());
        let worktree = (|| -> Result<worktree_core::Worktree> {
            let worktree = repo.worktrees.create(request)?;
            record(repo, id, |entry| {
                entry.path = worktree.path.clone();
                entry.branch = worktree.branch.clone();
                entry.branch_created = worktree.branch_created;
            })?;
            copy_ignored(repo, id)?;
            Ok(worktree)
        })();
        let server = server
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("opening the database server panicked")));
        (worktree, server)
    });
    let worktree = worktree?;
    let server = server?;
    registry::fault_point("create.after_worktree");

    let names: Vec<&str> = port_names.iter().map(String::as_str).collect();
    // Held while the repository exists: one deleted without `isolane
    // remove` (a CI workspace) gives its ports back at the next reclaim.
    let holder = port_alloc::Holder::Path(repo.common_dir.clone());
    let lease = ports.lease(&repo.owner(id), &names, holder)?;
    record(repo, id, |entry| entry.ports = lease.ports.clone())?;
    registry::fault_point("create.after_ports");

    let database_url = if let Some(server) = server {
        // A command template is built from this worktree's own files (its
        // branch's migrations); a migrations directory is read from the
        // main worktree, as before.
        let template = crate::template::for_worktree(repo, &server, &worktree.path, false)?;
        let name = crate::worktree_db::name(&server, id)?;
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
                take_back(&server, ports, &gone)?;
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
    write_files(repo, &entry, database_url.as_deref())?;
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

/// Gives the new worktree `id` its copy of the main worktree's ignored
/// entries named by `[worktrees] copy` and `.worktreeinclude`.
fn copy_ignored(repo: &Repo, id: &str) -> Result<()> {
    let copied = repo
        .worktrees
        .copy_ignored(id, &repo.config.worktrees.copy)?;
    if !copied.entries.is_empty() {
        let stats = copied.stats;
        progress(format_args!(
            "copied {} ignored entr{} of the main worktree ({} files, {:.1} MiB, {} reflinked)",
            copied.entries.len(),
            if copied.entries.len() == 1 {
                "y"
            } else {
                "ies"
            },
            stats.files,
            stats.bytes as f64 / f64::from(1 << 20),
            stats.reflinked
        ));
    }
    Ok(())
}

/// Worktree `id` opened for use by `run` or `compare`: it must be ready and
/// a real directory where the registry says. Returns its entry and its
/// environment, with the files test code reads refreshed to match.
pub(crate) fn open_ready(repo: &Repo, id: &str) -> Result<(Entry, BTreeMap<String, String>)> {
    let entry = repo.entry(id)?;
    if entry.phase != Phase::Ready {
        return Err(InputError(format!(
            "worktree {} is {}, not ready",
            entry.id,
            entry.phase.as_str()
        ))
        .into());
    }
    repo.check_path(&entry)?;
    // Not through a symlink: the files written below would land in
    // whatever it points at.
    if !entry.has_real_dir() {
        return Err(InputError(format!(
            "worktree {} has no directory at {} (isolane doctor --fix)",
            entry.id,
            entry.path.display()
        ))
        .into());
    }
    let mut env = repo.environment(&entry)?;
    // The database URL can change (a restarted server): refresh the files
    // test code reads before it runs.
    write_files(repo, &entry, env.get("DATABASE_URL").map(String::as_str))?;
    // After the files: PATH and VIRTUAL_ENV are this host's, not the tests'.
    envfile::activate_venv(&mut env, repo, &entry.path);
    Ok((entry, env))
}

/// Writes the files test code reads (`.env.test`, `.worktree-metadata.json`)
/// into `entry`'s worktree.
fn write_files(repo: &Repo, entry: &Entry, database_url: Option<&str>) -> Result<()> {
    let config = &repo.config;
    envfile::write_files(
        &entry.path,
        &config.env_file,
        &config.metadata_file,
        entry,
        database_url,
    )
    .with_context(|| {
        format!(
            "cannot write {} and {} in {}",
            config.env_file,
            config.metadata_file,
            entry.path.display()
        )
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
    /// Databases a test runner derived from it (`test_<name>...`), dropped.
    pub(crate) derived_dropped: Vec<String>,
    pub(crate) ports_released: Vec<u16>,
    /// Where the worktree waits in the warm pool, when it went there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pooled: Option<std::path::PathBuf>,
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
            run_hook(hook, &entry.path, &env)?;
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
        // A worktree that was ready goes back to the warm pool when there is
        // one (a create rolled back, or a remove being finished, does not).
        let pool = repo.config.worktrees.pool > 0 && previous == Phase::Ready;
        match retire_worktree(repo, id, options, pool) {
            Ok((pooled, branch_deleted)) => {
                done.worktree_removed = true;
                done.branch_deleted = branch_deleted;
                done.pooled = pooled;
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
            // The worktree's exact name without any record: the user's own
            // dropdb + createdb replaced it.
            Some(info)
                if info.owner.is_none()
                    && repo.is_worktree_database_name(&server, id, database) =>
            {
                crate::worktree_db::drop_unrecorded(&server, database)?;
                progress(format_args!(
                    "dropped database {database} (replaced by hand)"
                ));
                done.database_dropped = Some(database.clone());
            }
            Some(_) => progress(format_args!(
                "leaving database {database} alone: its owner record does not name {id} of this repository"
            )),
        }
        // Only what derives from a database that was the worktree's (gone
        // or dropped just now), never from someone else's of that name.
        let foreign = info_kept_as_foreign(&done, database, &server)?;
        if !foreign {
            done.derived_dropped = crate::worktree_db::drop_derived(&server, database)?;
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

/// Whether `database` is still there after the teardown's drop step
/// (which then left it alone as someone else's).
fn info_kept_as_foreign(
    done: &TornDown,
    database: &str,
    server: &pg_isolate::Server,
) -> Result<bool> {
    Ok(done.database_dropped.is_none()
        && server.list_databases()?.iter().any(|d| d.name == database))
}

/// Removes worktree `id`, or returns it to the warm pool when `pool` (and
/// it can be pooled: no work at stake, the pool not full), deleting the
/// files of its last user first (`.env.test`, the metadata file). Returns
/// the pool slot when pooled, and the branch deleted.
fn retire_worktree(
    repo: &Repo,
    id: &str,
    options: worktree_core::RemoveOptions,
    pool: bool,
) -> std::result::Result<(Option<std::path::PathBuf>, Option<String>), worktree_core::Error> {
    if !pool {
        let removed = repo.worktrees.remove(id, options)?;
        progress(format_args!("removed worktree {}", removed.path.display()));
        return Ok((None, removed.branch_deleted));
    }
    let release = worktree_core::ReleaseOptions {
        remove: options,
        forget: vec![
            repo.config.env_file.clone(),
            repo.config.metadata_file.clone(),
        ],
    };
    let done = repo.worktrees.release_to_pool_with(id, &release)?;
    let pooled = match done.outcome {
        worktree_core::Released::Pooled(slot) => {
            progress(format_args!(
                "returned worktree {id} to the pool ({})",
                slot.display()
            ));
            Some(slot)
        }
        worktree_core::Released::Removed(removed) => {
            progress(format_args!("removed worktree {}", removed.path.display()));
            None
        }
        _ => None,
    };
    Ok((pooled, done.branch_deleted))
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
