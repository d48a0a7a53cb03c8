//! The benchmark harness: every subject is measured beside its baseline in
//! the same run, interleaved, because the machines this runs on are noisy.
//!
//! `cargo bench -p benches [-- GROUP ...] [--quick]` runs the groups (all
//! when none is named) and prints one markdown table; with
//! `ISOLANE_BENCH_JSON=PATH` it also writes a flat JSON object of figures.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod cli;
pub mod copy;
pub mod django;
pub mod fixtures;
pub mod migration_fixture;
pub mod migrations;
pub mod pg;
pub mod ports;
pub mod registry;
pub mod rust_tests;
pub mod worktree;

/// The error type of benchmark bodies.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
/// The result type of benchmark bodies.
pub type BenchResult<T = ()> = Result<T, BenchError>;

/// How a run was asked for.
#[derive(Debug, Clone)]
pub struct Config {
    /// Fewer iterations and smaller fixtures, for a CI smoke run.
    pub quick: bool,
    /// A directory on the machine's disk for fixtures (not a tmpfs).
    pub scratch: PathBuf,
}

impl Config {
    /// `full` iterations normally, `quick` in quick mode.
    pub fn iterations(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// Timings of one measured operation.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    /// Samples from unsorted durations.
    pub fn new(mut durations: Vec<Duration>) -> Self {
        durations.sort_unstable();
        Self { sorted: durations }
    }

    /// The `p`-th percentile (0..=100), nearest-rank.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// Times `f` once.
pub fn time<T>(f: impl FnOnce() -> BenchResult<T>) -> BenchResult<(Duration, T)> {
    let start = Instant::now();
    let value = f()?;
    Ok((start.elapsed(), value))
}

/// Runs `subject` and `baseline` alternately, `iterations` times each after
/// `warmup` untimed rounds, so that both see the same machine conditions.
pub fn interleaved(
    warmup: usize,
    iterations: usize,
    mut subject: impl FnMut() -> BenchResult,
    mut baseline: impl FnMut() -> BenchResult,
) -> BenchResult<(Samples, Samples)> {
    for _ in 0..warmup {
        subject()?;
        baseline()?;
    }
    let mut subject_times = Vec::with_capacity(iterations);
    let mut baseline_times = Vec::with_capacity(iterations);
    for round in 0..iterations {
        // Alternate which goes first so neither always runs on a warm cache.
        if round % 2 == 0 {
            subject_times.push(time(&mut subject)?.0);
            baseline_times.push(time(&mut baseline)?.0);
        } else {
            baseline_times.push(time(&mut baseline)?.0);
            subject_times.push(time(&mut subject)?.0);
        }
    }
    Ok((Samples::new(subject_times), Samples::new(baseline_times)))
}

/// Runs `f` `iterations` times after `warmup` untimed rounds.
pub fn repeat(
    warmup: usize,
    iterations: usize,
    mut f: impl FnMut() -> BenchResult,
) -> BenchResult<Samples> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        times.push(time(&mut f)?.0);
    }
    Ok(Samples::new(times))
}

/// One line of the report: a subject, and its baseline when it has one.
#[derive(Debug, Clone)]
pub struct Row {
    /// The group (`registry`, `ports`, ...).
    pub group: &'static str,
    /// What was measured.
    pub subject: String,
    /// Its timings.
    pub samples: Samples,
    /// The baseline's name and timings.
    pub baseline: Option<(String, Samples)>,
}

/// The figures of a run: table rows and the flat JSON object.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
    figures: BTreeMap<String, f64>,
}

impl Report {
    /// Adds a row to the table.
    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Records a figure for the JSON output (milliseconds unless the key
    /// ends in `_us`; ratios and counts plain).
    pub fn figure(&mut self, key: impl Into<String>, value: f64) {
        self.figures.insert(key.into(), value);
    }

    /// The figures recorded so far.
    pub fn figures(&self) -> &BTreeMap<String, f64> {
        &self.figures
    }

    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| group | measurement | p50 | p95 | p99 | n | baseline | baseline p50 | baseline p95 | ratio (p50) |\n\
             | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n",
        );
        for row in &self.rows {
            let s = &row.samples;
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.group,
                row.subject,
                human(s.percentile(50.0)),
                human(s.percentile(95.0)),
                human(s.percentile(99.0)),
                s.len()
            );
            match &row.baseline {
                Some((name, b)) => {
                    let _ = writeln!(
                        out,
                        " {} | {} | {} | {:.2}x |",
                        name,
                        human(b.percentile(50.0)),
                        human(b.percentile(95.0)),
                        ratio(s.percentile(50.0), b.percentile(50.0))
                    );
                }
                None => out.push_str(" - | - | - | - |\n"),
            }
        }
        out
    }

    /// The flat JSON object of figures.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.figures).expect("a map of f64 always serializes")
    }
}

/// `a / b`, as a plain number.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Microseconds as a float.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A duration in the unit that reads best.
pub fn human(d: Duration) -> String {
    let micros = us(d);
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(samples.percentile(50.0), Duration::from_millis(50));
        assert_eq!(samples.percentile(99.0), Duration::from_millis(99));
        assert_eq!(samples.percentile(100.0), Duration::from_millis(100));
        assert_eq!(samples.percentile(0.0), Duration::from_millis(1));
    }
}
