//! The lease range: the kernel's ephemeral range, the default range outside
//! it, and validation of a configured range.

use std::ops::RangeInclusive;

use crate::Error;

/// Where Linux publishes the ephemeral range.
const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The IANA dynamic range, which BSDs, macOS and Windows use by default;
/// assumed where the kernel does not say.
const FALLBACK_EPHEMERAL: RangeInclusive<u16> = 49152..=65535;

/// The range used when none is configured and it is clear of the
/// ephemeral range.
const PREFERRED_DEFAULT: RangeInclusive<u16> = 20000..=29999;

/// Ports below this need privileges on most systems.
const FIRST_UNPRIVILEGED: u16 = 1024;

/// The kernel's ephemeral port range (inclusive), from which outgoing
/// connections take their local ports.
///
/// Read from `/proc/sys/net/ipv4/ip_local_port_range` on Linux; elsewhere,
/// or when that file is unreadable, the IANA dynamic range 49152-65535.
pub fn ephemeral_range() -> RangeInclusive<u16> {
    match std::fs::read_to_string(EPHEMERAL_RANGE_FILE) {
        Ok(text) => parse_ephemeral(&text).unwrap_or_else(|| {
            tracing::warn!(file = EPHEMERAL_RANGE_FILE, content = %text.trim(), "cannot parse the ephemeral port range; assuming 49152-65535");
            FALLBACK_EPHEMERAL
        }),
        Err(error) => {
            tracing::debug!(file = EPHEMERAL_RANGE_FILE, %error, "no ephemeral port range from the kernel; assuming 49152-65535");
            FALLBACK_EPHEMERAL
        }
    }
}

fn parse_ephemeral(text: &str) -> Option<RangeInclusive<u16>> {
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    let low = fields.next()?.ok()?;
    let high = fields.next()?.ok()?;
    (low <= high).then_some(low..=high)
}

/// Validates a configured range, or derives the default one.
pub(crate) fn resolve(
    configured: Option<RangeInclusive<u16>>,
    ephemeral: &RangeInclusive<u16>,
    allow_ephemeral_overlap: bool,
) -> Result<RangeInclusive<u16>, Error> {
    let Some(range) = configured else {
        return default_range(ephemeral);
    };
    let (start, end) = (*range.start(), *range.end());
    if start > end {
        return Err(Error::InvertedRange { start, end });
    }
    if start == 0 {
        return Err(Error::RangeIncludesZero { start, end });
    }
    if !allow_ephemeral_overlap && overlaps(&range, ephemeral) {
        return Err(Error::EphemeralOverlap {
            start,
            end,
            ephemeral_start: *ephemeral.start(),
            ephemeral_end: *ephemeral.end(),
        });
    }
    Ok(range)
}

fn overlaps(range: &RangeInclusive<u16>, ephemeral: &RangeInclusive<u16>) -> bool {
    range.start() <= ephemeral.end() && range.end() >= ephemeral.start()
}

/// How many ports `range` holds.
pub(crate) fn len(range: &RangeInclusive<u16>) -> usize {
    if range.is_empty() {
        0
    } else {
        usize::from(range.end() - range.start()) + 1
    }
}

/// 20000-29999 when clear of the ephemeral range, otherwise the larger
/// unprivileged gap below or above it (up to and including 65535).
fn default_range(ephemeral: &RangeInclusive<u16>) -> Result<RangeInclusive<u16>, Error> {
    if !overlaps(&PREFERRED_DEFAULT, ephemeral) {
        return Ok(PREFERRED_DEFAULT);
    }
    // No gap on a side: that side is empty.
    let below = (*ephemeral.start() > FIRST_UNPRIVILEGED)
        .then(|| FIRST_UNPRIVILEGED..=ephemeral.start() - 1);
    let above = ephemeral
        .end()
        .checked_add(1)
        .map(|first| first.max(FIRST_UNPRIVILEGED)..=u16::MAX);
    let size = |side: &Option<RangeInclusive<u16>>| side.as_ref().map_or(0, len);
    let best = if size(&below) >= size(&above) {
        below
    } else {
        above
    };
    let Some(best) = best.filter(|range| !range.is_empty()) else {
        return Err(Error::NoDefaultRange {
            ephemeral_start: *ephemeral.start(),
            ephemeral_end: *ephemeral.end(),
        });
    };
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_format() {
        assert_eq!(parse_ephemeral("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_ephemeral("60999 32768"), None);
        assert_eq!(parse_ephemeral("garbage"), None);
    }

    #[test]
    fn default_avoids_the_ephemeral_range() {
        assert_eq!(default_range(&(32768..=60999)).ok(), Some(20000..=29999));
        assert_eq!(default_range(&(10000..=60999)).ok(), Some(1024..=9999));
        assert_eq!(default_range(&(1024..=40000)).ok(), Some(40001..=65535));
        assert!(matches!(
            default_range(&(1..=65535)),
            Err(Error::NoDefaultRange { .. })
        ));
    }

    #[test]
    fn overlap_is_inclusive_of_the_ephemeral_ends() {
        assert!(overlaps(&(30000..=32768), &(32768..=60999)));
        assert!(!overlaps(&(30000..=32767), &(32768..=60999)));
        assert!(overlaps(&(60999..=61000), &(32768..=60999)));
        assert!(!overlaps(&(61000..=62000), &(32768..=60999)));
    }

    #[test]
    fn a_range_may_end_at_the_last_port() {
        assert_eq!(len(&(65535..=65535)), 1);
        assert_eq!(len(&(1024..=65535)), 64512);
        assert_eq!(
            resolve(Some(65000..=65535), &(32768..=60999), false).ok(),
            Some(65000..=65535)
        );
    }
}
