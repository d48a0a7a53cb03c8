//! Rollback verification: for each migration, up, down, compare the schema
//! with the one before; optionally up again and compare with the first up.

use std::fmt;
use std::time::Instant;

use postgres::Client;
use serde::Serialize;

use super::diff::{Difference, SchemaDiff};
use super::error::{Direction, MigrateError, MigrationFailure};
use super::format::{Migration, Migrations};
use super::runner::{Mode, Target, run_step};
use super::snapshot::{Catalog, SchemaSnapshot};
use super::tracking::Tracking;
use crate::{Server, TestDatabase};

/// Optional settings of [`verify_rollbacks`].
#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// The first migration to check (version as written or as tracked);
    /// default the first one.
    pub from: Option<String>,
    /// The last migration to check; default the last one.
    pub to: Option<String>,
    /// Report column-order and whitespace-only differences as failures
    /// instead of notes.
    pub strict: bool,
    /// After the down, apply the up again and compare with the first up.
    pub reapply: bool,
}

/// The outcome of one migration's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RollbackStatus {
    /// Up, down (and up again) ran and the schemas match.
    Ok,
    /// The down script failed.
    DownFailed,
    /// The up script failed (first application, or the reapplication).
    UpFailed,
    /// The schema after the down differs from the one before the up (or
    /// the reapplied up differs from the first).
    SchemaDiffers,
}

/// Which step of a check a difference or error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RollbackStep {
    /// The first up.
    Up,
    /// The down (differences: schema before the up vs after the down).
    Down,
    /// The second up (differences: schema after the first up vs after the
    /// second).
    Reapply,
}

/// A difference found by a check, and which comparison found it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CheckedDifference {
    /// `down` or `reapply`.
    pub step: RollbackStep,
    /// The difference.
    #[serde(flatten)]
    pub difference: Difference,
}

/// The error of a check's failing step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StepError {
    /// The step that failed.
    pub step: RollbackStep,
    /// Where and why.
    #[serde(flatten)]
    pub failure: MigrationFailure,
}

/// One migration's check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RollbackEntry {
    /// The version as written in the directory.
    pub version: String,
    /// The name as written in the directory.
    pub name: String,
    /// The outcome.
    pub status: RollbackStatus,
    /// The failing step's error, for `down_failed` and `up_failed`.
    pub error: Option<StepError>,
    /// Differences that change meaning.
    pub differences: Vec<CheckedDifference>,
    /// Differences that do not (column order, function body whitespace),
    /// unless strict.
    pub notes: Vec<CheckedDifference>,
}

/// Counts over a whole verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RollbackSummary {
    /// Migrations checked.
    pub checked: usize,
    /// Of those, ok.
    pub ok: usize,
    /// Of those, not ok.
    pub failed: usize,
    /// Notes over all migrations.
    pub notes: usize,
    /// Wall-clock seconds of the whole verification.
    pub seconds: f64,
}

/// The result of [`verify_rollbacks`]; serializes to
/// `{"migrations": [{"version", "name", "status", "error", "differences",
/// "notes"}, ...], "summary": {"checked", "ok", "failed", "notes",
/// "seconds"}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RollbackReport {
    /// One entry per checked migration, in order.
    pub migrations: Vec<RollbackEntry>,
    /// The counts.
    pub summary: RollbackSummary,
}

impl RollbackReport {
    /// Whether every checked migration is ok.
    pub fn is_success(&self) -> bool {
        self.summary.failed == 0
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report holds only JSON-representable values")
    }

    /// One line with the counts (`rollback check: 12 checked, 11 ok, 1
    /// failed, 2 notes in 0.84 s`).
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        format!(
            "rollback check: {} checked, {} ok, {} failed, {} notes in {:.2} s",
            s.checked, s.ok, s.failed, s.notes, s.seconds
        )
    }
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary_line())
    }
}

fn server_error(action: &str) -> impl FnOnce(crate::Error) -> MigrateError + '_ {
    move |source| MigrateError::Server {
        action: action.to_owned(),
        source: Box::new(source),
    }
}

/// Verifies the rollback of every reversible migration in the range: from
/// the schema just before it, apply up, apply down, and compare the schema
/// (from the catalogs) with the one before; with
/// [`RollbackOptions::reapply`], apply up again and compare with the first.
///
/// It never replays history per check. The database before the range comes
/// from a template (keyed by the migrations before it, so it is built once
/// and reused by later runs); one scratch clone of it walks through the
/// range. A migration whose scripts both run in transactions is checked
/// inside one transaction with savepoints (the down and second up are
/// rolled back, the first up committed); any other, and any whose check
/// failed there, is checked on a fresh clone of the walker with a
/// transaction per script, and the walker then applies the up itself. Scratch databases
/// are created and dropped through the [`Server`] with owner records.
///
/// Migration failures are part of the report; the check stops after a
/// migration whose first up fails, since later ones cannot be reached.
/// Irreversible migrations in the range are applied, not checked (one
/// whose up fails is reported as `up_failed`, and ends the check). Errors
/// are returned only for the infrastructure (server, connections,
/// catalogs, tracking table) and an unknown or reversed range.
pub fn verify_rollbacks(
    server: &Server,
    migrations: &Migrations,
    options: &RollbackOptions,
) -> Result<RollbackReport, MigrateError> {
    // Its connections are `postgres` clients: off the caller's runtime.
    if crate::rt::in_runtime() {
        return crate::rt::off_runtime(|| verify_rollbacks(server, migrations, options));
    }
    let started = Instant::now();
    let list = migrations.list();
    let find = |version: &String| {
        migrations
            .position(version)
            .ok_or_else(|| MigrateError::UnknownVersion {
                version: version.clone(),
                dir: migrations.dir().to_path_buf(),
            })
    };
    let first = options.from.as_ref().map(find).transpose()?.unwrap_or(0);
    let last = match options.to.as_ref().map(find).transpose()? {
        Some(last) => Some(last),
        None => list.len().checked_sub(1),
    };
    let mut entries = Vec::new();
    if let Some(last) = last {
        if first > last {
            return Err(MigrateError::InvalidRange {
                reason: format!(
                    "{} comes after {}",
                    list[first].version(),
                    list[last].version()
                ),
            });
        }
        let base = server
            .template(&migrations.key_material_through(first), |client| {
                if let Some(previous) = first.checked_sub(1) {
                    migrations.migrate(
                        client,
                        Target::Version(list[previous].version().to_owned()),
                        |_| {},
                    )?;
                }
                Ok(())
            })
            .map_err(server_error("building the template before the range"))?;
        let walker = base
            .test_database()
            .map_err(server_error("cloning the template before the range"))?;
        let mut walk = Walk {
            server,
            walker,
            client: None,
            catalog: None,
            tracking: Tracking::new(migrations.format()),
            options,
        };
        tracking_ready(&mut walk)?;
        let mut before = walk.snapshot()?;
        for m in &list[first..=last] {
            let (entry, after_up) = if !m.is_reversible() {
                let tracking = walk.tracking;
                match run_step(walk.client()?, tracking, m, Direction::Up, Mode::Own) {
                    Ok(_) => (None, Some(walk.snapshot()?)),
                    Err(error) => (Some(failed(m, RollbackStep::Up, &error)), None),
                }
            } else {
                let both_transactional =
                    m.up().transactional && m.down().is_some_and(|down| down.transactional);
                let fast = if both_transactional {
                    walk.check_in_transaction(m, &before)?
                } else {
                    None
                };
                let (entry, after_up) = match fast {
                    Some(outcome) => outcome,
                    None => walk.check_on_clone(m, &before)?,
                };
                (Some(entry), after_up)
            };
            if let Some(entry) = entry {
                tracing::info!(
                    version = m.version(),
                    name = m.name(),
                    status = ?entry.status,
                    differences = entry.differences.len(),
                    notes = entry.notes.len(),
                    "rollback checked"
                );
                entries.push(entry);
            }
            match after_up {
                Some(snapshot) => before = snapshot,
                None => break,
            }
        }
    }
    let checked = entries.len();
    let ok = entries
        .iter()
        .filter(|e| e.status == RollbackStatus::Ok)
        .count();
    let notes = entries.iter().map(|e| e.notes.len()).sum();
    Ok(RollbackReport {
        migrations: entries,
        summary: RollbackSummary {
            checked,
            ok,
            failed: checked - ok,
            notes,
            seconds: started.elapsed().as_secs_f64(),
        },
    })
}

fn tracking_ready(walk: &mut Walk<'_>) -> Result<(), MigrateError> {
    let tracking = walk.tracking;
    tracking.ensure(walk.client()?)
}

/// The scratch database walking through the range, one migration at a time.
struct Walk<'a> {
    server: &'a Server,
    walker: TestDatabase,
    client: Option<Client>,
    /// The catalog queries prepared on `client`.
    catalog: Option<Catalog>,
    tracking: Tracking,
    options: &'a RollbackOptions,
}

impl Walk<'_> {
    fn client(&mut self) -> Result<&mut Client, MigrateError> {
        if self.client.is_none() {
            let client = self
                .walker
                .client()
                .map_err(server_error("connecting to the scratch database"))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    fn execute(&mut self, sql: &str) -> Result<(), MigrateError> {
        self.client()?
            .batch_execute(sql)
            .map_err(|e| MigrateError::database(format!("`{sql}` on the scratch database"), e))
    }

    fn snapshot(&mut self) -> Result<SchemaSnapshot, MigrateError> {
        self.client()?;
        let client = self.client.as_mut().expect("connected above");
        if self.catalog.is_none() {
            self.catalog = Some(Catalog::prepare(client)?);
        }
        self.catalog
            .as_ref()
            .expect("prepared above")
            .capture(client)
    }

    /// One script inside the open transaction, with deferred constraints
    /// checked as its commit would.
    fn step(&mut self, m: &Migration, direction: Direction) -> Result<(), MigrateError> {
        let tracking = self.tracking;
        let client = self.client()?;
        run_step(client, tracking, m, direction, Mode::Nested)?;
        immediate(client, m, direction)
    }

    /// Up, down, compare, (up, compare) inside one transaction: everything
    /// after the first up is rolled back to a savepoint, the first up is
    /// committed so the walker moves on.
    ///
    /// Running the up and the down in one transaction is not what a real
    /// run does (`ALTER TYPE ... ADD VALUE` in the up, the new value used in
    /// the down, fails only there). So when any step fails, everything is
    /// rolled back and `None` returned: the caller checks the migration
    /// again on a clone, with a transaction per script.
    fn check_in_transaction(
        &mut self,
        m: &Migration,
        before: &SchemaSnapshot,
    ) -> Result<Option<(RollbackEntry, Option<SchemaSnapshot>)>, MigrateError> {
        let options = self.options;
        self.execute("BEGIN")?;
        if self.step(m, Direction::Up).is_err() {
            self.execute("ROLLBACK")?;
            return Ok(None);
        }
        let after_up = self.snapshot()?;
        self.execute("SAVEPOINT pg_isolate_check")?;
        let mut entry = entry(m);
        match self.step(m, Direction::Down) {
            Err(error) => set_error(&mut entry, RollbackStep::Down, &error),
            Ok(()) => {
                let after_down = self.snapshot()?;
                add(
                    &mut entry,
                    RollbackStep::Down,
                    before.diff(&after_down),
                    options,
                );
                if options.reapply {
                    match self.step(m, Direction::Up) {
                        Err(error) => set_error(&mut entry, RollbackStep::Reapply, &error),
                        Ok(()) => {
                            let again = self.snapshot()?;
                            add(
                                &mut entry,
                                RollbackStep::Reapply,
                                after_up.diff(&again),
                                options,
                            );
                        }
                    }
                }
            }
        }
        if entry.error.is_some() {
            self.execute("ROLLBACK")?;
            return Ok(None);
        }
        self.execute("ROLLBACK TO SAVEPOINT pg_isolate_check")?;
        self.execute("COMMIT")?;
        finish(&mut entry);
        Ok(Some((entry, Some(after_up))))
    }

    /// The same check on a fresh clone of the walker, for migrations with a
    /// non-transactional script; then the walker applies the up itself.
    fn check_on_clone(
        &mut self,
        m: &Migration,
        before: &SchemaSnapshot,
    ) -> Result<(RollbackEntry, Option<SchemaSnapshot>), MigrateError> {
        let tracking = self.tracking;
        let options = self.options;
        // CREATE DATABASE ... TEMPLATE needs the source without connections.
        self.client = None;
        self.catalog = None;
        let scratch = TestDatabase::create(self.server, Some(self.walker.name()), None)
            .map_err(server_error("cloning the scratch database"))?;
        let mut client = scratch
            .client()
            .map_err(server_error("connecting to the scratch clone"))?;
        let catalog = Catalog::prepare(&mut client)?;
        if let Err(error) = run_step(&mut client, tracking, m, Direction::Up, Mode::Own) {
            return Ok((failed(m, RollbackStep::Up, &error), None));
        }
        let after_up = catalog.capture(&mut client)?;
        let mut entry = entry(m);
        match run_step(&mut client, tracking, m, Direction::Down, Mode::Own) {
            Err(error) => set_error(&mut entry, RollbackStep::Down, &error),
            Ok(_) => {
                let after_down = catalog.capture(&mut client)?;
                add(
                    &mut entry,
                    RollbackStep::Down,
                    before.diff(&after_down),
                    options,
                );
                if options.reapply {
                    match run_step(&mut client, tracking, m, Direction::Up, Mode::Own) {
                        Err(error) => set_error(&mut entry, RollbackStep::Reapply, &error),
                        Ok(_) => {
                            let again = catalog.capture(&mut client)?;
                            add(
                                &mut entry,
                                RollbackStep::Reapply,
                                after_up.diff(&again),
                                options,
                            );
                        }
                    }
                }
            }
        }
        drop(client);
        drop(scratch);
        // The up worked on the clone, so it works on the walker (same
        // schema, same data).
        run_step(self.client()?, tracking, m, Direction::Up, Mode::Own)?;
        finish(&mut entry);
        Ok((entry, Some(after_up)))
    }
}

/// Fires deferred constraint checks now, as the commit of a real run would.
fn immediate(client: &mut Client, m: &Migration, direction: Direction) -> Result<(), MigrateError> {
    client
        .batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
        .map_err(|source| {
            let script = match direction {
                Direction::Up => m.up_path(),
                Direction::Down => m.down_path().unwrap_or(m.up_path()),
            };
            let db = source.as_db_error();
            MigrateError::Failed {
                failure: Box::new(MigrationFailure {
                    version: m.version().to_owned(),
                    name: m.name().to_owned(),
                    direction,
                    file: script.to_path_buf(),
                    line: None,
                    column: None,
                    statement: None,
                    sqlstate: source.code().map(|c| c.code().to_owned()),
                    message: db.map_or_else(|| source.to_string(), |d| d.message().to_owned()),
                    detail: db.and_then(|d| d.detail()).map(str::to_owned),
                    hint: db.and_then(|d| d.hint()).map(str::to_owned),
                    rolled_back: true,
                }),
                source,
            }
        })
}

fn entry(m: &Migration) -> RollbackEntry {
    RollbackEntry {
        version: m.version().to_owned(),
        name: m.name().to_owned(),
        status: RollbackStatus::Ok,
        error: None,
        differences: Vec::new(),
        notes: Vec::new(),
    }
}

fn failed(m: &Migration, step: RollbackStep, error: &MigrateError) -> RollbackEntry {
    let mut entry = entry(m);
    set_error(&mut entry, step, error);
    finish(&mut entry);
    entry
}

fn set_error(entry: &mut RollbackEntry, step: RollbackStep, error: &MigrateError) {
    let failure = match error.failure() {
        Some(failure) => failure.clone(),
        None => MigrationFailure {
            version: entry.version.clone(),
            name: entry.name.clone(),
            direction: if step == RollbackStep::Down {
                Direction::Down
            } else {
                Direction::Up
            },
            file: match error {
                MigrateError::EmptyScript { path } => path.clone(),
                _ => Default::default(),
            },
            line: None,
            column: None,
            statement: None,
            sqlstate: None,
            message: error_chain(error),
            detail: None,
            hint: None,
            rolled_back: true,
        },
    };
    entry.error = Some(StepError { step, failure });
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn add(entry: &mut RollbackEntry, step: RollbackStep, diff: SchemaDiff, options: &RollbackOptions) {
    let diff = if options.strict { diff.strict() } else { diff };
    let wrap = |difference| CheckedDifference { step, difference };
    entry
        .differences
        .extend(diff.differences.into_iter().map(wrap));
    entry.notes.extend(diff.notes.into_iter().map(wrap));
}

fn finish(entry: &mut RollbackEntry) {
    entry.status = match &entry.error {
        Some(error) if error.step == RollbackStep::Down => RollbackStatus::DownFailed,
        Some(_) => RollbackStatus::UpFailed,
        None if !entry.differences.is_empty() => RollbackStatus::SchemaDiffers,
        None => RollbackStatus::Ok,
    };
}
