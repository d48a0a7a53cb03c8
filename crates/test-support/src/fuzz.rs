//! Time-bounded fuzzing on top of proptest, for stable Rust and plain
//! `cargo test`.
//!
//! [`run`] feeds inputs from a proptest [`Strategy`] to a property for a
//! wall-clock budget: [`SECONDS_ENV`] seconds (default
//! [`DEFAULT_SECONDS`]), in rounds of [`CASES_PER_ROUND`] cases, each round
//! with a fresh random seed. A panic or a failed property stops the run;
//! proptest shrinks the input, and the error names the target, the seed of
//! the round (set [`SEED_ENV`] to replay exactly that round) and the
//! minimal input. When [`REPORT_ENV`] names a file, every finished target
//! appends a line `<target> <cases> <seconds>` to it.
//!
//! [`damaged`] turns a strategy of valid file contents into one of the same
//! contents cut short, bit-flipped, with bytes inserted, removed or repeated.
//!
//! ```
//! use std::time::Duration;
//!
//! use proptest::prelude::*;
//!
//! let summary = test_support::fuzz::run_for(
//!     "doc_addition_commutes",
//!     Duration::from_millis(50),
//!     (0u32..1000, 0u32..1000),
//!     |(a, b)| {
//!         prop_assert_eq!(a + b, b + a);
//!         Ok(())
//!     },
//! )?;
//! assert!(summary.cases > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::{self, Debug};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// Seconds each target runs for (a decimal number).
pub const SECONDS_ENV: &str = "ISOLANE_FUZZ_SECONDS";
/// A file each finished target appends `<target> <cases> <seconds>` to.
pub const REPORT_ENV: &str = "ISOLANE_FUZZ_REPORT";
/// Replays the single round with this seed (a `u64`) instead of fuzzing.
pub const SEED_ENV: &str = "ISOLANE_FUZZ_SEED";
/// The budget when [`SECONDS_ENV`] is unset: what CI runs.
pub const DEFAULT_SECONDS: u64 = 10;
/// Cases per proptest round (one seed each).
pub const CASES_PER_ROUND: u32 = 64;

/// What a finished target did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The target's name.
    pub target: String,
    /// How many inputs the property was run on.
    pub cases: u64,
    /// How many rounds (seeds) were used.
    pub rounds: u64,
    /// Wall-clock time spent.
    pub elapsed: Duration,
}

/// A target that failed: the property broke, or the driver could not run.
///
/// Its `Debug` is its message, so that a test returning it prints the
/// minimal input readably.
pub struct Failure {
    /// The target's name.
    pub target: String,
    /// The seed of the failing round, when a property broke.
    pub seed: Option<u64>,
    /// What happened, with the minimal failing input.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seed {
            Some(seed) => write!(
                f,
                "fuzz target {} failed (replay with {SEED_ENV}={seed}): {}",
                self.target, self.message
            ),
            None => write!(f, "fuzz target {}: {}", self.target, self.message),
        }
    }
}

impl Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failure {}

/// The budget from [`SECONDS_ENV`], or [`DEFAULT_SECONDS`] when unset.
pub fn budget() -> Result<Duration, String> {
    match std::env::var(SECONDS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(Duration::from_secs(DEFAULT_SECONDS)),
        Err(error) => Err(format!("{SECONDS_ENV}: {error}")),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .ok_or_else(|| format!("{SECONDS_ENV}={text:?} is not a number of seconds")),
    }
}

/// Runs `property` on inputs from `strategy` for the [`budget`] (see
/// [`run_for`]), then appends the count of cases to the [`REPORT_ENV`] file.
pub fn run<S>(
    target: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<Summary, Failure>
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget().map_err(|message| Failure {
        target: target.to_owned(),
        seed: None,
        message,
    })?;
    let summary = run_for(target, budget, strategy, property)?;
    if let Some(path) = std::env::var_os(REPORT_ENV) {
        let line = format!(
            "{} {} {:.1}\n",
            summary.target,
            summary.cases,
            summary.elapsed.as_secs_f64()
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|error| Failure {
                target: target.to_owned(),
                seed: None,
                message: format!("cannot append to {}: {error}", path.to_string_lossy()),
            })?;
    }
    Ok(summary)
}

/// Runs `property` on inputs from `strategy` for `budget` (at least one
/// round), then prints the count of cases to stderr.
pub fn run_for<S>(
    target: &str,
    budget: Duration,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<Summary, Failure>
where
    S: Strategy,
    S::Value: Debug,
{
    let failure = |seed, message| Failure {
        target: target.to_owned(),
        seed,
        message,
    };
    let replay = match std::env::var(SEED_ENV) {
        Ok(text) => Some(
            text.trim()
                .parse::<u64>()
                .map_err(|_| failure(None, format!("{SEED_ENV}={text:?} is not a u64")))?,
        ),
        Err(_) => None,
    };
    let started = Instant::now();
    let deadline = started + budget;
    let cases = AtomicU64::new(0);
    // Once an input fails, every later call is part of shrinking and must
    // run for real, deadline or not.
    let failing = AtomicBool::new(false);
    let mut rounds = 0;
    loop {
        let seed = replay.unwrap_or_else(random_seed);
        let mut runner = TestRunner::new(Config {
            cases: CASES_PER_ROUND,
            failure_persistence: None,
            fork: false,
            timeout: 0,
            rng_seed: RngSeed::Fixed(seed),
            max_shrink_iters: 4096,
            // A failure's shrinking takes at most the budget again (at
            // least a second), so a failing run stays bounded too.
            max_shrink_time: u32::try_from(budget.as_millis().clamp(1_000, 60_000))
                .expect("clamped to 60 000"),
            ..Config::default()
        });
        rounds += 1;
        let outcome = runner.run(&strategy, |input| {
            if !failing.load(Ordering::Relaxed)
                && replay.is_none()
                && Instant::now() >= deadline
                && cases.load(Ordering::Relaxed) > 0
            {
                return Ok(()); // out of time: let the round finish quickly
            }
            cases.fetch_add(1, Ordering::Relaxed);
            let result = catch_unwind(AssertUnwindSafe(|| property(input)))
                .unwrap_or_else(|panic| Err(TestCaseError::fail(panic_message(&*panic))));
            if matches!(result, Err(TestCaseError::Fail(_))) {
                failing.store(true, Ordering::Relaxed);
            }
            result
        });
        match outcome {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                return Err(failure(
                    Some(seed),
                    format!("{reason}\nminimal failing input: {input:#?}"),
                ));
            }
            Err(TestError::Abort(reason)) => {
                return Err(failure(Some(seed), format!("aborted: {reason}")));
            }
        }
        if replay.is_some() || Instant::now() >= deadline {
            break;
        }
    }
    let summary = Summary {
        target: target.to_owned(),
        cases: cases.into_inner(),
        rounds,
        elapsed: started.elapsed(),
    };
    // Shown with the test's output (`--nocapture`, or on failure).
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {} {} {:.1}",
        summary.target,
        summary.cases,
        summary.elapsed.as_secs_f64()
    );
    Ok(summary)
}

fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    format!("panicked: {text}")
}

/// `valid` damaged the ways files get damaged: a few of cut short, bytes
/// flipped, inserted, removed or repeated (or left intact).
pub fn damaged(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    use proptest::sample::Index;

    #[derive(Debug, Clone)]
    enum Damage {
        Truncate(Index),
        Flip(Index, u8),
        Insert(Index, u8),
        Remove(Index),
        Repeat(Index, Index),
    }
    let damage = prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1..=u8::MAX).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert(at, byte)),
        any::<Index>().prop_map(Damage::Remove),
        (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Damage::Repeat(from, to)),
    ];
    (valid, proptest::collection::vec(damage, 0..4)).prop_map(|(mut bytes, damages)| {
        for damage in damages {
            if bytes.is_empty() {
                break;
            }
            let len = bytes.len();
            match damage {
                Damage::Truncate(at) => bytes.truncate(at.index(len)),
                Damage::Flip(at, mask) => bytes[at.index(len)] ^= mask,
                Damage::Insert(at, byte) => bytes.insert(at.index(len + 1), byte),
                Damage::Remove(at) => {
                    bytes.remove(at.index(len));
                }
                Damage::Repeat(from, to) => {
                    let (a, b) = (from.index(len), to.index(len));
                    let (start, end) = (a.min(b), a.max(b) + 1);
                    let copy = bytes[start..end].to_vec();
                    bytes.splice(end..end, copy);
                }
            }
        }
        bytes
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_broken_property_is_shrunk_and_reported_with_its_seed() {
        let result = run_for("broken", Duration::from_secs(5), 0u32..100_000, |n| {
            prop_assert!(n < 500);
            Ok(())
        });
        let failure = result.expect_err("most inputs are 500 or more");
        assert!(failure.seed.is_some());
        assert!(
            failure.message.contains("minimal failing input: 500"),
            "{failure}"
        );
        assert!(failure.to_string().contains(SEED_ENV), "{failure}");
    }

    #[test]
    fn a_panic_is_a_failure_not_a_crash() {
        let result = run_for("panics", Duration::from_secs(5), any::<u8>(), |n| {
            assert!(n < 10, "too big");
            Ok(())
        });
        let failure = result.expect_err("most bytes are 10 or more");
        assert!(failure.message.contains("panicked: too big"), "{failure}");
        assert!(
            failure.message.contains("minimal failing input: 10"),
            "{failure}"
        );
    }

    #[test]
    fn a_sound_property_runs_for_its_budget() {
        let summary = run_for("sound", Duration::from_millis(200), any::<u8>(), |_| Ok(()))
            .expect("nothing fails");
        assert_eq!(summary.target, "sound");
        assert!(summary.cases >= u64::from(CASES_PER_ROUND));
        assert!(summary.rounds >= 1);
    }

    #[test]
    fn damage_leaves_some_inputs_intact_and_changes_others() {
        use proptest::strategy::ValueTree;

        let valid = b"{\"a\": 1}".to_vec();
        let strategy = damaged(Just(valid.clone()));
        let mut runner = TestRunner::deterministic();
        let (mut intact, mut changed) = (0, 0);
        for _ in 0..200 {
            let bytes = strategy
                .new_tree(&mut runner)
                .expect("no rejections")
                .current();
            if bytes == valid {
                intact += 1;
            } else {
                changed += 1;
            }
        }
        assert!(
            intact > 0 && changed > 0,
            "{intact} intact, {changed} changed"
        );
    }
}
