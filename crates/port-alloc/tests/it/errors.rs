//! Bad input and exhaustion: distinct errors carrying the numbers.

use port_alloc::{Error, Holder, Options, PortAllocator};
use test_support::TestResult;

use crate::allocator;

fn open_with_range(
    range: std::ops::Range<u16>,
    allow: bool,
) -> TestResult<Result<PortAllocator, Error>> {
    let state = tempfile::tempdir()?;
    Ok(PortAllocator::open(Options {
        state_dir: Some(state.path().to_owned()),
        claims_dir: Some(state.path().to_owned().join("claims")),
        range: Some(range.start..=range.end - 1),
        allow_ephemeral_overlap: allow,
        ..Options::default()
    }))
}

#[test]
fn bad_names_are_refused() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 30600..30604)?;
    let holder = Holder::Manual;

    let error = ports
        .lease("wt", &[], holder.clone())
        .err()
        .ok_or("no names accepted")?;
    assert!(
        matches!(&error, Error::NoNames { owner } if owner == "wt"),
        "{error:?}"
    );

    let error = ports
        .lease("wt", &["APP_PORT", ""], holder.clone())
        .err()
        .ok_or("empty name accepted")?;
    assert!(
        matches!(error, Error::EmptyName { index: 1, .. }),
        "{error:?}"
    );

    let error = ports
        .lease("wt", &["APP_PORT", "API_PORT", "APP_PORT"], holder.clone())
        .err()
        .ok_or("duplicate accepted")?;
    assert!(
        matches!(&error, Error::DuplicateName { name, .. } if name == "APP_PORT"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "lease for \"wt\" names port \"APP_PORT\" more than once"
    );

    let error = ports
        .lease("wt", &["APP\nPORT"], holder.clone())
        .err()
        .ok_or("control character accepted")?;
    assert!(matches!(error, Error::InvalidName { .. }), "{error:?}");

    let error = ports
        .lease("", &["APP_PORT"], holder.clone())
        .err()
        .ok_or("empty owner accepted")?;
    assert!(matches!(error, Error::InvalidOwner { .. }), "{error:?}");

    let error = ports
        .lease("wt", &["A", "B", "C", "D", "E"], holder.clone())
        .err()
        .ok_or("more names than ports accepted")?;
    assert!(
        matches!(
            error,
            Error::TooManyNames {
                requested: 5,
                capacity: 4,
                start: 30600,
                end: 30603,
                ..
            }
        ),
        "{error:?}"
    );
    // Nothing was recorded by any refused request.
    assert!(ports.list()?.is_empty());
    Ok(())
}

#[test]
fn bad_ranges_are_refused() -> TestResult {
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = 30710..30701;
    let error = open_with_range(inverted, true)?
        .err()
        .ok_or("inverted range accepted")?;
    assert!(
        matches!(
            error,
            Error::InvertedRange {
                start: 30710,
                end: 30700
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "port range 30710-30700 is inverted: it ends before it starts"
    );
    let error = open_with_range(0..10, true)?
        .err()
        .ok_or("port 0 accepted")?;
    assert!(
        matches!(error, Error::RangeIncludesZero { .. }),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn ephemeral_overlap_is_refused_unless_allowed() -> TestResult {
    let ephemeral = port_alloc::ephemeral_range();
    let (low, high) = (*ephemeral.start(), *ephemeral.end());
    let overlapping = low.saturating_sub(10).max(1)..low.saturating_add(10);
    let error = open_with_range(overlapping.clone(), false)?
        .err()
        .ok_or("overlapping range accepted")?;
    match &error {
        Error::EphemeralOverlap {
            start,
            end,
            ephemeral_start,
            ephemeral_end,
        } => {
            assert_eq!((*start, *end), (overlapping.start, overlapping.end - 1));
            assert_eq!((*ephemeral_start, *ephemeral_end), (low, high));
        }
        other => return Err(format!("unexpected error {other:?}").into()),
    }
    let message = error.to_string();
    assert!(message.contains(&format!("{low}-{high}")), "{message}");
    assert!(message.contains("allow_ephemeral_overlap"), "{message}");

    let allowed = open_with_range(overlapping.clone(), true)??;
    assert_eq!(allowed.range(), overlapping.start..=overlapping.end - 1);

    // The default range never overlaps it.
    let state = tempfile::tempdir()?;
    let default = PortAllocator::open(Options {
        state_dir: Some(state.path().to_owned()),
        claims_dir: Some(state.path().to_owned().join("claims")),
        ..Options::default()
    })?;
    let range = default.range();
    assert!(
        *range.end() < low || *range.start() > high,
        "{range:?} vs {low}-{high}"
    );
    Ok(())
}

#[test]
fn exhaustion_then_release_lets_the_next_lease_succeed() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 30800..30806)?;
    let first = ports.lease("first", &["A", "B", "C"], Holder::Manual)?;
    let second = ports.lease("second", &["A", "B"], Holder::Manual)?;
    let error = ports
        .lease("third", &["A", "B"], Holder::Manual)
        .err()
        .ok_or("a full range leased more")?;
    assert!(
        matches!(
            &error,
            Error::Exhausted {
                owner,
                requested: 2,
                available: 1,
                leased: 5,
                start: 30800,
                end: 30805,
            } if owner == "third"
        ),
        "{error:?}"
    );
    // The refused request changed nothing.
    assert_eq!(ports.list()?.len(), 2);

    let mut released = ports.release_owner("second")?;
    released.sort_unstable();
    let mut expected: Vec<u16> = second.ports.values().copied().collect();
    expected.sort_unstable();
    assert_eq!(released, expected);
    let third = ports.lease("third", &["A", "B"], Holder::Manual)?;
    for port in third.ports.values() {
        assert!(!first.ports.values().any(|p| p == port));
    }
    Ok(())
}
