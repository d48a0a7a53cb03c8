//! Migrating a database up or down to a target, one transaction per
//! migration, with precise failure reports.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::error::ErrorPosition;

use super::error::{Direction, MigrateError, MigrationFailure};
use super::format::{Format, Migration, Migrations, Script, compare_tracked};
use super::split::{self, Statement};
use super::tracking::Tracking;

/// Where [`Migrations::migrate`] takes a database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Every migration applied.
    Latest,
    /// Every migration up to and including this version (as written in the
    /// directory, or as tracked) applied, every later one reverted.
    Version(String),
    /// Every migration reverted.
    None,
}

/// Whether a [`Progress`] event opens or closes a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The script is about to run.
    Started,
    /// The script ran and the tracking table records it.
    Finished {
        /// How long the script and its bookkeeping took.
        elapsed: Duration,
    },
}

/// One progress event of a migration run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Progress<'a> {
    /// Applying or reverting.
    pub direction: Direction,
    /// The migration.
    pub migration: &'a Migration,
    /// 1-based number of this step in the run.
    pub step: usize,
    /// Steps in the run.
    pub steps: usize,
    /// Started or finished.
    pub phase: Phase,
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Versions applied, in order (as written in the directory).
    pub applied: Vec<String>,
    /// Versions reverted, in order.
    pub reverted: Vec<String>,
    /// The last migration (in directory order) applied afterwards, if any.
    pub current: Option<String>,
}

/// How a script's transaction is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Top level: a transactional script gets `BEGIN` / `COMMIT`; a
    /// non-transactional one runs statement by statement.
    Own,
    /// Inside the caller's open transaction: every script gets a savepoint.
    Nested,
}

impl Migrations {
    /// Migrates the database `client` is connected to up or down to
    /// `target`, calling `progress` before and after every migration.
    ///
    /// Reverts (newest first) the applied migrations after the target, then
    /// applies (oldest first) the missing ones up to it. Each script runs in
    /// its own transaction together with its tracking-table row, unless its
    /// metadata says otherwise (diesel `run_in_transaction = false`, sqlx
    /// `-- no-transaction`): then its statements are sent one at a time,
    /// outside any transaction, so `CREATE INDEX CONCURRENTLY` works.
    ///
    /// A failing script stops the run with [`MigrateError::Failed`] naming
    /// the migration, file, line and column, message and SQLSTATE; the
    /// database stays at the last migration that completed, and the tracking
    /// table says so. The run holds an advisory lock on the database (for
    /// sqlx, the one `sqlx migrate run` takes).
    pub fn migrate(
        &self,
        client: &mut Client,
        target: Target,
        mut progress: impl FnMut(&Progress<'_>),
    ) -> Result<MigrateReport, MigrateError> {
        let tracking = Tracking::new(self.format());
        let database: String = client
            .query_one("SELECT current_database()", &[])
            .map_err(|e| MigrateError::database("reading the current database", e))?
            .get(0);
        let key = tracking.lock_key(&database);
        lock(client, key, &database)?;
        let result = self.migrate_locked(client, tracking, &target, &mut progress);
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&key]);
        let report = result?;
        unlocked.map_err(|e| MigrateError::database("releasing the migration lock", e))?;
        Ok(report)
    }

    /// The versions (as written) of the migrations applied to the database,
    /// in directory order; an absent tracking table means none.
    pub fn applied(&self, client: &mut Client) -> Result<Vec<String>, MigrateError> {
        let tracking = Tracking::new(self.format());
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&tracking.table()])
            .map_err(|e| MigrateError::database("looking for the tracking table", e))?
            .get(0);
        if !exists {
            return Ok(Vec::new());
        }
        let applied = tracking.applied(client)?;
        Ok(self
            .list()
            .iter()
            .filter(|m| applied.contains_key(m.tracked_version()))
            .map(|m| m.version().to_owned())
            .collect())
    }

    fn target_index(&self, target: &Target) -> Result<Option<usize>, MigrateError> {
        match target {
            Target::Latest => Ok(self.len().checked_sub(1)),
            Target::None => Ok(None),
            Target::Version(v) => {
                self.position(v)
                    .map(Some)
                    .ok_or_else(|| MigrateError::UnknownVersion {
                        version: v.clone(),
                        dir: self.dir().to_path_buf(),
                    })
            }
        }
    }

    fn migrate_locked(
        &self,
        client: &mut Client,
        tracking: Tracking,
        target: &Target,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<MigrateReport, MigrateError> {
        let target_index = self.target_index(target)?;
        tracking.ensure(client)?;
        let applied = tracking.applied(client)?;
        let known: BTreeSet<&str> = self.list().iter().map(Migration::tracked_version).collect();
        for (version, row) in &applied {
            if !row.success {
                return Err(MigrateError::Dirty {
                    version: version.clone(),
                    table: tracking.table(),
                });
            }
            if known.contains(version.as_str()) {
                continue;
            }
            // sqlx refuses unknown applied versions; diesel only fails when
            // it has to revert one.
            let must_revert = match target_index {
                None => true,
                Some(i) => {
                    compare_tracked(self.format(), version, self.list()[i].tracked_version())
                        .is_gt()
                }
            };
            if self.format() == Format::Sqlx || must_revert {
                return Err(MigrateError::AppliedNotFound {
                    version: version.clone(),
                    table: tracking.table(),
                    dir: self.dir().to_path_buf(),
                });
            }
        }
        if self.format() == Format::Sqlx {
            for m in self.list() {
                if let Some(row) = applied.get(m.tracked_version())
                    && row.checksum.as_deref() != Some(m.sqlx_checksum().as_slice())
                {
                    return Err(MigrateError::ChecksumMismatch {
                        version: m.version().to_owned(),
                        file: m.up_path().to_path_buf(),
                    });
                }
            }
        }
        let is_applied = |m: &Migration| applied.contains_key(m.tracked_version());
        let keep = target_index.map_or(0, |i| i + 1);
        let downs: Vec<&Migration> = self.list()[keep..]
            .iter()
            .rev()
            .filter(|m| is_applied(m))
            .collect();
        let ups: Vec<&Migration> = self.list()[..keep]
            .iter()
            .filter(|m| !is_applied(m))
            .collect();
        let steps = downs.len() + ups.len();
        let mut report = MigrateReport::default();
        let plan = downs
            .iter()
            .map(|m| (Direction::Down, *m))
            .chain(ups.iter().map(|m| (Direction::Up, *m)));
        for (index, (direction, m)) in plan.enumerate() {
            let step = index + 1;
            progress(&Progress {
                direction,
                migration: m,
                step,
                steps,
                phase: Phase::Started,
            });
            let elapsed = run_step(client, tracking, m, direction, Mode::Own)?;
            tracing::info!(
                version = m.version(),
                name = m.name(),
                %direction,
                step,
                steps,
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "migration done"
            );
            progress(&Progress {
                direction,
                migration: m,
                step,
                steps,
                phase: Phase::Finished { elapsed },
            });
            match direction {
                Direction::Up => report.applied.push(m.version().to_owned()),
                Direction::Down => report.reverted.push(m.version().to_owned()),
            }
        }
        report.current = target_index.and_then(|i| {
            self.list()[..=i]
                .iter()
                .rev()
                .find(|m| is_applied(m) || report.applied.iter().any(|v| v == m.version()))
                .map(|m| m.version().to_owned())
        });
        Ok(report)
    }
}

/// Takes the migration lock of the database. Polls with
/// `pg_try_advisory_lock` instead of blocking in `pg_advisory_lock`: a
/// session blocked there holds a transaction open, and the lock holder's
/// `CREATE INDEX CONCURRENTLY` waits for every open transaction to end, so
/// blocking would deadlock.
fn lock(client: &mut Client, key: i64, database: &str) -> Result<(), MigrateError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    let mut reported = Duration::ZERO;
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map_err(|e| MigrateError::database("taking the migration lock", e))?
            .get(0);
        if locked {
            return Ok(());
        }
        let waited = started.elapsed();
        if waited >= reported + Duration::from_secs(10) {
            reported = waited;
            tracing::info!(
                database,
                waited_s = waited.as_secs(),
                "waiting for another migration run on this database"
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn script_of(m: &Migration, direction: Direction) -> Result<&Script, MigrateError> {
    match direction {
        Direction::Up => Ok(m.up()),
        Direction::Down => m.down().ok_or_else(|| MigrateError::NotReversible {
            version: m.version().to_owned(),
            name: m.name().to_owned(),
        }),
    }
}

/// Runs one script of `m` and updates the tracking table, as one unit when
/// the script is transactional (or `mode` is [`Mode::Nested`]).
pub(crate) fn run_step(
    client: &mut Client,
    tracking: Tracking,
    m: &Migration,
    direction: Direction,
    mode: Mode,
) -> Result<Duration, MigrateError> {
    let script = script_of(m, direction)?;
    if script.sql.is_empty() {
        return Err(MigrateError::EmptyScript {
            path: script.path.clone(),
        });
    }
    let start = Instant::now();
    let bookkeeping = |client: &mut Client, elapsed| match direction {
        Direction::Up => tracking.record(client, m, elapsed),
        Direction::Down => tracking.remove(client, m),
    };
    if script.transactional || mode == Mode::Nested {
        let (begin, commit, rollback) = match mode {
            Mode::Own => ("BEGIN", "COMMIT", "ROLLBACK"),
            Mode::Nested => (
                "SAVEPOINT pg_isolate_step",
                "RELEASE SAVEPOINT pg_isolate_step",
                "ROLLBACK TO SAVEPOINT pg_isolate_step; RELEASE SAVEPOINT pg_isolate_step",
            ),
        };
        client
            .batch_execute(begin)
            .map_err(|e| MigrateError::database("starting the migration's transaction", e))?;
        if let Err(error) = client.batch_execute(&script.sql) {
            if let Err(e) = client.batch_execute(rollback) {
                tracing::warn!(error = %e, "rolling back a failed migration failed");
            }
            let failure = describe(client, m, direction, script, &error, mode, None, true);
            return Err(MigrateError::Failed {
                failure: Box::new(failure),
                source: error,
            });
        }
        if let Err(e) = bookkeeping(client, start.elapsed()) {
            if let Err(e) = client.batch_execute(rollback) {
                tracing::warn!(error = %e, "rolling back a failed migration failed");
            }
            return Err(e);
        }
        if let Err(error) = client.batch_execute(commit) {
            // A deferred constraint failing at commit: the server rolled back.
            let failure = describe_plain(m, direction, script, &error, true);
            return Err(MigrateError::Failed {
                failure: Box::new(failure),
                source: error,
            });
        }
    } else {
        for (index, statement) in split::split(&script.sql).iter().enumerate() {
            if let Err(error) = client.batch_execute(&script.sql[statement.range.clone()]) {
                let failure = describe(
                    client,
                    m,
                    direction,
                    script,
                    &error,
                    mode,
                    Some((index, statement)),
                    index == 0,
                );
                return Err(MigrateError::Failed {
                    failure: Box::new(failure),
                    source: error,
                });
            }
        }
        bookkeeping(client, start.elapsed())?;
    }
    Ok(start.elapsed())
}

fn describe_plain(
    m: &Migration,
    direction: Direction,
    script: &Script,
    error: &postgres::Error,
    rolled_back: bool,
) -> MigrationFailure {
    let db = error.as_db_error();
    MigrationFailure {
        version: m.version().to_owned(),
        name: m.name().to_owned(),
        direction,
        file: script.path.clone(),
        line: None,
        column: None,
        statement: None,
        sqlstate: error.code().map(|c| c.code().to_owned()),
        message: db.map_or_else(|| error.to_string(), |d| d.message().to_owned()),
        detail: db.and_then(|d| d.detail()).map(str::to_owned),
        hint: db.and_then(|d| d.hint()).map(str::to_owned),
        rolled_back,
    }
}

/// The failure of `script`, located in the file: from the server's error
/// position when it gave one, otherwise by finding the failing statement.
/// `statement` is the statement that failed when it was sent alone.
#[allow(clippy::too_many_arguments)]
fn describe(
    client: &mut Client,
    m: &Migration,
    direction: Direction,
    script: &Script,
    error: &postgres::Error,
    mode: Mode,
    statement: Option<(usize, &Statement)>,
    rolled_back: bool,
) -> MigrationFailure {
    let mut failure = describe_plain(m, direction, script, error, rolled_back);
    let statements = split::split(&script.sql);
    let located = match statement {
        Some((index, st)) => Some((index, locate_in(&script.sql, st, error))),
        None => match original_position(error) {
            Some(position) => split::char_position_to_byte(&script.sql, position).map(|byte| {
                let index = statements
                    .iter()
                    .position(|s| byte < s.range.end || s.range.end == script.sql.len())
                    .unwrap_or(statements.len().saturating_sub(1));
                (index, byte)
            }),
            None if error.as_db_error().is_some() => {
                replay(client, script, &statements, error, mode)
            }
            None => None,
        },
    };
    if let Some((index, byte)) = located {
        let (line, column) = split::line_column(&script.sql, byte);
        failure.line = Some(line);
        failure.column = Some(column);
        failure.statement = u32::try_from(index + 1).ok();
    }
    failure
}

fn original_position(error: &postgres::Error) -> Option<u32> {
    match error.as_db_error()?.position()? {
        ErrorPosition::Original(p) => Some(*p),
        ErrorPosition::Internal { .. } => None,
    }
}

/// The byte in the script where the error sent with `statement` alone
/// points, or the statement's first token.
fn locate_in(sql: &str, statement: &Statement, error: &postgres::Error) -> usize {
    original_position(error)
        .and_then(|p| split::char_position_to_byte(&sql[statement.range.clone()], p))
        .map_or(statement.first_token, |b| statement.range.start + b)
}

/// Re-runs the (already rolled back) script statement by statement in a
/// throw-away transaction to find which statement fails with the same
/// SQLSTATE.
fn replay(
    client: &mut Client,
    script: &Script,
    statements: &[Statement],
    error: &postgres::Error,
    mode: Mode,
) -> Option<(usize, usize)> {
    let (begin, end) = match mode {
        Mode::Own => ("BEGIN", "ROLLBACK"),
        Mode::Nested => (
            "SAVEPOINT pg_isolate_locate",
            "ROLLBACK TO SAVEPOINT pg_isolate_locate; RELEASE SAVEPOINT pg_isolate_locate",
        ),
    };
    if !script.transactional && mode == Mode::Own {
        return None;
    }
    client.batch_execute(begin).ok()?;
    let mut found = None;
    for (index, statement) in statements.iter().enumerate() {
        if let Err(again) = client.batch_execute(&script.sql[statement.range.clone()]) {
            if again.code() == error.code() {
                found = Some((index, locate_in(&script.sql, statement, &again)));
            }
            break;
        }
    }
    if let Err(e) = client.batch_execute(end) {
        tracing::warn!(error = %e, "ending the statement-locating transaction failed");
    }
    found
}
