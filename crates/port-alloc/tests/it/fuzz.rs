//! Fuzzing lease requests: hostile owners and port names. A refused request
//! leases nothing and leaves the document as it was; an accepted one gets
//! distinct ports in the range for exactly the names asked for.

use std::collections::BTreeSet;

use port_alloc::{Error, Holder};
use proptest::prelude::*;
use test_support::TestResult;
use test_support::fuzz;

use crate::allocator;

/// The range of this module's tests (see `allocator`).
const RANGE: std::ops::Range<u16> = 31800..31808;

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Z_]{1,8}",
        2 => "[a-zA-Z0-9 ./\\\\;'\"$`-]{0,12}",
        1 => prop::sample::select(vec![
            "", " ", "../x", "a\0b", "a\nb", "\u{85}", "\u{7f}", "é", "APP_PORT", "\u{202e}x",
        ])
        .prop_map(str::to_owned),
        1 => "x{250,260}",
        1 => "é{126,130}",
        1 => any::<String>(),
    ]
}

/// The documented rule for an owner or a port name: non-empty, at most 255
/// bytes, no control characters.
fn reference_ok(text: &str) -> bool {
    !text.is_empty() && text.len() <= 255 && !text.chars().any(char::is_control)
}

#[test]
fn lease_requests_are_validated() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), RANGE)?;
    let request = (
        hostile_string(),
        prop::collection::vec(hostile_string(), 0..10),
    );
    fuzz::run("port_lease", request, |(owner, names)| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let distinct = names.iter().collect::<BTreeSet<_>>().len() == names.len();
        let acceptable = reference_ok(&owner)
            && !names.is_empty()
            && names.iter().all(|name| reference_ok(name))
            && distinct
            && names.len() <= RANGE.len();
        let before = std::fs::read(ports.path()).ok();
        match ports.lease(&owner, &names, Holder::current_process()) {
            Ok(lease) => {
                prop_assert!(acceptable, "accepted {owner:?} {names:?}");
                prop_assert_eq!(&lease.owner, &owner);
                prop_assert_eq!(lease.ports.len(), names.len());
                let leased: BTreeSet<u16> = lease.ports.values().copied().collect();
                prop_assert_eq!(leased.len(), names.len(), "a port leased twice");
                for name in &names {
                    let port = lease.port(name);
                    prop_assert!(
                        port.is_some_and(|p| RANGE.contains(&p)),
                        "{name:?}: {port:?}"
                    );
                }
                let mut released = ports.release_owner(&owner)?;
                released.sort_unstable();
                prop_assert_eq!(released, leased.into_iter().collect::<Vec<_>>());
            }
            Err(error) => {
                let invalid = error.is_invalid_input();
                prop_assert!(invalid, "{owner:?} {names:?}: unexpected error {error}");
                prop_assert!(!acceptable, "refused {owner:?} {names:?}: {error}");
                prop_assert!(
                    !matches!(error, Error::Registry(_)),
                    "{owner:?}: registry error {error}"
                );
                prop_assert_eq!(
                    std::fs::read(ports.path()).ok(),
                    before,
                    "a refused request changed the lease document"
                );
            }
        }
        prop_assert!(ports.list()?.is_empty(), "a lease was left behind");
        Ok(())
    })?;
    Ok(())
}
