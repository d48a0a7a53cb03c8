//! Leak cleanup: dropping our databases whose owner is gone, expired test
//! databases and pool clones, orphaned pool clones and idle templates.
//! Nothing without our owner record or outside the server's prefix is
//! touched, and named databases are never collected.

use std::collections::HashSet;
use std::time::Duration;

use crate::owner::{DatabaseKind, now};
use crate::template::{ready_owner, template_name};
use crate::{DatabaseInfo, Error, Server, names};

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
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            max_age: None,
            template_max_idle: Some(Duration::from_secs(7 * 24 * 3600)),
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
            Self::MatchedPrefix => f.write_str("name matched the prefix"),
            Self::NoOwnerRecord => f.write_str("no pg-isolate owner record"),
            Self::OwnerAlive => f.write_str("owner process is running"),
            Self::OtherHost => f.write_str("owner is on another host"),
            Self::NamedDatabase => f.write_str("named database"),
            Self::PoolClone => f.write_str("pool clone of an existing template"),
            Self::TemplateInUse => f.write_str("template in use"),
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

/// The advisory lock key of the template with key `hex`.
fn lock_of(hex: &str) -> Option<i64> {
    u64::from_str_radix(hex, 16)
        .ok()
        .map(|k| i64::from_be_bytes(k.to_be_bytes()))
}

impl Server {
    /// Drops leaked databases: test databases whose owner process on this
    /// host is gone, test databases and pool clones past
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
        let prefix = self.prefix();
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
                if !prefix.is_empty() {
                    report.kept.push(entry(info, GcReason::NoOwnerRecord));
                }
                continue;
            };
            let verdict = match owner.kind {
                DatabaseKind::Named => Err(GcReason::NamedDatabase),
                DatabaseKind::Test => {
                    if owner.owner_gone() == Some(true) {
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
                    if !template.is_some_and(|t| ready_templates.contains(&t)) {
                        Ok(GcReason::OrphanedPoolClone)
                    } else if older_than(owner.created, options.max_age) {
                        Ok(GcReason::Expired)
                    } else {
                        Err(GcReason::PoolClone)
                    }
                }
                DatabaseKind::Template => {
                    let last_used = owner.last_used.unwrap_or(owner.created);
                    let reason = if !ready_templates.contains(&info.name) {
                        (owner.owner_gone() == Some(true)).then_some(GcReason::HalfBuiltTemplate)
                    } else {
                        older_than(last_used, options.template_max_idle)
                            .then_some(GcReason::UnusedTemplate)
                    };
                    match reason {
                        Some(reason) => {
                            self.drop_template_if_idle(info, owner.template_key.as_deref(), reason)
                        }
                        None => Err(GcReason::TemplateInUse),
                    }
                }
            };
            match verdict {
                Ok(GcReason::UnusedTemplate | GcReason::HalfBuiltTemplate) | Err(_) => {}
                Ok(_) => {
                    if let Err(error) = self.drop_owned(&info.name, info.is_template) {
                        report
                            .kept
                            .push(entry(info, GcReason::DropFailed(error.to_string())));
                        continue;
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
        tracing::info!(
            dropped = report.dropped.len(),
            kept = report.kept.len(),
            "garbage-collected databases"
        );
        Ok(report)
    }

    /// Drops a template under its build lock (so never while it is being
    /// built or waited for); `Err(TemplateInUse)` when the lock is taken.
    fn drop_template_if_idle(
        &self,
        info: &DatabaseInfo,
        hex: Option<&str>,
        reason: GcReason,
    ) -> Result<GcReason, GcReason> {
        let failed = |e: Error| GcReason::DropFailed(e.to_string());
        let Some(lock) = hex.and_then(lock_of) else {
            return self
                .drop_owned(&info.name, info.is_template)
                .map(|()| reason)
                .map_err(failed);
        };
        let mut client = self.admin_client().map_err(failed)?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lock])
            .map_err(|e| failed(Error::sql("locking template", &info.name, e)))?
            .get(0);
        if !got {
            return Err(GcReason::TemplateInUse);
        }
        let result = self.drop_owned(&info.name, info.is_template);
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&lock]);
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
