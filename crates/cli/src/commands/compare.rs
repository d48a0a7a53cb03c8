//! `isolane compare BASE HEAD -- CMD`: CMD timed in two worktrees, one per
//! side, in alternating rounds, and the two sides compared figure by figure
//! ([`crate::stats`]).
//!
//! Each side is an existing worktree (named by id) or one made for the
//! comparison, detached at the revision, with its own ports and a database
//! cloned from the same template. Round k runs CMD on both sides: BASE then
//! HEAD when k is odd, HEAD then BASE when it is even (ABBA...), so drift
//! and warm-up hit both sides alike. Before each run the side's database is
//! reset from the template (unless `--no-reset`) and its services started;
//! they are stopped after it. The worktrees made here are removed at the
//! end unless `--keep`, also after a failure or a stop signal; worktrees
//! named by id are only locked while in use, never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::time::Instant;

use anyhow::{Context as _, Result};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::{InputError, print_json, progress};
use crate::cli::CompareArgs;
use crate::context::Repo;
use crate::lifecycle::{Teardown, open_ready, provision, teardown};
use crate::runs;
use crate::services;
use crate::state::Entry;
use crate::stats::{self, Verdict};

/// The variable naming the file CMD may write its figures to.
const OUTPUT_VAR: &str = "ISOLANE_COMPARE_OUTPUT";
/// The variable telling CMD which side it runs on (`base` or `head`).
const SIDE_VAR: &str = "ISOLANE_COMPARE_SIDE";
/// The figure every run has: CMD's wall time.
const WALL: &str = "wall";
/// The purpose of the worktrees made here: `test-` so that `gc` takes back
/// any that a killed comparison left.
const PURPOSE: &str = "test-compare";
/// How the lock reason of a worktree made here ends: a comparison killed
/// before it could remove it leaves it locked so, by a process that is
/// gone, and the next comparison takes it back ([`reclaim_abandoned`]).
const MADE_HERE: &str = "(made for the comparison)";
/// How the report names its method.
const METHOD: &str = "ratio of the medians, 95% percentile-bootstrap interval \
                      (10000 resamples of each side, fixed seed)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Base,
    Head,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Head => "head",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Base => 0,
            Self::Head => 1,
        }
    }
}

/// What the user named as a side.
#[derive(Debug)]
enum Target {
    /// An existing worktree of this repository.
    Worktree(String),
    /// The commit a revision named when the comparison began.
    Revision(String),
}

/// A side ready for CMD.
#[derive(Debug)]
struct Side {
    which: Which,
    /// BASE or HEAD as given.
    spec: String,
    commit: Option<String>,
    entry: Entry,
    env: BTreeMap<String, String>,
    /// Made by this comparison (and so removed by it).
    created: bool,
    /// Where CMD may write its figures, and where its output is kept.
    figures: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// One run of CMD: its wall time and the figures it wrote.
#[derive(Debug, Serialize)]
struct Sample {
    round: u32,
    warmup: bool,
    side: &'static str,
    figures: BTreeMap<String, f64>,
}

/// How the rounds ended.
enum Outcome {
    Measured(Vec<Sample>),
    Failed {
        which: Which,
        round: u32,
        status: ExitStatus,
    },
    Interrupted(Signal),
}

/// How one run ended.
enum Run {
    Done(BTreeMap<String, f64>),
    Failed(ExitStatus),
    Interrupted(Signal),
}

pub(super) fn run(args: &CompareArgs) -> Result<ExitCode> {
    // As in `run`: a stop signal is handled, so that services are stopped
    // and the worktrees made here removed.
    let child_pid = Arc::new(AtomicI32::new(0));
    services::spawn_signal_waiter(Arc::clone(&child_pid))
        .context("cannot install signal handlers")?;

    let repo = Repo::discover()?;
    // What a killed run or comparison left running goes first: before the
    // worktrees of a killed comparison are taken back below.
    runs::stop_leftovers(&repo)?;
    // Both sides are resolved before anything is made.
    let targets = [
        target(&repo, &args.base, "BASE")?,
        target(&repo, &args.head, "HEAD")?,
    ];
    if let [Target::Worktree(base), Target::Worktree(head)] = &targets
        && base == head
    {
        return Err(InputError(format!(
            "BASE and HEAD are the same worktree {base}: name two worktrees, or revisions"
        ))
        .into());
    }
    if targets.iter().any(|t| matches!(t, Target::Revision(_)))
        && let Some(problem) = repo.config.ports.host_problem()
    {
        return Err(InputError(problem).into());
    }
    let scratch = tempfile::Builder::new()
        .prefix("isolane-compare-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    reclaim_abandoned(&repo);
    let mut sides = Vec::new();
    let outcome = prepare(&repo, args, targets, scratch.path(), &mut sides)
        .and_then(|()| measure(&repo, args, &sides, &child_pid));
    let code = match outcome {
        Ok(Outcome::Measured(samples)) => {
            let report = report(args, &sides, &samples);
            // No `?` before `finish`: the worktrees made here go whatever
            // happens to stdout.
            let printed = if args.json {
                print_json(&report)
            } else {
                print_report(&report);
                Ok(())
            };
            printed.map(|()| {
                if report.slower.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
        Ok(Outcome::Failed {
            which,
            round,
            status,
        }) => {
            let side = &sides[which.index()];
            replay(side);
            progress(format_args!(
                "CMD failed on {} (worktree {}, round {round}) with {status}; comparison stopped",
                which.name(),
                side.entry.id
            ));
            Ok(services::exit_code(status))
        }
        Ok(Outcome::Interrupted(signal)) => {
            progress(format_args!("interrupted by {signal}; comparison stopped"));
            Ok(ExitCode::from(
                u8::try_from(128 + signal as i32).unwrap_or(1),
            ))
        }
        Err(error) => Err(error),
    };
    finish(&repo, args.keep, &sides);
    code
}

/// What `spec` names: an existing worktree, else a revision. Neither is
/// an input error.
fn target(repo: &Repo, spec: &str, role: &str) -> Result<Target> {
    if repo.registry.read()?.entries.contains_key(spec) {
        return Ok(Target::Worktree(spec.to_owned()));
    }
    // Read where the user stands: in a test worktree, HEAD is its own.
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    match worktree_core::resolve_commit(&cwd, spec) {
        Ok(commit) => Ok(Target::Revision(commit)),
        Err(error) if error.is_invalid_input() => {
            Err(anyhow::Error::from(error).context(InputError(format!(
                "{role} {spec:?} is neither a worktree of this repository nor a revision"
            ))))
        }
        Err(error) => Err(error.into()),
    }
}

/// Takes back the worktrees that comparisons killed with `kill -9` made
/// and could not remove: `test-compare-*`, still locked as made by a
/// comparison whose process is gone. (Worktrees a comparison only used are
/// locked without [`MADE_HERE`] and never taken.) Best effort: what fails
/// here is left to `isolane gc`.
fn reclaim_abandoned(repo: &Repo) {
    let prefix = format!("{PURPOSE}-");
    let has_candidates = repo
        .registry
        .read()
        .is_ok_and(|doc| doc.entries.keys().any(|id| id.starts_with(&prefix)));
    if !has_candidates {
        return;
    }
    let Ok(infos) = repo.worktrees.list() else {
        return;
    };
    for info in infos
        .iter()
        .filter(|i| i.managed && i.id.starts_with(&prefix))
    {
        let abandoned = info
            .lock
            .as_ref()
            .is_some_and(|lock| !lock.owner_alive && lock.reason.ends_with(MADE_HERE));
        let Some(entry) = abandoned.then(|| repo.entry(&info.id).ok()).flatten() else {
            continue;
        };
        progress(format_args!(
            "taking back worktree {}, made by a comparison that was killed",
            entry.id
        ));
        let how = Teardown {
            force: true,
            keep_branch: false,
            hooks: false,
        };
        if let Err(error) = teardown(repo, &entry, how) {
            progress(format_args!("cannot take back {}: {error:#}", entry.id));
        }
    }
}

/// Makes (or opens) each side and locks it as in use. Every side that is
/// ready is pushed to `sides` at once, so that [`finish`] sees it whatever
/// fails next.
fn prepare(
    repo: &Repo,
    args: &CompareArgs,
    targets: [Target; 2],
    scratch: &Path,
    sides: &mut Vec<Side>,
) -> Result<()> {
    for (which, target) in [Which::Base, Which::Head].into_iter().zip(targets) {
        if services::interrupted() {
            return Ok(());
        }
        let spec = match which {
            Which::Base => &args.base,
            Which::Head => &args.head,
        };
        let (id, commit, created) = match target {
            Target::Worktree(id) => (id, None, false),
            Target::Revision(commit) => {
                let mut request =
                    worktree_core::CreateRequest::new(PURPOSE, free_identifier(repo, which)?);
                request.detach = true;
                request.base = Some(commit.clone());
                request.submodules = repo.config.worktrees.submodules;
                progress(format_args!(
                    "making a worktree for {} at {spec} ({})",
                    which.name(),
                    short(&commit)
                ));
                let made = provision(
                    repo,
                    &request,
                    &repo.config.ports.names,
                    repo.config.database.enabled,
                )?;
                (made.entry.id, Some(commit), true)
            }
        };
        let opened = open_ready(repo, &id);
        let (entry, env) = match opened {
            Ok(found) => found,
            Err(error) if created => {
                // Made but not usable: still ours to take back.
                let entry = repo.entry(&id)?;
                sides.push(side(
                    which,
                    spec,
                    commit,
                    entry,
                    BTreeMap::new(),
                    true,
                    scratch,
                ));
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let mut reason = format!("isolane compare (pid {})", std::process::id());
        if created {
            reason = format!("{reason} {MADE_HERE}");
        }
        let locked = repo
            .worktrees
            .lock(&id, &reason, registry::ProcessIdentity::current())
            .with_context(|| format!("cannot mark worktree {id} as in use"));
        if locked.is_err() && !created {
            return locked;
        }
        sides.push(side(which, spec, commit, entry, env, created, scratch));
        locked?;
        // Recorded as a run: if this comparison is killed, the next command
        // stops the services and CMD it left running.
        let last = sides.last_mut().expect("a side was just pushed");
        let token = runs::begin(repo, &last.entry.id)?;
        last.env.insert(runs::TOKEN_VAR.to_owned(), token);
    }
    Ok(())
}

fn side(
    which: Which,
    spec: &str,
    commit: Option<String>,
    entry: Entry,
    env: BTreeMap<String, String>,
    created: bool,
    scratch: &Path,
) -> Side {
    let file = |suffix: &str| scratch.join(format!("{}.{suffix}", which.name()));
    Side {
        which,
        spec: spec.to_owned(),
        commit,
        entry,
        env,
        created,
        figures: file("json"),
        stdout: file("stdout"),
        stderr: file("stderr"),
    }
}

/// `<side>-<pid>`, or with a suffix when a comparison that was killed left
/// that id behind (gc takes those back). The registry refuses an id taken
/// meanwhile, so this is a hint, not the guarantee.
fn free_identifier(repo: &Repo, which: Which) -> Result<String> {
    let doc = repo.registry.read()?;
    let stem = format!("{}-{}", which.name(), std::process::id());
    let taken = |identifier: &String| doc.entries.contains_key(&format!("{PURPOSE}-{identifier}"));
    Ok(std::iter::once(stem.clone())
        .chain((2..).map(|n| format!("{stem}-{n}")))
        .find(|identifier| !taken(identifier))
        .unwrap_or(stem))
}

/// Runs the rounds: warm-up first, then the timed ones, in ABBA order.
fn measure(
    repo: &Repo,
    args: &CompareArgs,
    sides: &[Side],
    child_pid: &Arc<AtomicI32>,
) -> Result<Outcome> {
    if let Some(signal) = services::interrupted_by() {
        return Ok(Outcome::Interrupted(signal));
    }
    let reset = if args.no_reset || sides.iter().all(|s| s.entry.database.is_none()) {
        None
    } else {
        let server = repo.server()?;
        let template = repo
            .migrations()?
            .map(|m| m.template(&server))
            .transpose()?;
        Some((server, template))
    };
    let total = args.warmup + args.runs;
    let mut samples = Vec::new();
    for round in 1..=total {
        let warmup = round <= args.warmup;
        let order = if round % 2 == 1 {
            [Which::Base, Which::Head]
        } else {
            [Which::Head, Which::Base]
        };
        for which in order {
            let side = &sides[which.index()];
            if let (Some((server, template)), Some(database)) = (&reset, &side.entry.database) {
                server
                    .reset_database(database, template.as_ref().map(pg_isolate::Template::name))
                    .with_context(|| format!("cannot reset database {database}"))?;
            }
            let figures = match run_once(repo, args, side, child_pid)? {
                Run::Done(figures) => figures,
                Run::Failed(status) => {
                    return Ok(Outcome::Failed {
                        which,
                        round,
                        status,
                    });
                }
                Run::Interrupted(signal) => return Ok(Outcome::Interrupted(signal)),
            };
            let (kind, k, n) = if warmup {
                ("warm-up", round, args.warmup)
            } else {
                ("round", round - args.warmup, args.runs)
            };
            progress(format_args!(
                "{kind} {k}/{n} {}: {}",
                which.name(),
                seconds(figures.get(WALL).copied().unwrap_or_default())
            ));
            samples.push(Sample {
                round,
                warmup,
                side: which.name(),
                figures,
            });
        }
    }
    Ok(Outcome::Measured(samples))
}

/// One run of CMD on `side`, with its services up around it.
fn run_once(
    repo: &Repo,
    args: &CompareArgs,
    side: &Side,
    child_pid: &Arc<AtomicI32>,
) -> Result<Run> {
    let dir = &side.entry.path;
    let mut record = runs::recorder(repo, &side.entry.id);
    let log_dir = repo.log_dir(&side.entry.id);
    let running = if args.no_services || repo.config.services.is_empty() {
        Vec::new()
    } else {
        match services::start_all(&repo.config.services, dir, &side.env, &log_dir, &mut record) {
            Ok(running) => running,
            // A stop signal while a service was starting is a stop, not a
            // failure of the service.
            Err(error) => {
                return match services::interrupted_by() {
                    Some(signal) => Ok(Run::Interrupted(signal)),
                    None => Err(anyhow::Error::from(error)
                        .context(format!("on the {} side", side.which.name()))),
                };
            }
        }
    };
    if let Some(signal) = services::interrupted_by() {
        services::stop_all(running);
        return Ok(Run::Interrupted(signal));
    }
    let status = (|| {
        match std::fs::remove_file(&side.figures) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let (program, rest) = args.command.split_first().expect("clap requires a command");
        let mut command = Command::new(program);
        command
            .args(rest)
            .current_dir(dir)
            .envs(&side.env)
            .env(OUTPUT_VAR, &side.figures)
            .env(SIDE_VAR, side.which.name())
            .stdin(Stdio::null())
            .stdout(File::create(&side.stdout)?)
            .stderr(File::create(&side.stderr)?);
        let started = Instant::now();
        let status = services::run_foreground(&mut command, child_pid, &mut record)?;
        Ok((status, started.elapsed().as_secs_f64()))
    })()
    .with_context(|| format!("cannot run {} in {}", args.command[0], dir.display()));
    services::stop_all(running);
    let (status, wall) = status?;
    if let Some(signal) = services::interrupted_by() {
        return Ok(Run::Interrupted(signal));
    }
    if !status.success() {
        return Ok(Run::Failed(status));
    }
    let mut figures = read_figures(&side.figures)?;
    figures.insert(WALL.to_owned(), wall);
    Ok(Run::Done(figures))
}

/// The figures CMD wrote to `path`, if it wrote any.
fn read_figures(path: &Path) -> Result<BTreeMap<String, f64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_figures(&text).map_err(|problem| {
        anyhow::anyhow!(
            "CMD wrote {} (${OUTPUT_VAR}), but {problem}",
            path.display()
        )
    })
}

/// Figures from `{"name": seconds, ...}`, or from pytest-benchmark's JSON
/// (`--benchmark-json`), where each benchmark's `stats.median` is taken.
fn parse_figures(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("it is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("it is not a JSON object of figures")?;
    let mut figures = BTreeMap::new();
    let mut add = |name: &str, seconds: Option<f64>| {
        let seconds = seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("figure {name:?} is not a number of seconds (>= 0)"))?;
        if name == WALL {
            return Err(format!("figure name {WALL:?} is taken by the wall time"));
        }
        if figures.insert(name.to_owned(), seconds).is_some() {
            return Err(format!("figure {name:?} appears twice"));
        }
        Ok(())
    };
    match object.get("benchmarks") {
        Some(benchmarks) => {
            let list = benchmarks
                .as_array()
                .ok_or("its \"benchmarks\" is not a list (pytest-benchmark's format)")?;
            for benchmark in list {
                let name = ["fullname", "name"]
                    .iter()
                    .find_map(|key| benchmark.get(key).and_then(serde_json::Value::as_str))
                    .ok_or("a benchmark in it has no name")?;
                add(
                    name,
                    benchmark
                        .pointer("/stats/median")
                        .and_then(serde_json::Value::as_f64),
                )?;
            }
        }
        None => {
            for (name, seconds) in object {
                add(name, seconds.as_f64())?;
            }
        }
    }
    Ok(figures)
}

/// Prints CMD's output of its failed run, as it wrote it.
fn replay(side: &Side) {
    use std::io::Write as _;
    for (path, mut out) in [
        (
            &side.stdout,
            Box::new(std::io::stdout()) as Box<dyn std::io::Write>,
        ),
        (&side.stderr, Box::new(std::io::stderr())),
    ] {
        if let Ok(bytes) = std::fs::read(path) {
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
    }
}

/// Unlocks every side, and removes the worktrees made here unless `keep`.
fn finish(repo: &Repo, keep: bool, sides: &[Side]) {
    for side in sides {
        let id = &side.entry.id;
        if let Some(token) = side.env.get(runs::TOKEN_VAR) {
            runs::finish(repo, id, token);
        }
        if let Err(error) = repo.worktrees.unlock(id) {
            progress(format_args!("cannot unlock worktree {id}: {error}"));
        }
        if !side.created {
            continue;
        }
        if keep {
            progress(format_args!(
                "kept worktree {id} at {}",
                side.entry.path.display()
            ));
            continue;
        }
        // Made for this comparison at a fixed commit: nothing in it is
        // anyone's work but CMD's output, which goes with it (--keep keeps it).
        let how = Teardown {
            force: true,
            keep_branch: false,
            hooks: true,
        };
        let removed = repo.entry(id).and_then(|entry| teardown(repo, &entry, how));
        if let Err(error) = removed {
            progress(format_args!(
                "cannot remove worktree {id} ({error:#}); `isolane remove --force {id}` or `isolane gc` will"
            ));
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    base: SideReport<'a>,
    head: SideReport<'a>,
    runs: u32,
    warmup: u32,
    /// As a fraction (0.05 for 5%).
    threshold: f64,
    method: &'static str,
    figures: Vec<FigureReport>,
    /// The figures slower beyond the threshold (exit code 1 when any).
    slower: Vec<String>,
    /// Every run, warm-up rounds included.
    samples: &'a [Sample],
}

#[derive(Debug, Serialize)]
struct SideReport<'a> {
    spec: &'a str,
    commit: Option<&'a str>,
    worktree: &'a str,
    created: bool,
}

#[derive(Debug, Serialize)]
struct FigureReport {
    name: String,
    base_median: Option<f64>,
    head_median: Option<f64>,
    ratio: Option<f64>,
    interval: Option<(f64, f64)>,
    /// `None` when a side has no sample of it.
    verdict: Option<Verdict>,
    base_samples: Vec<f64>,
    head_samples: Vec<f64>,
}

fn report<'a>(args: &CompareArgs, sides: &'a [Side], samples: &'a [Sample]) -> Report<'a> {
    let side_report = |side: &'a Side| SideReport {
        spec: &side.spec,
        commit: side.commit.as_deref(),
        worktree: &side.entry.id,
        created: side.created,
    };
    let timed = || samples.iter().filter(|s| !s.warmup);
    let mut names = vec![WALL.to_owned()];
    let others: BTreeSet<&String> = timed()
        .flat_map(|s| s.figures.keys())
        .filter(|name| name.as_str() != WALL)
        .collect();
    names.extend(others.into_iter().cloned());
    let figures: Vec<FigureReport> = names
        .into_iter()
        .map(|name| {
            let of = |side: &str| -> Vec<f64> {
                timed()
                    .filter(|s| s.side == side)
                    .filter_map(|s| s.figures.get(&name).copied())
                    .collect()
            };
            let (base, head) = (of("base"), of("head"));
            let compared = stats::compare(&base, &head, args.threshold);
            FigureReport {
                base_median: stats::median(&base),
                head_median: stats::median(&head),
                ratio: compared.and_then(|c| c.ratio),
                interval: compared.and_then(|c| c.interval),
                verdict: compared.map(|c| c.verdict),
                name,
                base_samples: base,
                head_samples: head,
            }
        })
        .collect();
    let slower = figures
        .iter()
        .filter(|f| f.verdict == Some(Verdict::Slower))
        .map(|f| f.name.clone())
        .collect();
    Report {
        base: side_report(&sides[0]),
        head: side_report(&sides[1]),
        runs: args.runs,
        warmup: args.warmup,
        threshold: args.threshold,
        method: METHOD,
        figures,
        slower,
        samples,
    }
}

fn print_report(report: &Report<'_>) {
    for (label, side) in [("base", &report.base), ("head", &report.head)] {
        let made = if side.created {
            ", made for this comparison"
        } else {
            ""
        };
        match side.commit {
            Some(commit) => println!(
                "{label}  {} at {} (worktree {}{made})",
                side.spec,
                short(commit),
                side.worktree
            ),
            None => println!("{label}  worktree {}", side.worktree),
        }
    }
    println!(
        "{} timed rounds after {} warm-up, in ABBA order; threshold {}",
        report.runs,
        report.warmup,
        percent(report.threshold)
    );
    println!("HEAD/BASE: {METHOD}");
    println!();
    let rows: Vec<[String; 6]> = report
        .figures
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                f.base_median.map_or("-".to_owned(), seconds),
                f.head_median.map_or("-".to_owned(), seconds),
                f.ratio.map_or("-".to_owned(), |r| format!("{r:.3}")),
                f.interval.map_or("-".to_owned(), |(low, high)| {
                    format!("{low:.3} - {high:.3}")
                }),
                f.verdict
                    .map_or("only on one side", Verdict::as_str)
                    .to_owned(),
            ]
        })
        .collect();
    let header = [
        "FIGURE",
        "BASE",
        "HEAD",
        "HEAD/BASE",
        "95% INTERVAL",
        "VERDICT",
    ];
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain([header[column].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: [&str; 6]| {
        println!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    if report
        .figures
        .iter()
        .any(|f| f.ratio.is_some() && f.interval.is_none())
    {
        println!(
            "(no interval: with fewer than 4 runs a side even samples that do not \
             overlap can be chance)"
        );
    }
    println!();
    let threshold = percent(report.threshold);
    if report.slower.is_empty() {
        println!("no figure slower beyond {threshold}");
    } else {
        println!("slower beyond {threshold}: {}", report.slower.join(", "));
    }
}

/// A fraction as a percentage: `5%`, `2.5%`.
fn percent(fraction: f64) -> String {
    let rounded = (fraction * 100_000.0).round() / 1000.0;
    format!("{rounded}%")
}

/// A commit id's first 10 hex digits.
fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// Seconds as `1.234 s`, `12.3 ms` or `45.6 µs`.
fn seconds(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.3} s")
    } else if value >= 1e-3 {
        format!("{:.1} ms", value * 1e3)
    } else {
        format!("{:.1} µs", value * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn flat_figures() -> TestResult {
        let figures = parse_figures(r#"{"query": 0.25, "render": 1}"#)?;
        assert_eq!(
            figures,
            BTreeMap::from([("query".to_owned(), 0.25), ("render".to_owned(), 1.0)])
        );
        assert_eq!(parse_figures("{}")?, BTreeMap::new());
        Ok(())
    }

    #[test]
    fn pytest_benchmark_figures() -> TestResult {
        let text = r#"{"machine_info": {}, "benchmarks": [
            {"name": "test_a", "fullname": "tests/test_x.py::test_a",
             "stats": {"min": 0.1, "median": 0.125, "mean": 0.13}},
            {"name": "test_b", "stats": {"median": 2e-6}}
        ], "version": "4.0.0"}"#;
        assert_eq!(
            parse_figures(text)?,
            BTreeMap::from([
                ("tests/test_x.py::test_a".to_owned(), 0.125),
                ("test_b".to_owned(), 2e-6)
            ])
        );
        Ok(())
    }

    #[test]
    fn bad_figures_are_named() -> TestResult {
        for (text, needle) in [
            ("not json", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            (r#"{"a": "fast"}"#, "\"a\" is not a number"),
            (r#"{"a": -1}"#, "\"a\" is not a number"),
            (r#"{"wall": 1}"#, "taken by the wall time"),
            (r#"{"benchmarks": 3}"#, "not a list"),
            (r#"{"benchmarks": [{"stats": {"median": 1}}]}"#, "no name"),
            (
                r#"{"benchmarks": [{"name": "t", "stats": {}}]}"#,
                "\"t\" is not",
            ),
            (
                r#"{"benchmarks": [{"name": "t", "stats": {"median": 1}}, {"name": "t", "stats": {"median": 1}}]}"#,
                "appears twice",
            ),
        ] {
            match parse_figures(text) {
                Ok(figures) => return Err(format!("{text} was accepted: {figures:?}").into()),
                Err(problem) => assert!(problem.contains(needle), "{text}: {problem}"),
            }
        }
        Ok(())
    }

    #[test]
    fn percentages_are_readable() {
        assert_eq!(percent(0.05), "5%");
        assert_eq!(percent(0.07), "7%");
        assert_eq!(percent(0.025), "2.5%");
        assert_eq!(percent(0.0), "0%");
    }

    #[test]
    fn seconds_are_readable() {
        assert_eq!(seconds(1.5), "1.500 s");
        assert_eq!(seconds(0.0523), "52.3 ms");
        assert_eq!(seconds(0.000_012_3), "12.3 µs");
    }
}
