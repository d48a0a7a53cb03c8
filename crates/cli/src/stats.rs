//! The statistics of `isolane compare`, as pure functions.
//!
//! Each figure has samples from two sides, BASE and HEAD (times: lower is
//! better). The estimate is the ratio of the medians, HEAD/BASE, and its 95%
//! interval comes from a percentile bootstrap: each side is resampled with
//! replacement on its own, the ratio of the two resampled medians is taken
//! [`RESAMPLES`] times, and the 2.5% and 97.5% quantiles of those ratios
//! bound the interval (none with fewer than 4 runs a side, see
//! [`enough_for_an_interval`]). The medians make one stalled run (a page fault storm,
//! another job on the machine) move nothing; the bootstrap needs no
//! assumption about the shape of the distribution of times, which is
//! skewed and often has more than one mode. The resampling is driven by a
//! fixed seed, so the same samples always give the same interval.

/// Bootstrap resamples per interval.
pub(crate) const RESAMPLES: usize = 10_000;

/// The seed of every bootstrap: a report is reproducible from its samples.
const SEED: u64 = 0x6973_6f6c_616e_6531;

/// How HEAD compares with BASE on one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Verdict {
    /// The whole interval lies below `1 / (1 + threshold)`.
    Faster,
    /// The whole interval lies above `1 + threshold`.
    Slower,
    /// The interval reaches into the threshold band around 1: no change
    /// beyond the threshold can be told apart from the noise.
    NoDifference,
}

impl Verdict {
    /// How the report names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Faster => "faster",
            Self::Slower => "slower",
            Self::NoDifference => "no difference at this noise",
        }
    }
}

/// A figure compared: medians, ratio, interval, verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Comparison {
    pub(crate) base_median: f64,
    pub(crate) head_median: f64,
    /// HEAD median / BASE median; `None` when the BASE median is 0.
    pub(crate) ratio: Option<f64>,
    /// The 95% interval of the ratio; `None` with too few samples for one
    /// ([`enough_for_an_interval`]) or a BASE median of 0.
    pub(crate) interval: Option<(f64, f64)>,
    pub(crate) verdict: Verdict,
}

/// Compares two sides' samples; `None` when a side has none. `threshold`
/// is the smallest relative change worth a verdict (0.05 for 5%).
pub(crate) fn compare(base: &[f64], head: &[f64], threshold: f64) -> Option<Comparison> {
    let base_median = median(base)?;
    let head_median = median(head)?;
    let ratio = (base_median > 0.0).then(|| head_median / base_median);
    let interval = ratio_interval(base, head, RESAMPLES, SEED);
    Some(Comparison {
        base_median,
        head_median,
        ratio,
        interval,
        verdict: verdict(interval, threshold),
    })
}

/// Slower when the whole interval lies above `1 + threshold`, faster when
/// it lies below `1 / (1 + threshold)` (the same distance on a log scale),
/// no difference otherwise — also when there is no interval.
pub(crate) fn verdict(interval: Option<(f64, f64)>, threshold: f64) -> Verdict {
    match interval {
        Some((low, _)) if low > 1.0 + threshold => Verdict::Slower,
        Some((_, high)) if high < 1.0 / (1.0 + threshold) => Verdict::Faster,
        _ => Verdict::NoDifference,
    }
}

/// The median (the mean of the middle two for an even count); `None` for
/// no samples.
pub(crate) fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// Whether samples of `n` and `m` can support a 95% interval at all: only
/// when even two samples that do not overlap would be unlikely by chance,
/// at most 5% (two-sided) by an exact rank test, i.e. when there are at
/// least 40 ways to choose `n` of the `n + m` ranks. With 3 runs a side,
/// two identical commands give non-overlapping samples one time in ten, and
/// the bootstrap would call that a difference; from 4 runs a side (1 in 35)
/// it can be trusted.
pub(crate) fn enough_for_an_interval(n: usize, m: usize) -> bool {
    // C(n + m, n), built up as C(m + k, k) for k = 1..=n; exact at every
    // step, and stopped as soon as it reaches 40.
    let mut ways: u128 = 1;
    for k in 1..=n {
        ways = ways * (m + k) as u128 / k as u128;
        if ways >= 40 {
            return true;
        }
    }
    false
}

/// The percentile-bootstrap 95% interval of median(head) / median(base):
/// `resamples` ratios of the medians of the two sides each resampled with
/// replacement, cut at their 2.5% and 97.5% quantiles. `None` with too few
/// samples for one ([`enough_for_an_interval`]), or when a resampled BASE
/// median is 0.
pub(crate) fn ratio_interval(
    base: &[f64],
    head: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    if !enough_for_an_interval(base.len(), head.len()) || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut scratch = Vec::with_capacity(base.len().max(head.len()));
    let mut ratios = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let b = resampled_median(base, &mut rng, &mut scratch)?;
        let h = resampled_median(head, &mut rng, &mut scratch)?;
        if b <= 0.0 {
            return None;
        }
        ratios.push(h / b);
    }
    ratios.sort_unstable_by(f64::total_cmp);
    // Nearest-rank quantiles: with 10 000 resamples, the 251st and the
    // 9 750th smallest ratios.
    let count = ratios.len() as f64;
    let low = (count * 0.025).floor() as usize;
    let high = ((count * 0.975).ceil() as usize).saturating_sub(1);
    Some((ratios[low], ratios[high.max(low)]))
}

fn resampled_median(samples: &[f64], rng: &mut SplitMix64, scratch: &mut Vec<f64>) -> Option<f64> {
    scratch.clear();
    scratch.extend((0..samples.len()).map(|_| samples[rng.below(samples.len())]));
    scratch.sort_unstable_by(f64::total_cmp);
    median_of_sorted(scratch)
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny, well-mixed seeded
/// generator, plenty for resampling indices; not for anything secret.
/// Hand-written rather than a dependency: eight lines, and the stream for
/// a seed can never change under us with a crate upgrade, so intervals
/// stay reproducible across versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (> 0), by Lemire's multiply-shift; its
    /// bias of at most n / 2^64 is far below anything a bootstrap sees.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // One wild run moves the median not at all.
        assert_eq!(median(&[1.0, 1.0, 1.0, 1.0, 1000.0]), Some(1.0));
    }

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // The first outputs for seed 1234567 of the reference C
        // implementation (splitmix64.c by Sebastiano Vigna).
        let mut rng = SplitMix64(1_234_567);
        assert_eq!(rng.next(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next(), 3_203_168_211_198_807_973);
        assert_eq!(rng.next(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn indices_cover_the_range_evenly() {
        let mut rng = SplitMix64(7);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.below(5)] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    /// A deterministic sample with spread: `center` times 1 ± up to 2%.
    fn noisy(center: f64, n: usize, salt: u64) -> Vec<f64> {
        let mut rng = SplitMix64(salt);
        (0..n)
            .map(|_| center * (0.98 + 0.04 * rng.below(1000) as f64 / 1000.0))
            .collect()
    }

    #[test]
    fn a_clear_slowdown_is_slower() -> TestResult {
        let base = noisy(0.100, 10, 1);
        let head = noisy(0.200, 10, 2);
        let c = compare(&base, &head, 0.05).ok_or("no comparison")?;
        assert_eq!(c.verdict, Verdict::Slower);
        let (low, high) = c.interval.ok_or("no interval")?;
        let ratio = c.ratio.ok_or("no ratio")?;
        assert!(low <= ratio && ratio <= high, "{low} {ratio} {high}");
        assert!(low > 1.8 && high < 2.2, "{low} {high}");
        Ok(())
    }

    #[test]
    fn a_clear_speedup_is_faster() -> TestResult {
        let c = compare(&noisy(0.2, 8, 3), &noisy(0.1, 8, 4), 0.05).ok_or("no comparison")?;
        assert_eq!(c.verdict, Verdict::Faster);
        Ok(())
    }

    #[test]
    fn the_same_distribution_is_no_difference() -> TestResult {
        for salt in 0..50 {
            let c = compare(&noisy(0.1, 10, salt), &noisy(0.1, 10, salt + 1000), 0.05)
                .ok_or("no comparison")?;
            assert_eq!(c.verdict, Verdict::NoDifference, "salt {salt}: {c:?}");
        }
        Ok(())
    }

    #[test]
    fn a_change_inside_the_threshold_gets_no_verdict() -> TestResult {
        // 3% slower, measured precisely: real, but under a 5% threshold...
        let c = compare(&noisy(0.100, 20, 5), &noisy(0.103, 20, 6), 0.05).ok_or("none")?;
        assert_eq!(c.verdict, Verdict::NoDifference);
        // ...and slower with no threshold at all.
        let c = compare(&noisy(0.100, 20, 5), &noisy(0.110, 20, 6), 0.0).ok_or("none")?;
        assert_eq!(c.verdict, Verdict::Slower);
        Ok(())
    }

    #[test]
    fn verdicts_follow_the_interval_and_threshold() {
        assert_eq!(verdict(Some((1.06, 1.2)), 0.05), Verdict::Slower);
        assert_eq!(verdict(Some((1.04, 1.2)), 0.05), Verdict::NoDifference);
        assert_eq!(verdict(Some((0.5, 0.95)), 0.05), Verdict::Faster);
        assert_eq!(verdict(Some((0.5, 0.96)), 0.05), Verdict::NoDifference);
        assert_eq!(verdict(Some((0.9, 1.1)), 0.0), Verdict::NoDifference);
        assert_eq!(verdict(None, 0.05), Verdict::NoDifference);
    }

    #[test]
    fn an_interval_needs_enough_samples() {
        // C(n + m, n) >= 40.
        for (n, m, enough) in [
            (0, 9, false),
            (1, 38, false),
            (1, 39, true),
            (2, 2, false),
            (3, 3, false),
            (3, 4, false),
            (3, 5, true),
            (4, 4, true),
            (2, 8, true),
            (10, 10, true),
            (1000, 1000, true),
        ] {
            assert_eq!(enough_for_an_interval(n, m), enough, "{n} and {m}");
            assert_eq!(enough_for_an_interval(m, n), enough, "{m} and {n}");
        }
    }

    #[test]
    fn too_few_samples_give_no_interval() -> TestResult {
        assert_eq!(ratio_interval(&[1.0], &[2.0, 2.1], 100, 1), None);
        // Three runs a side that do not overlap: no interval, no verdict.
        let c = compare(&[1.0, 1.1, 1.2], &[3.0, 3.1, 3.2], 0.05).ok_or("none")?;
        assert_eq!((c.interval, c.verdict), (None, Verdict::NoDifference));
        let c = compare(&[1.0, 1.1, 1.2, 1.3], &[3.0, 3.1, 3.2, 3.3], 0.05).ok_or("none")?;
        assert_eq!(c.verdict, Verdict::Slower);
        let c = compare(&[1.0], &[9.0], 0.05).ok_or("no comparison")?;
        assert_eq!(c.ratio, Some(9.0));
        assert_eq!(c.interval, None);
        assert_eq!(c.verdict, Verdict::NoDifference);
        assert_eq!(compare(&[], &[1.0], 0.05), None);
        Ok(())
    }

    #[test]
    fn a_zero_base_has_no_ratio() -> TestResult {
        let c = compare(&[0.0, 0.0, 0.0], &[1.0, 1.0, 1.0], 0.05).ok_or("none")?;
        assert_eq!((c.ratio, c.interval), (None, None));
        assert_eq!(c.verdict, Verdict::NoDifference);
        Ok(())
    }

    #[test]
    fn the_interval_is_reproducible_and_brackets_the_ratio() -> TestResult {
        let (base, head) = (noisy(1.0, 7, 8), noisy(1.5, 9, 9));
        let first = ratio_interval(&base, &head, RESAMPLES, SEED).ok_or("none")?;
        assert_eq!(ratio_interval(&base, &head, RESAMPLES, SEED), Some(first));
        let ratio = median(&head).ok_or("none")? / median(&base).ok_or("none")?;
        assert!(first.0 <= ratio && ratio <= first.1, "{first:?} {ratio}");
        // Every resampled median lies within its side's range, so the
        // interval lies within the extreme ratios.
        let min = |s: &[f64]| s.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |s: &[f64]| s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(first.0 >= min(&head) / max(&base));
        assert!(first.1 <= max(&head) / min(&base));
        Ok(())
    }
}
