//! Load: many `isolane create` / `remove` loops at once, as real processes,
//! for a bounded time (`ISOLANE_SOAK_SECONDS`, default 60), while a monitor
//! checks that no two live worktrees ever share a port, a path or a
//! database and that the registry always parses. Afterwards nothing may be
//! left: no entry, worktree, branch, lease or database, and `doctor` agrees.
//!
//! The figures (operations, most worktrees alive at once, collisions) are
//! printed and, when `ISOLANE_SOAK_REPORT` names a file, appended to it as
//! one JSON line per test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use test_support::{GitRepo, TestResult};

use crate::{database_names, isolane, json, leases, output, repo_with_config};

/// Two named ports, the embedded database enabled (the default).
const WITH_DATABASE: &str = "[ports]\nnames = [\"APP_PORT\", \"API_PORT\"]\n";

/// Three named ports and no database, for the several-repositories soak.
const WITHOUT_DATABASE: &str =
    "[ports]\nnames = [\"APP_PORT\", \"API_PORT\", \"WS_PORT\"]\n\n[database]\nenabled = false\n";

#[test]
fn sixteen_create_remove_loops_never_collide() -> TestResult {
    let seconds = soak_seconds()?;
    let repo = repo_with_config(WITH_DATABASE)?;
    let soak = Soak::new(vec![Target::new(&repo, 0)?]);
    let _cleanup = Cleanup(&soak.targets);
    let figures = soak.run(16, Duration::from_secs(seconds))?;
    figures.report("sixteen_create_remove_loops_never_collide", seconds)?;
    soak.failed()?;
    soak.check_nothing_left(true)?;
    Ok(())
}

#[test]
fn several_repositories_keep_ports_unique_host_wide() -> TestResult {
    let seconds = (soak_seconds()? / 2).max(1);
    let repos = (0..3)
        .map(|_| repo_with_config(WITHOUT_DATABASE))
        .collect::<TestResult<Vec<_>>>()?;
    let targets = repos
        .iter()
        .enumerate()
        .map(|(index, repo)| Target::new(repo, index))
        .collect::<TestResult<Vec<_>>>()?;
    let soak = Soak::new(targets);
    let _cleanup = Cleanup(&soak.targets);
    let figures = soak.run(4, Duration::from_secs(seconds))?;
    figures.report("several_repositories_keep_ports_unique_host_wide", seconds)?;
    soak.failed()?;
    soak.check_nothing_left(false)?;
    Ok(())
}

/// `ISOLANE_SOAK_SECONDS`, default 60.
fn soak_seconds() -> TestResult<u64> {
    match std::env::var("ISOLANE_SOAK_SECONDS") {
        Ok(value) => Ok(value
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("ISOLANE_SOAK_SECONDS={value:?}: {e}"))?
            .max(1)),
        Err(_) => Ok(60),
    }
}

/// A tag that keeps this run's names apart from earlier (perhaps aborted)
/// runs sharing the embedded server and the host-wide leases.
fn run_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{:06x}",
        (nanos ^ std::process::id().rotate_left(12)) & 0xff_ffff
    )
}

/// One repository under load.
#[derive(Debug)]
struct Target {
    index: usize,
    root: PathBuf,
    registry: PathBuf,
    /// What isolane names this repository's lease owners and database
    /// labels with (`isolane-<hash of the git common dir>-`).
    owner_prefix: String,
    /// Part of every identifier created here.
    tag: String,
}

impl Target {
    fn new(repo: &GitRepo, index: usize) -> TestResult<Self> {
        let common_dir = repo.path().join(".git").canonicalize()?;
        let digest = Sha256::digest(common_dir.as_os_str().as_encoded_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            index,
            root: repo.path().to_owned(),
            registry: common_dir.join("isolane").join("registry.json"),
            owner_prefix: format!("isolane-{hash}-"),
            tag: format!("{}r{index}", run_tag()),
        })
    }
}

/// A worktree that a `create` reported and whose `remove` has not started.
#[derive(Debug, Clone)]
struct Held {
    target: usize,
    ports: BTreeMap<String, u16>,
    path: String,
    database: Option<String>,
}

impl Held {
    fn from_create(target: usize, created: &serde_json::Value) -> TestResult<(String, Self)> {
        let id = created["id"].as_str().ok_or("create: no id")?.to_owned();
        Ok((
            id,
            Self {
                target,
                ports: ports_of(&created["ports"])?,
                path: created["path"]
                    .as_str()
                    .ok_or("create: no path")?
                    .to_owned(),
                database: created["database"].as_str().map(str::to_owned),
            },
        ))
    }
}

/// A `{"NAME": port}` object.
fn ports_of(value: &serde_json::Value) -> TestResult<BTreeMap<String, u16>> {
    value
        .as_object()
        .ok_or_else(|| format!("ports is not an object: {value}"))?
        .iter()
        .map(|(name, port)| {
            let port = port
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("port {name}={port} is not a port"))?;
            Ok((name.clone(), port))
        })
        .collect()
}

/// What the workers and the monitor share.
#[derive(Debug)]
struct Soak {
    targets: Vec<Target>,
    /// Every worktree alive right now, by id (ids are unique across the
    /// targets: they carry the target's tag).
    live: Mutex<BTreeMap<String, Held>>,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    creates: AtomicU64,
    removes: AtomicU64,
    max_live: AtomicUsize,
    collisions: AtomicU64,
    monitor_rounds: AtomicU64,
    registry_reads: AtomicU64,
}

/// The figures of one soak.
#[derive(Debug)]
struct Figures {
    workers: usize,
    repositories: usize,
    creates: u64,
    removes: u64,
    max_live: usize,
    collisions: u64,
    monitor_rounds: u64,
    registry_reads: u64,
    seconds: f64,
}

impl Figures {
    /// Prints the figures (captured test output) and appends them to
    /// `ISOLANE_SOAK_REPORT`.
    #[expect(clippy::print_stdout, reason = "the figures are the test's report")]
    fn report(&self, test: &str, requested: u64) -> TestResult {
        let line = serde_json::json!({
            "test": test,
            "requested_seconds": requested,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "repositories": self.repositories,
            "workers": self.workers,
            "creates": self.creates,
            "removes": self.removes,
            "max_live": self.max_live,
            "collisions": self.collisions,
            "monitor_rounds": self.monitor_rounds,
            "registry_reads": self.registry_reads,
        });
        println!(
            "soak {test}: {} creates, {} removes by {} worker(s) in {} repositor(ies) in {:.1}s; \
             at most {} worktrees alive at once; {} collision(s); {} monitor rounds, {} registry reads",
            self.creates,
            self.removes,
            self.workers,
            self.repositories,
            self.seconds,
            self.max_live,
            self.collisions,
            self.monitor_rounds,
            self.registry_reads
        );
        println!("soak-figures {line}");
        if let Some(file) = std::env::var_os("ISOLANE_SOAK_REPORT") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)?;
            writeln!(file, "{line}")?;
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Soak {
    fn new(targets: Vec<Target>) -> Self {
        Self {
            targets,
            live: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            creates: AtomicU64::new(0),
            removes: AtomicU64::new(0),
            max_live: AtomicUsize::new(0),
            collisions: AtomicU64::new(0),
            monitor_rounds: AtomicU64::new(0),
            registry_reads: AtomicU64::new(0),
        }
    }

    /// Records a failure and stops every loop (they clean up and end).
    fn fail(&self, message: String) {
        lock(&self.failures).push(message);
        self.stop.store(true, Ordering::SeqCst);
    }

    fn collision(&self, message: String) {
        self.collisions.fetch_add(1, Ordering::SeqCst);
        self.fail(format!("COLLISION: {message}"));
    }

    /// The failures seen, as one error.
    fn failed(&self) -> TestResult {
        let failures = lock(&self.failures);
        if failures.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} failure(s) under load:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        )
        .into())
    }

    /// Runs `workers_per_target` loops on every target and the monitor for
    /// `duration`, then waits for every loop to remove what it holds.
    fn run(&self, workers_per_target: usize, duration: Duration) -> TestResult<Figures> {
        let started = Instant::now();
        let deadline = started + duration;
        let workers_done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let monitor = scope.spawn(|| self.monitor(&workers_done));
            let reader = scope.spawn(|| self.read_registries(&workers_done));
            let workers: Vec<_> = self
                .targets
                .iter()
                .flat_map(|target| (0..workers_per_target).map(move |n| (target, n)))
                .map(|(target, n)| scope.spawn(move || self.worker(target, n, deadline)))
                .collect();
            for worker in workers {
                if worker.join().is_err() {
                    self.fail("a worker thread panicked".to_owned());
                }
            }
            workers_done.store(true, Ordering::SeqCst);
            if monitor.join().is_err() || reader.join().is_err() {
                self.fail("a monitor thread panicked".to_owned());
            }
        });
        Ok(Figures {
            workers: workers_per_target * self.targets.len(),
            repositories: self.targets.len(),
            creates: self.creates.load(Ordering::SeqCst),
            removes: self.removes.load(Ordering::SeqCst),
            max_live: self.max_live.load(Ordering::SeqCst),
            collisions: self.collisions.load(Ordering::SeqCst),
            monitor_rounds: self.monitor_rounds.load(Ordering::SeqCst),
            registry_reads: self.registry_reads.load(Ordering::SeqCst),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One loop: create, then remove right away or keep one or two alive
    /// (so live worktrees overlap), until the deadline; then remove the
    /// rest.
    fn worker(&self, target: &Target, n: usize, deadline: Instant) {
        // A small deterministic generator: the mix varies per worker.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ ((target.index * 64 + n) as u64 + 1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut mine: Vec<String> = Vec::new();
        let mut iteration = 0_u64;
        while Instant::now() < deadline && !self.stop.load(Ordering::SeqCst) {
            let identifier = format!("{}-w{n}-{iteration}", target.tag);
            iteration += 1;
            match self.create(target, &identifier) {
                Ok(id) => mine.push(id),
                Err(error) => {
                    self.fail(format!(
                        "worker {n} of repository {}: {error}",
                        target.index
                    ));
                    break;
                }
            }
            let keep = usize::try_from(next() % 3).unwrap_or(0);
            while mine.len() > keep {
                let id = mine.remove(0);
                if let Err(error) = self.remove(target, &id) {
                    self.fail(format!(
                        "worker {n} of repository {}: {error}",
                        target.index
                    ));
                }
            }
        }
        for id in mine {
            if let Err(error) = self.remove(target, &id) {
                self.fail(format!(
                    "worker {n} of repository {}: {error}",
                    target.index
                ));
            }
        }
    }

    /// `isolane create`, then its result checked against every worktree
    /// alive now and added to them.
    fn create(&self, target: &Target, identifier: &str) -> TestResult<String> {
        let args = [
            "create",
            "--purpose",
            "soak",
            "--identifier",
            identifier,
            "--json",
        ];
        let out = output(&target.root, &args)?;
        if !out.status.success() {
            return Err(failed_command(&args, &out).into());
        }
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "create {identifier}: stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        let (id, held) = Held::from_create(target.index, &created)?;
        self.creates.fetch_add(1, Ordering::SeqCst);
        let mut live = lock(&self.live);
        for (other_id, other) in live.iter() {
            for clash in collisions(&id, &held, other_id, other) {
                self.collision(format!("create reported {clash}"));
            }
        }
        live.insert(id.clone(), held);
        self.max_live.fetch_max(live.len(), Ordering::SeqCst);
        Ok(id)
    }

    /// `isolane remove`; `id` stops counting as alive before it starts
    /// (its ports may go to another create as soon as it releases them).
    fn remove(&self, target: &Target, id: &str) -> TestResult {
        lock(&self.live).remove(id);
        let args = ["remove", id];
        let out = output(&target.root, &args)?;
        if !out.status.success() {
            return Err(failed_command(&args, &out).into());
        }
        self.removes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Until the workers are done: `list --json`, `doctor`, `gc` and the
    /// host-wide leases, checked against the worktrees the workers hold.
    fn monitor(&self, workers_done: &AtomicBool) {
        // A failure stops the loops; one report of it is enough.
        while !workers_done.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            for target in &self.targets {
                if let Err(error) = self.check_list(target) {
                    self.fail(format!("repository {}: {error}", target.index));
                }
                if let Err(error) = check_doctor_and_gc(target) {
                    self.fail(format!("repository {}: {error}", target.index));
                }
            }
            if let Err(error) = self.check_leases() {
                self.fail(error.to_string());
            }
            self.monitor_rounds.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Until the workers are done: every registry read raw, over and over
    /// (cheap: no process), so that a torn or half-written document would
    /// be seen.
    fn read_registries(&self, workers_done: &AtomicBool) {
        // A failure stops the loops; one report of it is enough.
        while !workers_done.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            for target in &self.targets {
                if let Err(error) = self.check_registry(target) {
                    self.fail(format!("repository {}: {error}", target.index));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The worktrees of `target` that were alive both before and after
    /// `read`: whatever `read` saw must show them as the workers know them
    /// (an id is created once and removed once, so it was alive throughout).
    fn alive_throughout<T>(
        &self,
        target: Option<usize>,
        read: impl FnOnce() -> TestResult<T>,
    ) -> TestResult<(T, BTreeMap<String, Held>)> {
        let before = lock(&self.live).clone();
        let value = read()?;
        let after = lock(&self.live);
        let both = before
            .into_iter()
            .filter(|(id, held)| after.contains_key(id) && target.is_none_or(|t| held.target == t))
            .collect();
        Ok((value, both))
    }

    /// `registry.json`, parsed raw: it always parses, its live entries never
    /// share a port, path or database, and it holds every worktree alive.
    fn check_registry(&self, target: &Target) -> TestResult {
        let (text, alive) = self.alive_throughout(Some(target.index), || {
            match std::fs::read_to_string(&target.registry) {
                Ok(text) => Ok(Some(text)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => {
                    Err(format!("cannot read {}: {error}", target.registry.display()).into())
                }
            }
        })?;
        let Some(text) = text else {
            if alive.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "{} is missing while {} worktrees are alive",
                target.registry.display(),
                alive.len()
            )
            .into());
        };
        self.registry_reads.fetch_add(1, Ordering::SeqCst);
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} does not parse ({e}):\n{text}",
                target.registry.display()
            )
        })?;
        let entries = doc["data"]["entries"]
            .as_object()
            .ok_or_else(|| format!("registry without data.entries:\n{text}"))?;
        let mut seen = Vec::new();
        for (id, entry) in entries {
            let phase = entry["phase"].as_str().unwrap_or_default();
            if !matches!(phase, "creating" | "ready" | "removing") {
                return Err(format!("entry {id} has phase {phase:?}:\n{text}").into());
            }
            if phase == "removing" {
                // Its ports may already be released and handed on.
                continue;
            }
            seen.push((
                id.clone(),
                Held {
                    target: target.index,
                    ports: ports_of(&entry["ports"])?,
                    path: entry["path"].as_str().unwrap_or_default().to_owned(),
                    database: entry["database"].as_str().map(str::to_owned),
                },
                phase,
            ));
        }
        self.no_collisions("registry.json", seen.iter().map(|(id, held, _)| (id, held)));
        for (id, held) in &alive {
            let found = seen.iter().find(|(other, ..)| other == id);
            match found {
                Some((_, recorded, "ready")) if same(recorded, held) => {}
                _ => {
                    return Err(format!(
                        "worktree {id} is alive ({held:?}) but registry.json says {:?}:\n{text}",
                        entries.get(id)
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// `isolane list --json` works under load, shows no interrupted
    /// operation (nothing crashed) and no collision, and shows every
    /// worktree alive as ready.
    fn check_list(&self, target: &Target) -> TestResult {
        let (rows, alive) =
            self.alive_throughout(Some(target.index), || json(&target.root, &["list"]))?;
        let rows = rows.as_array().ok_or("list --json is not an array")?;
        let mut seen = Vec::new();
        for row in rows {
            let id = row["id"].as_str().ok_or("list row without id")?.to_owned();
            let state = row["state"].as_str().unwrap_or_default();
            match state {
                "removing" => continue,
                "creating" | "ready" => {}
                other => return Err(format!("list shows {id} as {other}: {row}").into()),
            }
            seen.push((
                id,
                Held {
                    target: target.index,
                    ports: ports_of(&row["ports"])?,
                    path: row["path"].as_str().unwrap_or_default().to_owned(),
                    database: row["database"].as_str().map(str::to_owned),
                },
                state,
            ));
        }
        self.no_collisions("list --json", seen.iter().map(|(id, held, _)| (id, held)));
        for (id, held) in &alive {
            match seen.iter().find(|(other, ..)| other == id) {
                Some((_, shown, "ready")) if same(shown, held) => {}
                other => {
                    return Err(format!(
                        "worktree {id} is alive ({held:?}) but list shows {other:?}"
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// `isolane ports list --json`: no port leased twice on the host (by
    /// anyone: every test of this binary shares the lease document), and
    /// every worktree alive holds exactly the ports its create reported.
    fn check_leases(&self) -> TestResult {
        let root = &self.targets[0].root;
        let (all, alive) = self.alive_throughout(None, || leases(root))?;
        let mut holder: BTreeMap<u16, &str> = BTreeMap::new();
        for (owner, ports) in &all {
            for port in ports {
                if let Some(previous) = holder.insert(*port, owner) {
                    self.collision(format!(
                        "ports list: port {port} is leased to both {previous} and {owner}"
                    ));
                }
            }
        }
        for (id, held) in &alive {
            let owner = format!("{}{id}", self.targets[held.target].owner_prefix);
            let leased: Option<BTreeSet<u16>> = all
                .iter()
                .find(|(o, _)| *o == owner)
                .map(|(_, ports)| ports.iter().copied().collect());
            let reported: BTreeSet<u16> = held.ports.values().copied().collect();
            if leased.as_ref() != Some(&reported) {
                return Err(format!(
                    "worktree {id} is alive with ports {reported:?} but its lease {owner} holds {leased:?}"
                )
                .into());
            }
        }
        Ok(())
    }

    /// Records a collision for every pair of `entries` sharing a port, a
    /// path or a database.
    fn no_collisions<'a>(&self, what: &str, entries: impl Iterator<Item = (&'a String, &'a Held)>) {
        let entries: Vec<_> = entries.collect();
        for (i, (id, held)) in entries.iter().enumerate() {
            for (other_id, other) in &entries[i + 1..] {
                for clash in collisions(id, held, other_id, other) {
                    self.collision(format!("{what}: {clash}"));
                }
            }
        }
    }

    /// After the soak: nothing of any target left anywhere.
    fn check_nothing_left(&self, database: bool) -> TestResult {
        for target in &self.targets {
            let root = &target.root;
            let findings = repository_findings(root)?;
            assert!(
                findings.is_empty(),
                "repository {}: doctor reports {findings:#?}",
                target.index
            );
            let listed = json(root, &["list"])?;
            assert_eq!(
                listed.as_array().map(Vec::len),
                Some(0),
                "repository {}: list shows {listed:#}",
                target.index
            );
            let left: Vec<_> = leases(root)?
                .into_iter()
                .filter(|(owner, _)| owner.starts_with(&target.owner_prefix))
                .collect();
            assert!(
                left.is_empty(),
                "repository {}: leases left: {left:?}",
                target.index
            );
            if database {
                let left: Vec<_> = database_names(root)?
                    .into_iter()
                    .filter(|name| name.contains(&target.tag))
                    .collect();
                assert!(
                    left.is_empty(),
                    "repository {}: databases left: {left:?}",
                    target.index
                );
            }
            let worktrees = root.join("worktrees");
            // worktree-core's trash (where a remove moves a worktree before
            // deleting it) may stay, empty.
            for dir in [worktrees.clone(), worktrees.join(".trash")] {
                if dir.exists() {
                    let left: Vec<_> = std::fs::read_dir(&dir)?
                        .map(|e| e.map(|e| e.file_name()))
                        .filter(|name| name.as_ref().map_or(true, |n| n != ".trash"))
                        .collect::<Result<_, _>>()?;
                    assert!(
                        left.is_empty(),
                        "repository {}: {} holds {left:?}",
                        target.index,
                        dir.display()
                    );
                }
            }
            let git_worktrees = test_support::git(root, ["worktree", "list", "--porcelain"])?;
            let listed: Vec<&str> = git_worktrees
                .lines()
                .filter(|line| line.starts_with("worktree "))
                .collect();
            assert_eq!(
                listed,
                [format!("worktree {}", root.display()).as_str()],
                "repository {}: git worktree list:\n{git_worktrees}",
                target.index
            );
            let branches = test_support::git(root, ["branch", "--list", "soak-*"])?;
            assert!(
                branches.trim().is_empty(),
                "repository {}: branches left: {branches}",
                target.index
            );
        }
        Ok(())
    }
}

/// What `doctor` finds about this repository. What it sees of the whole
/// server (databases without a record, a create killed before its record,
/// databases of deleted repositories, derived test databases) belongs to
/// the other tests of this binary running beside the soak.
fn repository_findings(root: &std::path::Path) -> TestResult<Vec<serde_json::Value>> {
    let findings = json(root, &["doctor"])?;
    Ok(findings
        .as_array()
        .ok_or("doctor --json prints an array")?
        .iter()
        .filter(|f| {
            !matches!(
                f["kind"].as_str(),
                Some(
                    "database-without-record"
                        | "interrupted-database-create"
                        | "database-of-gone-repository"
                        | "derived-database"
                )
            )
        })
        .cloned()
        .collect())
}

/// `doctor` and `gc` beside the loops: every create and remove is at work,
/// so doctor finds nothing and gc finishes nothing (it must not mistake a
/// create that finished meanwhile for an interrupted one and tear it down).
fn check_doctor_and_gc(target: &Target) -> TestResult {
    let findings = repository_findings(&target.root)?;
    if !findings.is_empty() {
        return Err(format!("doctor under load reports {findings:#?}").into());
    }
    let report = json(&target.root, &["gc"])?;
    for key in ["finished", "removed", "errors"] {
        if report[key].as_array().is_none_or(|done| !done.is_empty()) {
            return Err(format!("gc under load did something: {report:#}").into());
        }
    }
    Ok(())
}

/// Whether two views of one worktree agree.
fn same(a: &Held, b: &Held) -> bool {
    a.ports == b.ports && a.path == b.path && a.database == b.database
}

/// What worktrees `a` and `b` share, described.
fn collisions(a_id: &str, a: &Held, b_id: &str, b: &Held) -> Vec<String> {
    let mut found = Vec::new();
    let b_ports: BTreeSet<u16> = b.ports.values().copied().collect();
    for port in a.ports.values().filter(|p| b_ports.contains(p)) {
        found.push(format!("{a_id} and {b_id} share port {port}"));
    }
    if a.path == b.path {
        found.push(format!("{a_id} and {b_id} share path {}", a.path));
    }
    if a.database.is_some() && a.database == b.database {
        found.push(format!(
            "{a_id} and {b_id} share database {}",
            a.database.as_deref().unwrap_or_default()
        ));
    }
    found
}

fn failed_command(args: &[&str], out: &std::process::Output) -> String {
    format!(
        "isolane {} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Takes back whatever a failed soak left (worktrees, leases, databases on
/// the shared server), so that a failure does not leak into other tests.
struct Cleanup<'a>(&'a [Target]);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for target in self.0 {
            cleanup(&target.root);
        }
    }
}

fn cleanup(root: &Path) {
    let Ok(out) = isolane(root).args(["list", "--json"]).output() else {
        return;
    };
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for row in rows {
        if let Some(id) = row["id"].as_str() {
            let _ = isolane(root).args(["remove", "--force", id]).output();
        }
    }
    let _ = isolane(root).args(["doctor", "--fix"]).output();
}
