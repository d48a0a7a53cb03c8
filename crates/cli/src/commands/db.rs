//! `isolane db ...`: reset, migrate, check-rollback, list, clean.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{InputError, print_json, progress};
use crate::cli::{CheckRollbackArgs, DbCommand, MigrateArgs};
use crate::config::Config;
use crate::context::{Cleanup, Repo, load_migrations, open_server};
use crate::database_gc::server_gc;

pub(super) fn run(command: DbCommand) -> Result<ExitCode> {
    match command {
        DbCommand::Reset { id } => reset(&id),
        DbCommand::Template { id, rebuild, json } => template(id.as_deref(), rebuild, json),
        DbCommand::Lease {
            id,
            pid,
            json,
            refill,
        } => lease(&id, pid, json, refill),
        DbCommand::Release { name } => release(&name),
        DbCommand::Migrate(args) => migrate(&args),
        DbCommand::CheckRollback(args) => check_rollback(&args),
        DbCommand::List { orphans, json } => list(orphans, json),
        DbCommand::Clean { prefix, dry_run } => clean(prefix.as_deref(), dry_run),
        DbCommand::Gc { dry_run, json } => gc(dry_run, json),
    }
}

fn gc(dry_run: bool, json: bool) -> Result<ExitCode> {
    let repo = repo_if_any();
    let config = repo.as_ref().map(|r| r.config.clone()).unwrap_or_default();
    let server = open_server(&config, None, Cleanup::unless(dry_run))?;
    let rows = server_gc(&server, dry_run)?;
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would drop" } else { "dropped" };
    for row in &rows.dropped {
        println!("{verb} {} ({})", row.name, row.reason);
    }
    for row in &rows.kept {
        println!("kept {} ({})", row.name, row.reason);
    }
    println!(
        "db gc: {} {verb}, {} kept",
        rows.dropped.len(),
        rows.kept.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn reset(id: &str) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    let entry = repo.entry(id)?;
    let database = entry.database.as_deref().ok_or_else(|| {
        InputError(format!(
            "worktree {id} has no database (created with --no-db?)"
        ))
    })?;
    let server = repo.server()?;
    let template = crate::template::for_worktree(&repo, &server, &entry.path, false)?;
    let template_name = template.as_ref().map(pg_isolate::Template::name);
    let replaced_by_hand = server
        .list_databases()?
        .into_iter()
        .any(|d| d.name == database && d.owner.is_none())
        && repo.is_worktree_database_name(&server, id, database);
    if replaced_by_hand {
        // The user's own dropdb + createdb: still the worktree's database
        // (its exact name, the registry's entry), replaced by a fresh one
        // that carries isolane's record again.
        progress(format_args!(
            "{database} carries no owner record (replaced by hand); replacing it"
        ));
        crate::worktree_db::drop_unrecorded(&server, database)?;
        let owner = repo.owner(id);
        server.create_database(
            database,
            pg_isolate::CreateOptions {
                template: template_name,
                label: Some(&owner),
                owner_path: Some(&repo.common_dir),
                ..pg_isolate::CreateOptions::default()
            },
        )?;
    } else {
        server.reset_database(database, template_name)?;
    }
    if !repo.config.hooks.post_reset.is_empty() {
        let mut env = repo.environment(&entry)?;
        crate::envfile::activate_venv(&mut env, &repo, &entry.path);
        for hook in &repo.config.hooks.post_reset {
            crate::lifecycle::run_hook(hook, &entry.path, &env)?;
        }
    }
    println!("reset {database}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct TemplateReport {
    /// `command` or `migrations`.
    source: &'static str,
    command: Option<String>,
    key: String,
    database: String,
    /// The input files matched (relative to the worktree), or the
    /// migrations directory.
    inputs: Vec<std::path::PathBuf>,
    /// Whether this call built it.
    built_now: bool,
    /// The last recorded build time, in milliseconds.
    build_ms: Option<u64>,
    /// When that build finished (seconds since the epoch).
    built_at: Option<u64>,
}

fn template(id: Option<&str>, rebuild: bool, json: bool) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    let worktree = match id {
        Some(id) => repo.entry(id)?.path,
        None => repo.root.clone(),
    };
    let server = repo.server()?;
    let report = if let Some(command) = &repo.config.database.template {
        let inputs = crate::template::inputs(command, &worktree)?;
        let built = crate::template::for_worktree(&repo, &server, &worktree, rebuild)?
            .context("a configured template command gives a template")?;
        let record = crate::template::build_record(&repo, built.key());
        TemplateReport {
            source: "command",
            command: Some(command.command.clone()),
            key: built.key().to_owned(),
            database: built.name().to_owned(),
            inputs: inputs.files,
            built_now: built.build_time().is_some(),
            build_ms: record.as_ref().map(|r| r.build_ms),
            built_at: record.map(|r| r.built_at),
        }
    } else if repo.config.database.migrations.is_some() {
        if rebuild {
            return Err(InputError(
                "--rebuild works for a command-built template ([database.template]); \
                 a migrations directory's template is rebuilt when its content changes"
                    .to_owned(),
            )
            .into());
        }
        let built = crate::template::for_worktree(&repo, &server, &worktree, false)?
            .context("configured migrations give a template")?;
        TemplateReport {
            source: "migrations",
            command: None,
            key: built.key().to_owned(),
            database: built.name().to_owned(),
            inputs: repo.config.database.migrations.iter().cloned().collect(),
            built_now: built.build_time().is_some(),
            build_ms: built
                .build_time()
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            built_at: None,
        }
    } else {
        return Err(InputError(
            "no template configured: set [database.template] (a command) or \
             database.migrations in isolane.toml"
                .to_owned(),
        )
        .into());
    };
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("template  {}", report.database);
    println!("key       {}", report.key);
    if let Some(command) = &report.command {
        println!("command   {command}");
    }
    println!("inputs    {} file(s)", report.inputs.len());
    for input in &report.inputs {
        println!("  {}", input.display());
    }
    match report.build_ms {
        Some(ms) => println!(
            "built     in {:.1} s{}",
            ms as f64 / 1000.0,
            if report.built_now { " (now)" } else { "" }
        ),
        None => println!("built     (by another process or before; no build time recorded)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The key material of the template of a worktree without one configured:
/// an empty database.
const EMPTY_TEMPLATE: &[u8] = b"isolane empty database";

fn lease(id: &str, pid: Option<u32>, json: bool, refill: bool) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    let entry = repo.entry(id)?;
    let server = repo.server()?;
    let template = match crate::template::for_worktree(&repo, &server, &entry.path, false)? {
        Some(template) => template,
        None => server.template(EMPTY_TEMPLATE, |_| Ok(()))?,
    };
    let size = repo.config.database.lease_pool;
    if refill {
        let pool = template.pool(pg_isolate::PoolOptions {
            size,
            ..pg_isolate::PoolOptions::default()
        })?;
        pool.wait_filled(std::time::Duration::from_secs(120))?;
        return Ok(ExitCode::SUCCESS);
    }
    let holder = match pid {
        Some(pid) => pid,
        None => nix::unistd::getppid().as_raw().try_into()?,
    };
    let holder = registry::ProcessIdentity::of_pid(holder)
        .ok_or_else(|| InputError(format!("--pid {holder}: no such process")))?;
    // Claims a ready clone if there is one (no filler of its own: this
    // process is about to exit), else clones the template on the spot.
    let pool = template.pool(pg_isolate::PoolOptions {
        size: 0,
        ..pg_isolate::PoolOptions::default()
    })?;
    let claimed = pool.test_database();
    drop(pool);
    let name = claimed?.hand_over(holder)?;
    let url = server.url(&name);
    if size > 0 {
        spawn_refill(id);
    }
    if json {
        print_json(&serde_json::json!({
            "name": name,
            "url": url,
            "template": template.name(),
            "holder": holder.pid,
        }))?;
    } else {
        println!("{url}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Tops the warm pool up in a detached process of its own, so the next
/// lease finds a ready clone and this one returns at once. Best effort: a
/// refill that fails or is killed leaves at most a half-made clone, which
/// pg-isolate's cleanup drops.
fn spawn_refill(id: &str) {
    use std::os::unix::process::CommandExt as _;
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(["db", "lease", id, "--refill"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the lease pool refill");
    }
}

fn release(name: &str) -> Result<ExitCode> {
    let repo = repo_if_any();
    let config = repo.as_ref().map(|r| r.config.clone()).unwrap_or_default();
    let server = open_server(&config, None, Cleanup::Automatic)?;
    let info = server
        .list_databases()?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| InputError(format!("no database {name:?} on the server")))?;
    if info.owner.as_ref().map(|o| o.kind) != Some(pg_isolate::DatabaseKind::Test) {
        return Err(InputError(format!(
            "{name} is not a database `isolane db lease` handed out; refusing to drop it"
        ))
        .into());
    }
    server.drop_database(name)?;
    println!("released {name}");
    Ok(ExitCode::SUCCESS)
}

/// The repository, when the current directory is inside one.
fn repo_if_any() -> Option<Repo> {
    Repo::discover().ok()
}

/// The repository (when run inside one), its configuration (else the
/// defaults) and the migrations of `--dir`, else of `database.migrations`.
fn context_and_migrations(
    dir: Option<&Path>,
) -> Result<(Option<Repo>, Config, pg_isolate::Migrations)> {
    let repo = repo_if_any();
    let config = repo.as_ref().map(|r| r.config.clone()).unwrap_or_default();
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => repo
            .as_ref()
            .and_then(|r| r.config.database.migrations.as_ref().map(|m| r.root.join(m)))
            .ok_or_else(|| {
                InputError("no migrations directory: pass --dir or set database.migrations in isolane.toml".to_owned())
            })?,
    };
    let migrations = load_migrations(&dir, &config)?;
    Ok((repo, config, migrations))
}

fn migrate(args: &MigrateArgs) -> Result<ExitCode> {
    let (repo, _, migrations) = context_and_migrations(args.dir.as_deref())?;
    let target = match args.to.as_str() {
        "latest" => pg_isolate::Target::Latest,
        "none" => pg_isolate::Target::None,
        version => {
            if migrations.find(version).is_none() {
                return Err(InputError(format!(
                    "--to {version:?}: no such migration in {} (or use latest / none)",
                    migrations.dir().display()
                ))
                .into());
            }
            pg_isolate::Target::Version(version.to_owned())
        }
    };
    let mut client = match (&args.id, &args.url) {
        (Some(id), _) => {
            let repo = repo
                .as_ref()
                .context("a worktree id needs a git repository")?;
            let entry = repo.entry(id)?;
            let database = entry
                .database
                .as_deref()
                .ok_or_else(|| InputError(format!("worktree {id} has no database")))?;
            repo.server()?.client(database)?
        }
        (None, Some(url)) => postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
            anyhow::anyhow!("cannot connect to {}: {e}", pg_isolate::redact_url(url))
        })?,
        (None, None) => unreachable!("clap requires an id or --url"),
    };
    let report = migrations.migrate(&mut client, target, |p| {
        if let pg_isolate::Phase::Finished { elapsed } = p.phase {
            progress(format_args!(
                "[{}/{}] {:?} {} {} ({} ms)",
                p.step,
                p.steps,
                p.direction,
                p.migration.version(),
                p.migration.name(),
                elapsed.as_millis()
            ));
        }
    })?;
    println!(
        "applied {}, reverted {}; now at {}",
        report.applied.len(),
        report.reverted.len(),
        report.current.as_deref().unwrap_or("no migration")
    );
    Ok(ExitCode::SUCCESS)
}

fn check_rollback(args: &CheckRollbackArgs) -> Result<ExitCode> {
    let (_, config, migrations) = context_and_migrations(args.dir.as_deref())?;
    for (flag, version) in [("--from", &args.from), ("--to", &args.to)] {
        if let Some(version) = version
            && migrations.find(version).is_none()
        {
            return Err(InputError(format!(
                "{flag} {version:?}: no such migration in {}",
                migrations.dir().display()
            ))
            .into());
        }
    }
    // A migration without a down script cannot be checked: refuse rather
    // than report success over a range that was silently skipped.
    let list = migrations.list();
    let position = |version: &Option<String>, default: usize| {
        version
            .as_deref()
            .and_then(|v| migrations.find(v))
            .and_then(|found| list.iter().position(|m| std::ptr::eq(m, found)))
            .unwrap_or(default)
    };
    let (first, last) = (
        position(&args.from, 0),
        position(&args.to, list.len().saturating_sub(1)),
    );
    if let Some(migration) = list
        .iter()
        .skip(first)
        .take(last.saturating_add(1).saturating_sub(first))
        .find(|m| !m.is_reversible())
    {
        return Err(InputError(format!(
            "migration {} has no down script, so its rollback cannot be checked \
             ({}); add one, or check a range without it (--from / --to)",
            migration.version(),
            migration.up_path().display()
        ))
        .into());
    }
    progress(format_args!(
        "checking the rollback of {} migrations in {}",
        migrations.len(),
        migrations.dir().display()
    ));
    let server = open_server(&config, args.url.as_deref(), Cleanup::Automatic)?;
    let options = pg_isolate::RollbackOptions {
        from: args.from.clone(),
        to: args.to.clone(),
        strict: args.strict,
        ..pg_isolate::RollbackOptions::default()
    };
    let report = pg_isolate::verify_rollbacks(&server, &migrations, &options)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        for entry in &report.migrations {
            let status = serde_json::to_value(entry.status)?;
            println!(
                "{:<20} {:<40} {}",
                entry.version,
                entry.name,
                status.as_str().unwrap_or("?")
            );
            if let Some(error) = &entry.error {
                println!("    error: {}", serde_json::to_string(error)?);
            }
            for difference in &entry.differences {
                println!("    differs: {}", serde_json::to_string(difference)?);
            }
            for note in &entry.notes {
                println!("    note: {}", serde_json::to_string(note)?);
            }
        }
        println!("{}", report.summary_line());
    }
    Ok(if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Serialize)]
struct DatabaseRow {
    name: String,
    kind: String,
    label: Option<String>,
    /// The worktree it belongs to, for this repository's databases.
    worktree: Option<String>,
    created: u64,
    is_template: bool,
}

fn ours(
    repo: Option<&Repo>,
    config: &Config,
    cleanup: Cleanup,
) -> Result<(pg_isolate::Server, Vec<DatabaseRow>)> {
    let server = open_server(config, None, cleanup)?;
    let all = server.list_databases()?;
    let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    // What test runners derived from a worktree's database, and a worktree
    // database replaced by hand: no owner record, listed under the worktree.
    let mut extra = Vec::new();
    if let Some(repo) = repo {
        for entry in repo.registry.read()?.entries.into_values() {
            let Some(base) = entry.database else { continue };
            if all.iter().any(|d| {
                d.name == base
                    && d.owner.is_none()
                    && repo.is_worktree_database_name(&server, &entry.id, &base)
            }) {
                extra.push(DatabaseRow {
                    name: base.clone(),
                    kind: "replaced-by-hand".to_owned(),
                    label: None,
                    worktree: Some(entry.id.clone()),
                    created: 0,
                    is_template: false,
                });
            }
            for name in crate::worktree_db::derived(&base, &names) {
                extra.push(DatabaseRow {
                    name: name.to_owned(),
                    kind: "derived".to_owned(),
                    label: None,
                    worktree: Some(entry.id.clone()),
                    created: 0,
                    is_template: false,
                });
            }
        }
    }
    let mut rows: Vec<DatabaseRow> = all
        .into_iter()
        .filter_map(|db| {
            let worktree = repo
                .and_then(|r| r.worktree_of_database(&server, &db))
                .map(str::to_owned);
            let owner = db.owner?;
            Some(DatabaseRow {
                name: db.name,
                kind: format!("{:?}", owner.kind).to_lowercase(),
                label: owner.label,
                worktree,
                created: owner.created,
                is_template: db.is_template,
            })
        })
        .collect();
    rows.extend(extra);
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((server, rows))
}

fn list(orphans: bool, json: bool) -> Result<ExitCode> {
    let repo = repo_if_any();
    let config = repo.as_ref().map(|r| r.config.clone()).unwrap_or_default();
    let (_server, mut rows) = ours(repo.as_ref(), &config, Cleanup::Automatic)?;
    if orphans {
        let repo = repo.as_ref().context("--orphans needs a git repository")?;
        let known: BTreeSet<String> = repo.registry.read()?.entries.into_keys().collect();
        rows.retain(|row| row.worktree.as_ref().is_some_and(|id| !known.contains(id)));
    }
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    for row in &rows {
        println!(
            "{:<50} {:<9} {}",
            row.name,
            row.kind,
            row.worktree
                .as_deref()
                .or(row.label.as_deref())
                .unwrap_or("-")
        );
    }
    println!("{} database(s)", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// Drops this repository's databases (our owner record, the prefix) that no
/// registry entry refers to any more. Databases of live worktrees go with
/// `isolane remove`; per-test databases, templates and pool clones belong
/// to pg-isolate, whose own gc reclaims them.
fn clean(prefix: Option<&str>, dry_run: bool) -> Result<ExitCode> {
    if let Some(prefix) = prefix.filter(|p| !crate::config::looks_like_database_name(p)) {
        return Err(InputError(format!(
            "invalid --prefix {prefix:?}: database names isolane makes are 1-63 ASCII \
             letters, digits, '_' and '-'"
        ))
        .into());
    }
    let repo = Repo::discover()?;
    let prefix = prefix.unwrap_or(&repo.config.database.prefix);
    let (server, rows) = ours(Some(&repo), &repo.config, Cleanup::unless(dry_run))?;
    let in_use: BTreeSet<String> = repo
        .registry
        .read()?
        .entries
        .into_values()
        .filter_map(|e| e.database)
        .collect();
    let mut count = 0;
    for row in rows.iter().filter(|r| {
        r.worktree.is_some()
                && r.name.starts_with(prefix)
                && !in_use.contains(&r.name)
                // Not pg-isolate's to drop: `remove` takes them with the worktree.
                && r.kind != "derived"
                && r.kind != "replaced-by-hand"
    }) {
        if dry_run {
            println!("would drop {}", row.name);
        } else {
            server.drop_database(&row.name)?;
            println!("dropped {}", row.name);
        }
        count += 1;
    }
    println!(
        "{count} database(s) {}",
        if dry_run { "to drop" } else { "dropped" }
    );
    Ok(ExitCode::SUCCESS)
}
