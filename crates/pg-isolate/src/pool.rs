//! The warm pool: clones of a template made ahead of demand on the server,
//! shared by every process, claimed atomically by renaming, and refilled by
//! a helper process that outlives the one that claimed.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::SimpleQueryMessage;
use registry::ProcessIdentity;

use crate::databases::drop_sql;
use crate::markers::Markers;
use crate::owner::{DatabaseKind, OwnerRecord, TOOL};
use crate::testdb::TestDatabase;
use crate::{Error, Server, Template, birth, names};

/// Optional settings of [`Template::pool`].
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The fewest clones to keep ready (default 4; 0: no pool). The pool
    /// grows to the demand it has seen: as many clones as the largest of
    /// the last three bursts of claims took (claims less than three
    /// seconds apart, a test run), and half of that again, up to 64.
    pub size: usize,
    /// The most disk the ready clones may use together, estimated from the
    /// template's size (default 2 GiB); caps the pool for big templates.
    pub max_bytes: u64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            size: 4,
            max_bytes: 2 << 30,
        }
    }
}

/// The most clones demand can ask a pool to keep ready.
const MAX_DEMAND: u64 = 64;

/// Released clones that start a refill (which drops them first) even when
/// the pool is not short.
const TRASH_BATCH: usize = 8;

/// Claims further apart than this start a new burst (a new test run).
const BURST_GAP_MS: u64 = 3_000;

/// A warm pool of clones of one template.
///
/// The clones live on the server (named `<prefix>p_<template key>_<random>`
/// and carrying owner records of kind [`DatabaseKind::Pool`]), so every
/// process using the same template shares them, and a clone is never
/// handed out twice. On the embedded server each ready clone also has a
/// marker file beside the server's state, written once the clone is
/// committed, and [`Pool::test_database`] claims a clone by renaming its
/// marker to one naming the claiming process: no round trip to the server
/// (gc treats a claimed clone as that process's test database). For a
/// server given by URL a claim renames a clone to a fresh test database
/// name in one transaction with its new owner record. When the pool is
/// empty a clone is made on the spot.
///
/// A claim that leaves fewer than half the pool's clones starts a refill
/// to the full size, unless one is running (one refills at a time across
/// all processes, under an advisory lock). On the embedded server the
/// refill is a `psql` process of its own that creates the clones (and
/// their markers) and exits, so it carries on after the claiming process
/// has exited (a test process under nextest lives for milliseconds); for a
/// server given by URL it is a thread of the claiming process. The pool's
/// size follows demand: each process records its claims in a small file
/// beside the server's state, and the pool is refilled to as many clones
/// as the largest of the last three bursts of claims took, and half of that
/// again (at least [`PoolOptions::size`], at most 64 and
/// [`PoolOptions::max_bytes`]), so the next run of a test suite finds a
/// clone ready for every test even before the last refill has finished.
#[derive(Debug)]
pub struct Pool {
    template: Template,
    shared: Arc<Shared>,
    /// `false` for the copies threads work with: only the caller's handle
    /// stops the refill thread when dropped.
    owns: bool,
}

#[derive(Debug)]
struct Shared {
    /// The literal `SELECT count(*) ...` of this template's ready clones.
    ready_sql: String,
    /// `LIKE` pattern matching this template's pool clones.
    pattern: String,
    /// Name prefix of this template's pool clones.
    name_prefix: String,
    /// Two-key advisory lock of the refill (a separate space from the
    /// template build lock).
    lock: (i32, i32),
    options: PoolOptions,
    refill: Mutex<Option<Refiller>>,
    last_error: Mutex<Option<String>>,
    /// Tells a refill thread to stop after the clone it is making.
    stop: AtomicBool,
    /// Whether the template is known to exist complete (see
    /// [`Pool::of_key`]).
    checked: AtomicBool,
    /// The embedded server's ready markers (claims without a round trip);
    /// `None`: claims rename clones on the server.
    markers: Option<Markers>,
}

/// A refill this handle started.
#[derive(Debug)]
enum Refiller {
    Psql(Child),
    Thread(JoinHandle<Result<(), Error>>),
}

impl Template {
    /// A warm pool of clones of this template; a refill to its size starts
    /// now, in the background.
    pub fn pool(&self, options: PoolOptions) -> Result<Pool, Error> {
        let pool = Pool::new(self.clone(), options, true);
        pool.refill_if_short()?;
        Ok(pool)
    }
}

impl Pool {
    /// A pool of the template of key `key` (hex), which need not exist:
    /// nothing is looked up until a claim finds no clone, and then
    /// [`Pool::test_database`] fails with [`Error::DatabaseNotFound`] when
    /// the template is gone. For callers that remember a key from an
    /// earlier run (`#[pg_isolate::test]`).
    pub(crate) fn of_key(server: &Server, key: &str, options: PoolOptions) -> Self {
        Self::new(Template::known(server, key), options, false)
    }

    fn new(template: Template, options: PoolOptions, checked: bool) -> Self {
        let name_prefix = names::fit(&format!(
            "{}p_{}_",
            template.server().prefix(),
            template.key()
        ));
        let pattern = format!("{}%", names::like_escape(&name_prefix));
        let key = u64::from_str_radix(template.key(), 16).unwrap_or(0);
        let lock = (
            i32::from_be_bytes(((key >> 32) as u32).to_be_bytes()),
            i32::from_be_bytes((key as u32).to_be_bytes()),
        );
        let ready_sql = format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE {} AND NOT datistemplate \
             AND shobj_description(oid, 'pg_database') LIKE {}",
            names::literal(&pattern),
            names::literal(POOL_KIND_LIKE),
        );
        // Markers need the refill that writes them: a `psql` of the
        // embedded server.
        let markers = Markers::of(template.server(), template.key())
            .filter(|_| template.server().psql().is_some())
            .filter(|markers| match markers.ensure() {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(%error, "no pool markers; claiming on the server");
                    false
                }
            });
        Self {
            template,
            shared: Arc::new(Shared {
                ready_sql,
                pattern,
                name_prefix,
                lock,
                options,
                refill: Mutex::default(),
                last_error: Mutex::default(),
                stop: AtomicBool::new(false),
                checked: AtomicBool::new(checked),
                markers,
            }),
            owns: true,
        }
    }

    /// A private database cloned from the template: a ready clone from the
    /// pool when there is one, else a fresh clone.
    pub fn test_database(&self) -> Result<TestDatabase, Error> {
        let claimed = self.claim()?;
        let after = self.after_claim();
        let mut db = match claimed {
            Some(db) => db,
            None if self.shared.checked.load(Ordering::SeqCst) => self.template.test_database()?,
            None => {
                // A handle made from a remembered key: make sure the
                // template is there and complete before cloning it.
                let server = self.template.server();
                let template = server
                    .template_by_key(self.template.key())?
                    .ok_or_else(|| Error::DatabaseNotFound {
                        database: self.template.name().to_owned(),
                    })?;
                self.shared.checked.store(true, Ordering::SeqCst);
                template.test_database()?
            }
        };
        db.after_claim = after;
        Ok(db)
    }

    /// Counts the claim into the demand and starts a refill when the pool
    /// is short (or holds released clones to drop), on a thread of its own:
    /// the caller has its database already. The claimed database joins the
    /// thread when it is done with (a test process may live for less time
    /// than the thread takes).
    fn after_claim(&self) -> Option<JoinHandle<()>> {
        let pool = Self {
            template: self.template.clone(),
            shared: Arc::clone(&self.shared),
            owns: false,
        };
        let spawned = std::thread::Builder::new()
            .name("pg-isolate-claim".to_owned())
            .spawn(move || {
                let demand = pool.note_claim();
                if let Err(error) = pool
                    .status()
                    .and_then(|(ready, refilling)| pool.refill_from(ready, refilling, demand))
                {
                    tracing::warn!(template = pool.template.name(), %error, "cannot refill the pool");
                }
            });
        spawned
            .inspect_err(|error| tracing::warn!(%error, "cannot start the pool's refill thread"))
            .ok()
    }

    /// Claims a ready clone: on the embedded server by renaming a ready
    /// marker (see the `markers` module; no round trip), else in one round
    /// trip: a `DO` block tries up to
    /// eight candidates in random order, renaming one to a fresh test
    /// database name and writing its owner record in the same transaction;
    /// a candidate another process renamed first fails with
    /// `undefined_database` (or `object_in_use`) and the next is tried.
    /// Only a database whose owner record is a pg-isolate record of kind
    /// [`DatabaseKind::Pool`] is a candidate: a database that merely has a
    /// matching name (a named database, one without a record, one being
    /// created) is never claimed.
    fn claim(&self) -> Result<Option<TestDatabase>, Error> {
        let server = self.template.server();
        if let Some(markers) = &self.shared.markers {
            return Ok(markers.claim().map(|(name, marker)| {
                tracing::debug!(database = %name, "claimed pool clone by its marker");
                let mut db = TestDatabase::adopt(server, name);
                db.marker = Some(marker);
                db
            }));
        }
        let mut record = OwnerRecord::new(DatabaseKind::Test, None);
        record.template_key = Some(self.template.key().to_owned());
        let name = TestDatabase::fresh_name(server);
        let sql = format!(
            "DO $pg_isolate$ DECLARE candidate text; note text; BEGIN \
               FOR candidate, note IN SELECT datname, shobj_description(oid, 'pg_database') \
                 FROM pg_database \
                 WHERE datname LIKE {pattern} AND NOT datistemplate \
                   AND shobj_description(oid, 'pg_database') LIKE {kind_like} \
                 ORDER BY random() LIMIT 8 LOOP \
                 BEGIN \
                   IF note::jsonb ->> 'tool' IS DISTINCT FROM {tool} \
                     OR note::jsonb ->> 'kind' IS DISTINCT FROM {kind} THEN \
                     CONTINUE; \
                   END IF; \
                   EXECUTE format('ALTER DATABASE %I RENAME TO %I', candidate, {name}); \
                   EXECUTE format('COMMENT ON DATABASE %I IS %L', {name}, {record}); \
                   PERFORM set_config('pg_isolate.claimed', candidate, true); \
                   RETURN; \
                 EXCEPTION WHEN SQLSTATE '3D000' OR SQLSTATE '55006' OR SQLSTATE '42P04' \
                   OR SQLSTATE '22P02' THEN NULL; \
                 END; \
               END LOOP; \
             END $pg_isolate$; \
             SELECT coalesce(current_setting('pg_isolate.claimed', true), '')",
            pattern = names::literal(&self.shared.pattern),
            name = names::literal(&name),
            record = names::literal(&record.to_json()),
            kind_like = names::literal(POOL_KIND_LIKE),
            tool = names::literal(TOOL),
            kind = names::literal(POOL_KIND),
        );
        let claimed = server.with_admin(|client| {
            let messages = client
                .simple_query(&sql)
                .map_err(|e| Error::sql("claiming a pool clone of", self.template.name(), e))?;
            Ok(messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            }))
        })?;
        Ok(claimed.filter(|c| !c.is_empty()).map(|clone| {
            tracing::debug!(database = %name, %clone, "claimed pool clone");
            TestDatabase::adopt(server, name)
        }))
    }

    /// The number of ready clones of this template (on the embedded
    /// server: clones with a ready marker, the ones a claim can take).
    pub fn ready(&self) -> Result<usize, Error> {
        Ok(self.status()?.0)
    }

    /// Ready clones and whether a refill will still count them (see the
    /// free function [`status`]).
    fn status(&self) -> Result<(usize, bool), Error> {
        status(&self.template, &self.shared)
    }

    /// Waits until the pool holds its full size of ready clones (as demand
    /// and [`PoolOptions::max_bytes`] set it) or `timeout` passes; returns
    /// the number ready. Useful before timing-sensitive work.
    pub fn wait_filled(&self, timeout: Duration) -> Result<usize, Error> {
        if crate::rt::in_runtime() {
            return crate::rt::off_runtime(|| self.wait_filled(timeout));
        }
        let deadline = Instant::now() + timeout;
        let target = self.target(&self.demand())?;
        loop {
            let (ready, refilling) = self.status()?;
            if ready >= target || Instant::now() >= deadline {
                return Ok(ready);
            }
            if !refilling {
                self.start_refill(target)?;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last error of a refill this handle started, once it ended.
    pub fn last_error(&self) -> Option<String> {
        self.reap();
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The template the pool clones.
    pub fn template(&self) -> &Template {
        &self.template
    }

    fn refill_if_short(&self) -> Result<(), Error> {
        let (ready, refilling) = self.status()?;
        self.refill_from(ready, refilling, self.demand())
    }

    fn refill_from(&self, ready: usize, refilling: bool, demand: Demand) -> Result<(), Error> {
        if refilling {
            return Ok(());
        }
        // Refilled once half of the pool is taken, not on every claim: a
        // refill competes with the tests for the machine (a clone costs
        // tens of milliseconds of the server's time and two checkpoints),
        // and a run that fits in the pool is better served by a refill
        // after it.
        let target = self.target(&demand)?;
        let trash = self.shared.markers.as_ref().map_or(0, |m| m.trash().len());
        if ready < target.div_ceil(2) || trash >= TRASH_BATCH {
            self.start_refill(target)?;
        }
        Ok(())
    }

    /// How many clones the pool should hold: its size or the demand seen,
    /// whichever is more, within the disk bound.
    fn target(&self, demand: &Demand) -> Result<usize, Error> {
        let size = self.shared.options.size as u64;
        if size == 0 {
            return Ok(0);
        }
        let per_clone = match demand.per_clone {
            0 => self.measure_clone()?,
            known => known,
        };
        let by_bytes = self.shared.options.max_bytes / per_clone.max(1);
        let wanted = size.max(demand.want().min(MAX_DEMAND));
        Ok(usize::try_from(wanted.min(by_bytes)).unwrap_or(usize::MAX))
    }

    /// The template's size (what a clone costs on disk), remembered in the
    /// demand file.
    fn measure_clone(&self) -> Result<u64, Error> {
        let template = self.template.name();
        let size: i64 = self.template.server().with_admin(|client| {
            Ok(client
                .query_one("SELECT pg_database_size($1::text)", &[&template])
                .map_err(|e| Error::sql("measuring template", template, e))?
                .get(0))
        })?;
        let size = u64::try_from(size).unwrap_or(0);
        self.update_demand(|demand| demand.per_clone = size);
        Ok(size)
    }

    /// Starts a refill to `target` unless one this handle started still
    /// runs: a `psql` of its own on the embedded server, else a thread.
    fn start_refill(&self, target: usize) -> Result<(), Error> {
        let mut running = self
            .shared
            .refill
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match running.take().and_then(|refiller| self.finished(refiller)) {
            // A refill thread of this handle still runs: it counts again
            // before each clone.
            Some(thread @ Refiller::Thread(_)) => {
                *running = Some(thread);
                return Ok(());
            }
            // A psql of this handle still runs: the new one queues behind
            // it (see `Markers::refill_queued`); the old one is collected
            // by a thread of its own.
            Some(Refiller::Psql(child)) => reap_later(child),
            None => {}
        }
        let server = self.template.server();
        *running = Some(match server.psql() {
            Some(command) => Refiller::Psql(self.spawn_psql(command, target)?),
            None => {
                let template = self.template.clone();
                let shared = Arc::clone(&self.shared);
                Refiller::Thread(
                    std::thread::Builder::new()
                        .name("pg-isolate-pool".to_owned())
                        .spawn(move || fill(&template, &shared, target))
                        .map_err(|e| {
                            Error::io(
                                "starting the pool refill thread for",
                                self.template.name(),
                                e,
                            )
                        })?,
                )
            }
        });
        Ok(())
    }

    /// Starts `psql` (in a process group of its own, so that it outlives
    /// this process and its terminal) and writes it the refill script,
    /// whose clones' birth names name the `psql` process.
    fn spawn_psql(
        &self,
        mut command: std::process::Command,
        target: usize,
    ) -> Result<Child, Error> {
        // Its messages go to a file, not a pipe: this process may be gone
        // long before the refill is (a pipe would kill it with SIGPIPE).
        let log = match self.log_path().map(std::fs::File::create) {
            Some(Ok(file)) => Stdio::from(file),
            _ => Stdio::null(),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::io(
                    "starting psql to refill the pool of",
                    self.template.name(),
                    e,
                )
            })?;
        let creator = ProcessIdentity::of_pid(child.id()).unwrap_or(ProcessIdentity {
            pid: child.id(),
            start_time: 0,
        });
        if let Some(markers) = &self.shared.markers {
            markers.note_refill(creator);
        }
        if let Some(mut stdin) = child.stdin.take() {
            // psql reads the script as it runs it, beginning with a wait for
            // the pool's lock (held by the refill queued before it): this
            // process must never wait for that, so the script is cut to what
            // the pipe holds, grown to hold a full refill. (A pipe's default
            // 64 KiB, with psql's read buffer, held some 50 rounds of a
            // benchmark's pool, which asked for 120: a claiming test waited
            // 12 s.)
            let capacity = grow_pipe(&stdin, REFILL_PIPE_BYTES);
            let script = self.refill_script(target, creator, capacity);
            // A psql that failed to start reports it in its log (read when
            // it is reaped); the script is then simply not read.
            let _ = stdin.write_all(script.as_bytes());
        }
        tracing::debug!(
            template = self.template.name(),
            target,
            pid = child.id(),
            "started pool refill"
        );
        Ok(child)
    }

    /// The `psql` script of a refill to `target` clones: under the pool's
    /// advisory lock (with markers: queued behind a refill that holds it, so a
    /// claim made after that one's last count is still seen; without: not
    /// at all when another refill holds it), up to
    /// twice `target` rounds of "count the ready clones; if short, create
    /// one" (clones are claimed meanwhile), then the drops of the clones
    /// tests released; each clone created as
    /// [`Server::create_with_record`] does, under a birth name naming the
    /// `psql` process. At most `max_len` bytes: rounds and drops that do not
    /// fit are left to the next refill.
    fn refill_script(&self, target: usize, creator: ProcessIdentity, max_len: usize) -> String {
        let server = self.template.server();
        let (k1, k2) = self.shared.lock;
        // With markers, refills queue for the lock and say when they hold
        // it; without, one that finds the lock taken does nothing.
        let mut script = String::from("SET client_min_messages = warning;\n");
        match &self.shared.markers {
            Some(markers) => script.push_str(&format!(
                "SELECT pg_advisory_lock({k1}, {k2});\n\\o {}\nSELECT {};\n\\o\n\\if true\n",
                Markers::psql_arg(&markers.locked_file()),
                creator.pid
            )),
            None => script.push_str(&format!(
                "SELECT pg_try_advisory_lock({k1}, {k2}) AS locked \\gset\n\\if :locked\n"
            )),
        }
        // What counts as ready: the ready markers (listed by the server),
        // else the clones on the server.
        let ready = match &self.shared.markers {
            Some(markers) => format!(
                "SELECT count(*) FROM pg_ls_dir({}, true, false)",
                names::literal(&markers.ready_dir().display().to_string())
            ),
            None => self.shared.ready_sql.clone(),
        };
        // Then the clones tests released (see `TestDatabase::release`):
        // a test waiting for a clone matters more than disk for a while.
        // (At most half the script: the rest are dropped by the next.)
        let mut tail = String::new();
        if let Some(markers) = &self.shared.markers {
            for (name, _) in markers.trash() {
                let drop = format!("{};\n", drop_sql(&name, server.major_version()));
                if script.len() + tail.len() + drop.len() > max_len / 2 {
                    break;
                }
                tail.push_str(&drop);
            }
        }
        tail.push_str("\\endif\n");
        for _ in 0..target.saturating_mul(2) {
            let (name, record) = new_clone(&self.template, &self.shared, creator);
            let birth = birth::birth_name_for(server.prefix(), creator);
            let (create, finish) =
                server.creation_sql(&birth, &name, Some(self.template.name()), None, &record);
            let mut round = format!(
                "SELECT ({ready}) < {target} AS more \\gset\n\\if :more\n{create};\nBEGIN;\n{finish};\nCOMMIT;\n"
            );
            if let Some(markers) = &self.shared.markers {
                // The marker, made once the clone is committed, holds its oid.
                round.push_str(&format!(
                    "\\o {}\nSELECT oid FROM pg_database WHERE datname = {};\n\\o\n",
                    Markers::psql_arg(&markers.ready_dir().join(&name)),
                    names::literal(&name)
                ));
            }
            round.push_str("\\endif\n");
            // The rounds that fit; the next claim starts another refill.
            if script.len() + round.len() + tail.len() > max_len {
                break;
            }
            script.push_str(&round);
        }
        script.push_str(&tail);
        script
    }

    /// Collects a finished refill (keeping its error); gives back one
    /// that still runs.
    fn finished(&self, refiller: Refiller) -> Option<Refiller> {
        let error = match refiller {
            Refiller::Psql(mut child) => match child.try_wait() {
                Ok(None) => return Some(Refiller::Psql(child)),
                Ok(Some(status)) if status.success() => None,
                Ok(Some(status)) => {
                    let log = self
                        .log_path()
                        .and_then(|path| std::fs::read_to_string(path).ok())
                        .unwrap_or_default();
                    Some(format!(
                        "psql refilling the pool failed ({status}): {}",
                        log.trim()
                    ))
                }
                Err(error) => Some(format!("waiting for the pool refill: {error}")),
            },
            Refiller::Thread(handle) => {
                if !handle.is_finished() {
                    return Some(Refiller::Thread(handle));
                }
                match handle.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error.to_string()),
                    Err(_) => Some("the pool refill thread panicked".to_owned()),
                }
            }
        };
        if let Some(error) = &error {
            tracing::warn!(template = self.template.name(), %error, "refilling the pool failed");
        }
        *self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
        None
    }

    fn reap(&self) {
        let mut running = self
            .shared
            .refill
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(refiller) = running.take() {
            *running = self.finished(refiller);
        }
    }

    /// A file of this template's pool beside the server's state:
    /// `pool-<key>.<extension>`.
    fn state_file(&self, extension: &str) -> Option<PathBuf> {
        let key = self.template.key();
        Some(
            self.template
                .server()
                .state_dir()?
                .join(format!("pool-{key}.{extension}")),
        )
    }

    /// The log of this template's last `psql` refill.
    fn log_path(&self) -> Option<PathBuf> {
        self.state_file("log")
    }

    /// The demand file of this template's pool.
    fn demand_path(&self) -> Option<PathBuf> {
        self.state_file("demand")
    }

    fn demand(&self) -> Demand {
        self.demand_path()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| Demand::parse(&text))
            .unwrap_or_default()
    }

    /// Counts a claim into the demand (the current burst) and returns it.
    fn note_claim(&self) -> Demand {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.update_demand(|demand| demand.claim(now))
    }

    /// Read-modify-write of the demand file under its lock; without a
    /// state directory (or on any I/O error) the demand is not kept.
    fn update_demand(&self, change: impl FnOnce(&mut Demand)) -> Demand {
        let mut demand = Demand::default();
        let Some(path) = self.demand_path() else {
            change(&mut demand);
            return demand;
        };
        let result = (|| -> std::io::Result<()> {
            use std::io::Seek as _;
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            file.lock()?;
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            demand = Demand::parse(&text);
            change(&mut demand);
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(demand.to_string().as_bytes())
        })();
        if let Err(error) = result {
            tracing::debug!(path = %path.display(), %error, "cannot record the pool's demand");
        }
        demand
    }
}

impl Drop for Pool {
    /// A running `psql` refill carries on (collected by a thread here, or
    /// by init once this process has exited); a refill thread stops after
    /// the clone it is making.
    fn drop(&mut self) {
        if !self.owns {
            return;
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        let running = self
            .shared
            .refill
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match running {
            Some(Refiller::Psql(child)) => reap_later(child),
            Some(Refiller::Thread(handle)) => crate::rt::off_runtime(|| {
                let _ = handle.join();
            }),
            None => {}
        }
    }
}

/// The pipe a refill's script is written to is grown to this (Linux lets
/// anyone grow a pipe to 1 MiB by default): a round takes 1-3 KiB (with
/// the paths of the marker files), so the 128 rounds of the most clones
/// demand asks for fit.
const REFILL_PIPE_BYTES: usize = 1 << 20;

/// Grows `pipe` towards `bytes`; returns what it holds now (64 KiB, the
/// default, when it cannot be grown or where pipes cannot be grown).
#[cfg(not(target_os = "linux"))]
fn grow_pipe(_pipe: &impl std::os::fd::AsFd, _bytes: usize) -> usize {
    64 << 10
}

/// Grows `pipe` towards `bytes`; returns what it holds now (64 KiB, the
/// default, when it cannot be grown; less when the user's pipes are
/// limited).
#[cfg(target_os = "linux")]
fn grow_pipe(pipe: &impl std::os::fd::AsFd, bytes: usize) -> usize {
    use nix::fcntl::{FcntlArg, fcntl};
    let size = |arg| fcntl(pipe, arg).ok().and_then(|n| usize::try_from(n).ok());
    let grown = i32::try_from(bytes)
        .ok()
        .and_then(|bytes| size(FcntlArg::F_SETPIPE_SZ(bytes)));
    grown
        .or_else(|| size(FcntlArg::F_GETPIPE_SZ))
        .unwrap_or(64 << 10)
}

/// Collects a `psql` refill that may still run on a thread of its own
/// (it carries on; once this process has exited, init collects it).
fn reap_later(mut child: Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = std::thread::Builder::new()
            .name("pg-isolate-reap".to_owned())
            .spawn(move || child.wait());
    }
}

/// What a pool's claims asked for, kept in its demand file as
/// `last claims previous per_clone earlier` (milliseconds since the epoch,
/// claims in the current burst, claims of the burst before, bytes of a
/// clone, claims of the burst before that).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Demand {
    last: u64,
    claims: u64,
    previous: u64,
    per_clone: u64,
    earlier: u64,
}

impl Demand {
    fn parse(text: &str) -> Self {
        let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0));
        let mut next = || fields.next().unwrap_or(0);
        Self {
            last: next(),
            claims: next(),
            previous: next(),
            per_clone: next(),
            earlier: next(),
        }
    }

    fn claim(&mut self, now: u64) {
        if now.saturating_sub(self.last) > BURST_GAP_MS && self.claims > 0 {
            self.earlier = self.previous;
            self.previous = self.claims;
            self.claims = 0;
        }
        self.claims = self.claims.saturating_add(1);
        self.last = now;
    }

    /// Clones the pool should hold for the next burst: the most of the
    /// last three bursts (a `cargo test` and a `cargo nextest run` right
    /// after it are one burst, alone each another), and half of that again.
    /// The headroom covers a burst that comes before the refill after the
    /// last one has finished: on a server busy with other work, a clone can
    /// take a second.
    fn want(&self) -> u64 {
        let most = self.claims.max(self.previous).max(self.earlier);
        most.saturating_add(most.div_ceil(2))
    }
}

impl std::fmt::Display for Demand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.last, self.claims, self.previous, self.per_clone, self.earlier
        )
    }
}

/// The `kind` value of a pool clone's owner record.
const POOL_KIND: &str = "pool";

/// A `LIKE` pattern matching the comments of pool clones: their owner
/// records, serialised with `tool` and `kind` first (checked by a unit
/// test). The claim also checks the parsed JSON.
const POOL_KIND_LIKE: &str = r#"{"tool":"pg-isolate","kind":"pool",%"#;

/// Ready clones of the pool and whether a refill will still count them
/// (for a server given by URL: whether a refill holds the pool's lock; on
/// the embedded server: ready markers and whether a refill is queued, see
/// [`Markers::refill_queued`]).
fn status(template: &Template, shared: &Shared) -> Result<(usize, bool), Error> {
    if let Some(markers) = &shared.markers {
        return Ok((markers.ready(), markers.refill_queued()));
    }
    let (k1, k2) = shared.lock;
    let sql = format!(
        "SELECT ({})::text, (EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
           AND classid = '{}'::oid AND objid = '{}'::oid AND objsubid = 2))::text",
        shared.ready_sql, k1 as u32, k2 as u32
    );
    template.server().with_admin(|client| {
        let messages = client
            .simple_query(&sql)
            .map_err(|e| Error::sql("counting pool clones of", template.name(), e))?;
        Ok(messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some((
                    row.get(0).and_then(|n| n.parse().ok()).unwrap_or(0),
                    row.get(1) == Some("true"),
                )),
                _ => None,
            })
            .unwrap_or((0, false)))
    })
}

/// A fresh clone name and its owner record, created by `creator`.
fn new_clone(
    template: &Template,
    shared: &Shared,
    creator: ProcessIdentity,
) -> (String, OwnerRecord) {
    let name = names::fit(&format!("{}{}", shared.name_prefix, names::token()));
    let mut record = OwnerRecord::new(DatabaseKind::Pool, None);
    record.pid = creator.pid;
    record.start_time = creator.start_time;
    record.template_key = Some(template.key().to_owned());
    (name, record)
}

/// A refill from a thread of this process (a server given by URL): under
/// the pool's advisory lock, clones until `target` are ready.
fn fill(template: &Template, shared: &Shared, target: usize) -> Result<(), Error> {
    let server = template.server();
    let mut conn = server.admin_client()?;
    let (k1, k2) = shared.lock;
    let got: bool = conn
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&k1, &k2])
        .map_err(|e| Error::sql("locking the pool of", template.name(), e))?
        .get(0);
    if !got {
        return Ok(());
    }
    let me = ProcessIdentity::current();
    let result = (|| {
        while !shared.stop.load(Ordering::SeqCst) {
            if status(template, shared)?.0 >= target {
                break;
            }
            let (name, record) = new_clone(template, shared, me);
            match server.create_with_record(&name, Some(template.name()), None, &record) {
                Ok(()) | Err(Error::DatabaseExists { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    })();
    let _ = conn.execute("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2]);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clone_pattern_matches_exactly_pool_records() {
        let like = |text: &str| {
            let prefix = POOL_KIND_LIKE.strip_suffix('%').unwrap_or(POOL_KIND_LIKE);
            !POOL_KIND_LIKE.contains('_') && text.starts_with(prefix)
        };
        let mut record = OwnerRecord::new(DatabaseKind::Pool, None);
        record.template_key = Some("00ff".to_owned());
        assert!(like(&record.to_json()), "{}", record.to_json());
        for kind in [
            DatabaseKind::Named,
            DatabaseKind::Test,
            DatabaseKind::Template,
        ] {
            assert!(!like(&OwnerRecord::new(kind, Some("pool")).to_json()));
        }
        assert_eq!(
            serde_json::to_value(DatabaseKind::Pool).ok(),
            Some(serde_json::Value::from(POOL_KIND))
        );
    }

    #[test]
    fn demand_follows_the_last_burst() {
        let mut demand = Demand::parse("");
        assert_eq!(demand, Demand::default());
        for i in 0..20 {
            demand.claim(1_000 + i * 50);
        }
        assert_eq!((demand.claims, demand.want()), (20, 30));
        // The next run: its first claim expects the whole burst again.
        demand.claim(60_000);
        assert_eq!((demand.claims, demand.previous, demand.want()), (1, 20, 30));
        for i in 0..5 {
            demand.claim(60_100 + i);
        }
        // Smaller runs lower the demand once the big one is three runs
        // back.
        demand.claim(120_000);
        assert_eq!(demand.want(), 30);
        demand.claim(180_000);
        assert_eq!(demand.want(), 9);
        demand.per_clone = 7 << 20;
        assert_eq!(Demand::parse(&demand.to_string()), demand);
        assert_eq!(
            Demand::parse("garbage 3"),
            Demand {
                claims: 3,
                ..Demand::default()
            }
        );
    }
}
