//! Leak cleanup: dropping our databases whose owner is gone, expired test
//! databases and pool clones, orphaned pool clones and idle templates.
//! Nothing without our owner record or outside the server's prefix is
//! touched, and named databases are never collected.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::markers::Markers;
use crate::owner::{DatabaseKind, OwnerRecord, now};
use crate::template::{hold_lock, lock_of, ready_owner, template_name};
use crate::{DatabaseInfo, Error, Server, birth, names};

/// Optional settings of [`Server::gc`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Also drop test databases and pool clones older than this, whoever
    /// owns them. `None` (the default): test databases are dropped only
    /// when their owner process is gone. Named databases are never dropped
    /// by age (they are long-lived by design, for example one per worktree
    /// created by another tool; their owner drops them).
    pub max_age: Option<Duration>,
    /// Drop templates (and their pool clones) not asked for in this long.
    /// Default: seven days.
    pub template_max_idle: Option<Duration>,
    /// Keep the database of a failed test
    /// ([`crate::ServerOptions::keep_failed`]) this long after it was kept,
    /// for inspection, whether its owner runs or not. Default: one day.
    /// `None`: until it is dropped by hand (or by `max_age`).
    pub kept_failed_max_age: Option<Duration>,
    /// Report what would be dropped without dropping anything.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            max_age: None,
            template_max_idle: Some(Duration::from_secs(7 * 24 * 3600)),
            kept_failed_max_age: Some(Duration::from_secs(24 * 3600)),
            dry_run: false,
        }
    }
}

/// How many templates [`Server::gc`] keeps on the server
/// ([`crate::ServerOptions::template_budget`]): the most recently used
/// ones, up to both limits; the least recently used beyond them are
/// dropped. A template being built, being cloned, held by a running
/// process's [`crate::Template`] handle or with test databases of a running
/// process is never dropped (and counts towards the budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateBudget {
    /// At most this many templates (default 8).
    pub max_templates: usize,
    /// At most this much disk for the templates together (default 4 GiB);
    /// the most recently used template is kept whatever its size.
    pub max_bytes: u64,
}

impl Default for TemplateBudget {
    fn default() -> Self {
        Self {
            max_templates: 8,
            max_bytes: 4 << 30,
        }
    }
}

/// Why gc dropped or kept a database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GcReason {
    /// Dropped: the owning process on this host is gone.
    OwnerGone,
    /// Dropped: a test database or pool clone older than
    /// [`GcOptions::max_age`].
    Expired,
    /// Dropped: a pool clone whose template no longer exists.
    OrphanedPoolClone,
    /// Dropped: a template not used within [`GcOptions::template_max_idle`].
    UnusedTemplate,
    /// Dropped: a half-built template whose builder is gone.
    HalfBuiltTemplate,
    /// Dropped: a template beyond the [`TemplateBudget`], least recently
    /// used first.
    OverBudget,
    /// Dropped: a database left under its birth name (created, but its
    /// owner record and final name not yet written) by a process that is
    /// gone.
    HalfCreated,
    /// Dropped: a pool clone its test released (the test ended) for the
    /// pool's refill to drop.
    Released,
    /// Dropped: the database of a failed test, kept for inspection longer
    /// than [`GcOptions::kept_failed_max_age`].
    InspectionOver,
    /// Dropped: its name matched the prefix given to
    /// [`Server::drop_databases_with_prefix`].
    MatchedPrefix,
    /// Kept: it has no pg-isolate owner record.
    NoOwnerRecord,
    /// Kept: its owning process still runs.
    OwnerAlive,
    /// Kept: its owner is on another host, so whether it runs is unknown.
    OtherHost,
    /// Kept: a named database (gc never drops one; its owner does).
    NamedDatabase,
    /// Kept: a pool clone of an existing template.
    PoolClone,
    /// Kept: a template in use or recently used.
    TemplateInUse,
    /// Kept: the database of a failed test, kept for inspection
    /// ([`crate::ServerOptions::keep_failed`]).
    KeptFailed,
    /// Kept: under its birth name, its creating process still runs (a
    /// create in progress).
    CreateInProgress,
    /// Kept: dropping it failed.
    DropFailed(String),
}

impl std::fmt::Display for GcReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OwnerGone => f.write_str("owner process is gone"),
            Self::Expired => f.write_str("older than the maximum age"),
            Self::OrphanedPoolClone => {
                f.write_str("pool clone of a template that no longer exists")
            }
            Self::UnusedTemplate => f.write_str("template unused for too long"),
            Self::HalfBuiltTemplate => f.write_str("half-built template whose builder is gone"),
            Self::OverBudget => f.write_str("template beyond the budget, least recently used"),
            Self::HalfCreated => f.write_str("half-created database whose creator is gone"),
            Self::Released => f.write_str("released by its test"),
            Self::InspectionOver => {
                f.write_str("kept for a failed test longer than the inspection time")
            }
            Self::MatchedPrefix => f.write_str("name matched the prefix"),
            Self::NoOwnerRecord => f.write_str("no pg-isolate owner record"),
            Self::OwnerAlive => f.write_str("owner process is running"),
            Self::OtherHost => f.write_str("owner is on another host"),
            Self::NamedDatabase => f.write_str("named database"),
            Self::PoolClone => f.write_str("pool clone of an existing template"),
            Self::TemplateInUse => f.write_str("template in use"),
            Self::KeptFailed => f.write_str("kept for inspection: its test failed"),
            Self::CreateInProgress => f.write_str("being created by a running process"),
            Self::DropFailed(error) => write!(f, "dropping it failed: {error}"),
        }
    }
}

/// One database gc looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcEntry {
    /// The database name.
    pub name: String,
    /// Its kind, from its owner record.
    pub kind: Option<DatabaseKind>,
    /// Why it was dropped or kept.
    pub reason: GcReason,
}

/// What [`Server::gc`] dropped and what it kept (databases whose name
/// starts with the server's prefix only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Dropped databases.
    pub dropped: Vec<GcEntry>,
    /// Kept databases.
    pub kept: Vec<GcEntry>,
}

impl GcReport {
    /// Whether `name` was dropped.
    pub fn was_dropped(&self, name: &str) -> bool {
        self.dropped.iter().any(|e| e.name == name)
    }

    /// Whether `name` was kept.
    pub fn was_kept(&self, name: &str) -> bool {
        self.kept.iter().any(|e| e.name == name)
    }
}

impl Server {
    /// Drops leaked databases: test databases whose owner process on this
    /// host is gone (a failed test's database kept for inspection only
    /// after [`GcOptions::kept_failed_max_age`]), test databases and pool
    /// clones past
    /// [`GcOptions::max_age`], half-built templates of dead builders,
    /// templates unused for [`GcOptions::template_max_idle`] and pool clones
    /// whose template is gone.
    ///
    /// Only databases whose name starts with this server's
    /// [prefix](crate::ServerOptions::prefix) are looked at (an empty prefix
    /// means all). Databases without a pg-isolate owner record and named
    /// databases ([`Server::create_database`]) are never dropped: a named
    /// database is long-lived by design and dropped by its owner.
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, Error> {
        if crate::rt::in_runtime() {
            return crate::rt::off_runtime(|| self.gc(options));
        }
        let prefix = self.prefix();
        let listed = std::time::SystemTime::now();
        let databases: Vec<DatabaseInfo> = self
            .list_databases()?
            .into_iter()
            .filter(|info| info.name.starts_with(prefix))
            .collect();
        let mut ready_templates: HashSet<String> = databases
            .iter()
            .filter(|info| ready_owner(info).is_some())
            .map(|info| info.name.clone())
            .collect();
        let now = now();
        let older_than = |created: u64, age: Option<Duration>| {
            age.is_some_and(|age| now.saturating_sub(created) > age.as_secs())
        };
        let clone_use = clone_use(&databases);
        let over_budget = self.over_budget(&databases, &clone_use)?;
        let mut report = GcReport::default();
        // Templates first, so the pool clones of a template dropped now
        // are dropped in the same pass.
        let (templates, others): (Vec<&DatabaseInfo>, Vec<&DatabaseInfo>) =
            databases.iter().partition(|info| {
                info.owner
                    .as_ref()
                    .is_some_and(|o| o.kind == DatabaseKind::Template)
            });
        for info in templates.into_iter().chain(others) {
            let Some(owner) = &info.owner else {
                if let Some(creator) = birth::parse(&info.name) {
                    let verdict = match creator.gone() {
                        Some(true) => self
                            .gc_drop(info, options.dry_run)
                            .map(|()| GcReason::HalfCreated)
                            .map_err(|e| GcReason::DropFailed(e.to_string())),
                        Some(false) => Err(GcReason::CreateInProgress),
                        None => Err(GcReason::OtherHost),
                    };
                    match verdict {
                        Ok(reason) => report.dropped.push(entry(info, reason)),
                        Err(reason) => report.kept.push(entry(info, reason)),
                    }
                    continue;
                }
                if !prefix.is_empty() {
                    report.kept.push(entry(info, GcReason::NoOwnerRecord));
                }
                continue;
            };
            // A pool clone's markers (the embedded server's; see the
            // `markers` module).
            let markers = owner
                .template_key
                .as_deref()
                .filter(|_| owner.kind == DatabaseKind::Pool)
                .and_then(|key| Markers::of(self, key));
            let verdict = match owner.kind {
                DatabaseKind::Named => Err(GcReason::NamedDatabase),
                DatabaseKind::Test => {
                    if let Some(kept) = owner.kept_failed {
                        if older_than(kept, options.kept_failed_max_age) {
                            Ok(GcReason::InspectionOver)
                        } else if older_than(owner.created, options.max_age) {
                            Ok(GcReason::Expired)
                        } else {
                            Err(GcReason::KeptFailed)
                        }
                    } else if owner.owner_gone() == Some(true) {
                        Ok(GcReason::OwnerGone)
                    } else if older_than(owner.created, options.max_age) {
                        Ok(GcReason::Expired)
                    } else if owner.owner_gone().is_none() {
                        Err(GcReason::OtherHost)
                    } else {
                        Err(GcReason::OwnerAlive)
                    }
                }
                DatabaseKind::Pool => {
                    let template = owner
                        .template_key
                        .as_deref()
                        .map(|hex| template_name(prefix, hex));
                    // A clone claimed through its marker is the claiming
                    // process's test database, until its test released it.
                    let released = markers
                        .as_ref()
                        .is_some_and(|markers| markers.released(&info.name));
                    let holder = markers
                        .as_ref()
                        .filter(|_| !released)
                        .and_then(|markers| markers.holder(&info.name));
                    if released {
                        Ok(GcReason::Released)
                    } else if let Some((holder, _)) = holder {
                        if holder.is_alive() {
                            Err(GcReason::OwnerAlive)
                        } else {
                            Ok(GcReason::OwnerGone)
                        }
                    } else if !template.is_some_and(|t| ready_templates.contains(&t)) {
                        Ok(GcReason::OrphanedPoolClone)
                    } else if older_than(owner.created, options.max_age) {
                        Ok(GcReason::Expired)
                    } else {
                        Err(GcReason::PoolClone)
                    }
                }
                DatabaseKind::Template => {
                    let last_used = last_use(owner, &clone_use);
                    let reason = if !ready_templates.contains(&info.name) {
                        (owner.owner_gone() == Some(true)).then_some(GcReason::HalfBuiltTemplate)
                    } else if older_than(last_used, options.template_max_idle) {
                        Some(GcReason::UnusedTemplate)
                    } else {
                        over_budget
                            .contains(&info.name)
                            .then_some(GcReason::OverBudget)
                    };
                    match reason {
                        Some(reason) => self.drop_template_if_idle(
                            info,
                            owner.template_key.as_deref(),
                            reason,
                            options.dry_run,
                        ),
                        None => Err(GcReason::TemplateInUse),
                    }
                }
            };
            match verdict {
                Ok(
                    GcReason::UnusedTemplate | GcReason::HalfBuiltTemplate | GcReason::OverBudget,
                )
                | Err(_) => {}
                Ok(_) => {
                    if let Err(error) = self.gc_drop(info, options.dry_run) {
                        report
                            .kept
                            .push(entry(info, GcReason::DropFailed(error.to_string())));
                        continue;
                    }
                    if !options.dry_run
                        && let Some(markers) = &markers
                    {
                        markers.forget(&info.name);
                    }
                }
            }
            if verdict.is_ok() {
                ready_templates.remove(&info.name);
            }
            match verdict {
                Ok(reason) => report.dropped.push(entry(info, reason)),
                Err(reason) => report.kept.push(entry(info, reason)),
            }
        }
        if !options.dry_run {
            self.sweep_markers(&databases, listed);
        }
        tracing::info!(
            dropped = report.dropped.len(),
            kept = report.kept.len(),
            "garbage-collected databases"
        );
        Ok(report)
    }

    /// Leak cleanup on [`Server::connect`]: [`Server::gc`] with the default
    /// options, unless it ran for this server and prefix within
    /// [`crate::ServerOptions::auto_gc`] (the stamp file's modification
    /// time) or another process is running it right now (the stamp file's
    /// lock). Failures are only reported as events: opening a server must
    /// not fail because cleanup did.
    pub(crate) fn auto_gc(&self) {
        let Some(interval) = self.inner.options.auto_gc else {
            return;
        };
        let Some(path) = self.gc_stamp() else {
            tracing::debug!("no automatic gc: no private directory for its stamp");
            return;
        };
        let fresh = |path: &std::path::Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < interval)
        };
        if fresh(&path) {
            return;
        }
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "no automatic gc: cannot open its stamp");
                return;
            }
        };
        // One process at a time; the others skip it.
        if file.try_lock().is_err() || fresh(&path) {
            return;
        }
        if let Err(error) = file.set_modified(std::time::SystemTime::now()) {
            tracing::debug!(path = %path.display(), %error, "cannot update the gc stamp");
        }
        match self.gc(&GcOptions::default()) {
            Ok(report) => {
                tracing::debug!(dropped = report.dropped.len(), "automatic gc on connect")
            }
            Err(error) => tracing::warn!(%error, "automatic gc on connect failed"),
        }
    }

    /// Drops a database gc found to be a leak (unless it is a dry run).
    fn gc_drop(&self, info: &DatabaseInfo, dry_run: bool) -> Result<(), Error> {
        if dry_run {
            return Ok(());
        }
        self.drop_owned(&info.name, info.is_template)
    }

    /// The ready templates beyond the [`TemplateBudget`]: least recently
    /// used first out, never one with test databases of a running process.
    /// Removes the ready markers (older than the listing `listed`) of pool
    /// clones that are not among `databases` any more.
    fn sweep_markers(&self, databases: &[DatabaseInfo], listed: std::time::SystemTime) {
        let Some(pools) = self.state_dir().map(|dir| dir.join("pools")) else {
            return;
        };
        let Ok(keys) = std::fs::read_dir(pools) else {
            return;
        };
        let names: HashSet<&str> = databases.iter().map(|info| info.name.as_str()).collect();
        for key in keys.filter_map(Result::ok) {
            if let Some(markers) = key
                .file_name()
                .to_str()
                .and_then(|key| Markers::of(self, key))
            {
                markers.sweep(&|name| names.contains(name), listed);
            }
        }
    }

    fn over_budget(
        &self,
        databases: &[DatabaseInfo],
        clone_use: &HashMap<&str, u64>,
    ) -> Result<HashSet<String>, Error> {
        let budget = self.inner.options.template_budget;
        let mut templates: Vec<(u64, u64, &str, Option<&str>)> = databases
            .iter()
            .filter_map(|info| {
                let owner = ready_owner(info)?;
                Some((
                    last_use(&owner, clone_use),
                    owner.created,
                    info.name.as_str(),
                    info.owner.as_ref()?.template_key.as_deref(),
                ))
            })
            .collect();
        if templates.is_empty() {
            return Ok(HashSet::new());
        }
        // Keys with test databases whose owner may still run.
        let live: HashSet<&str> = databases
            .iter()
            .filter_map(|info| info.owner.as_ref())
            .filter(|o| o.kind == DatabaseKind::Test && o.owner_gone() != Some(true))
            .filter_map(|o| o.template_key.as_deref())
            .collect();
        let sizes = self.template_sizes()?;
        templates.sort_by_key(|t| std::cmp::Reverse((t.0, t.1)));
        let (mut count, mut bytes) = (0usize, 0u64);
        let mut over = HashSet::new();
        for (_, _, name, key) in templates {
            let size = sizes.get(name).copied().unwrap_or(0);
            let fits = count < budget.max_templates
                && (count == 0 || bytes.saturating_add(size) <= budget.max_bytes);
            if fits || key.is_some_and(|k| live.contains(k)) {
                count += 1;
                bytes = bytes.saturating_add(size);
            } else {
                over.insert(name.to_owned());
            }
        }
        Ok(over)
    }

    /// The size of every template database on the server.
    fn template_sizes(&self) -> Result<std::collections::HashMap<String, u64>, Error> {
        let prefix = self.prefix().to_owned();
        self.with_admin(|client| {
            let rows = client
                .query(
                    "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datistemplate",
                    &[],
                )
                .map_err(|e| Error::sql("measuring templates", &prefix, e))?;
            Ok(rows
                .iter()
                .map(|row| {
                    // NULL when the database's files are already gone (one
                    // being dropped by another process's gc).
                    let size: Option<i64> = row.get(1);
                    (row.get(0), size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
                })
                .collect())
        })
    }

    /// Drops a template under its build lock and its hold lock (so never
    /// while it is being built or waited for, nor while a running process
    /// holds a [`crate::Template`] handle of it); `Err(TemplateInUse)` when
    /// either is taken.
    fn drop_template_if_idle(
        &self,
        info: &DatabaseInfo,
        hex: Option<&str>,
        reason: GcReason,
        dry_run: bool,
    ) -> Result<GcReason, GcReason> {
        let failed = |e: Error| GcReason::DropFailed(e.to_string());
        let Some(lock) = hex.and_then(lock_of) else {
            return self.gc_drop(info, dry_run).map(|()| reason).map_err(failed);
        };
        let mut client = self.admin_client().map_err(failed)?;
        let mut try_lock = |key: i64| -> Result<bool, GcReason> {
            Ok(client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .map_err(|e| failed(Error::sql("locking template", &info.name, e)))?
                .get(0))
        };
        if !try_lock(lock)? {
            return Err(GcReason::TemplateInUse);
        }
        // A hold of this very handle counts like any other: the handle may
        // be shared (a `static` in a test binary) by code still cloning it.
        if !try_lock(hold_lock(lock))? {
            let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&lock]);
            return Err(GcReason::TemplateInUse);
        }
        let result = self.gc_drop(info, dry_run);
        let _ = client.execute(
            "SELECT pg_advisory_unlock($1), pg_advisory_unlock($2)",
            &[&lock, &hold_lock(lock)],
        );
        result.map(|()| reason).map_err(failed)
    }

    /// Drops every database whose name starts with `prefix` and that
    /// carries a pg-isolate owner record; the others are reported as kept.
    pub fn drop_databases_with_prefix(&self, prefix: &str) -> Result<GcReport, Error> {
        names::validate(prefix)?;
        let mut report = GcReport::default();
        for info in self.list_databases()? {
            if !info.name.starts_with(prefix) {
                continue;
            }
            if info.owner.is_none() {
                report.kept.push(entry(&info, GcReason::NoOwnerRecord));
                continue;
            }
            match self.drop_owned(&info.name, info.is_template) {
                Ok(()) => report.dropped.push(entry(&info, GcReason::MatchedPrefix)),
                Err(error) => report
                    .kept
                    .push(entry(&info, GcReason::DropFailed(error.to_string()))),
            }
        }
        Ok(report)
    }
}

fn entry(info: &DatabaseInfo, reason: GcReason) -> GcEntry {
    GcEntry {
        name: info.name.clone(),
        kind: info.owner.as_ref().map(|o| o.kind),
        reason,
    }
}

/// The newest creation time of a test database or pool clone, per
/// template key: a template is in use while its clones are made and
/// claimed (a claim records a new creation time), even by callers that
/// never look the template up (a remembered `#[pg_isolate::test]` setup).
fn clone_use(databases: &[DatabaseInfo]) -> HashMap<&str, u64> {
    let mut newest: HashMap<&str, u64> = HashMap::new();
    for owner in databases.iter().filter_map(|info| info.owner.as_ref()) {
        if matches!(owner.kind, DatabaseKind::Test | DatabaseKind::Pool)
            && let Some(key) = owner.template_key.as_deref()
        {
            let at = newest.entry(key).or_default();
            *at = (*at).max(owner.created);
        }
    }
    newest
}

/// When a template was last used: its own record's `last_used` or its
/// clones' newest creation, whichever is later.
fn last_use(template: &OwnerRecord, clone_use: &HashMap<&str, u64>) -> u64 {
    let own = template.last_used.unwrap_or(template.created);
    template
        .template_key
        .as_deref()
        .and_then(|key| clone_use.get(key))
        .map_or(own, |&clones| own.max(clones))
}
