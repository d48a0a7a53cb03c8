//! Host-wide claims: leases kept in different documents (two users' state
//! directories, or two of one user) never share a port, and nobody's
//! leftovers block a port for good.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use port_alloc::{Error, Holder, Options, PortAllocator};
use test_support::TestResult;

/// An allocator with its own state directory and the shared `claims`.
fn allocator_sharing(state: &Path, claims: &Path) -> TestResult<PortAllocator> {
    Ok(PortAllocator::open(Options {
        state_dir: Some(state.to_owned()),
        claims_dir: Some(claims.to_owned()),
        range: Some(32100..=32115),
        allow_ephemeral_overlap: true,
        ..Options::default()
    })?)
}

fn ports_of(allocator: &PortAllocator) -> TestResult<BTreeSet<u16>> {
    Ok(allocator
        .list()?
        .into_iter()
        .flat_map(|lease| lease.ports.into_values())
        .collect())
}

#[test]
fn two_documents_never_share_a_port() -> TestResult {
    let base = tempfile::tempdir()?;
    let claims = base.path().join("claims");
    let one = allocator_sharing(&base.path().join("one"), &claims)?;
    let two = allocator_sharing(&base.path().join("two"), &claims)?;
    // The same owner names in both: the same preferred block, so without
    // the claims both would start at the same ports.
    for n in 0..4 {
        let owner = format!("wt-{n}");
        one.lease(&owner, &["APP_PORT", "API_PORT"], Holder::Manual)?;
        two.lease(&owner, &["APP_PORT", "API_PORT"], Holder::Manual)?;
    }
    let (a, b) = (ports_of(&one)?, ports_of(&two)?);
    assert_eq!((a.len(), b.len()), (8, 8));
    assert!(a.is_disjoint(&b), "{a:?} and {b:?} share ports");

    // The claims directory is sticky and world-writable, like /tmp.
    let mode = std::fs::metadata(&claims)?.permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);

    // The whole range is held between them: a third document gets none.
    let three = allocator_sharing(&base.path().join("three"), &claims)?;
    let error = three
        .lease("wt-x", &["APP_PORT"], Holder::Manual)
        .err()
        .ok_or("a port held by another document was leased again")?;
    assert!(matches!(error, Error::Exhausted { .. }), "{error:?}");

    // Released ports go back to everyone.
    let freed = one.release_owner("wt-0")?;
    assert_eq!(freed.len(), 2);
    let lease = three.lease("wt-x", &["APP_PORT", "API_PORT"], Holder::Manual)?;
    let got: BTreeSet<u16> = lease.ports.into_values().collect();
    assert_eq!(got, freed.into_iter().collect());
    Ok(())
}

#[test]
fn claims_of_a_removed_state_dir_are_taken_over() -> TestResult {
    let base = tempfile::tempdir()?;
    let claims = base.path().join("claims");
    let gone = base.path().join("gone");
    let held = {
        let ports = allocator_sharing(&gone, &claims)?;
        ports_of_lease(&ports.lease("wt", &["APP_PORT"], Holder::Manual)?)
    };
    // A CI workspace deleted without releasing anything.
    std::fs::remove_dir_all(&gone)?;
    let other = allocator_sharing(&base.path().join("other"), &claims)?;
    let lease = other.lease("wt", &["APP_PORT"], Holder::Manual)?;
    assert_eq!(
        ports_of_lease(&lease),
        held,
        "the stale claim was not taken over"
    );
    Ok(())
}

fn ports_of_lease(lease: &port_alloc::Lease) -> BTreeSet<u16> {
    lease.ports.values().copied().collect()
}

#[test]
fn reclaim_removes_claims_no_lease_holds() -> TestResult {
    let base = tempfile::tempdir()?;
    let claims = base.path().join("claims");
    let ports = allocator_sharing(&base.path().join("state"), &claims)?;
    let lease = ports.lease("wt", &["APP_PORT"], Holder::Manual)?;
    let port = lease.port("APP_PORT").ok_or("no APP_PORT")?;
    // A crash between claim and lease leaves a claim of this document
    // that its lease document does not know: make one by copying ours.
    let leftover = port + 1;
    std::fs::copy(
        claims.join(port.to_string()),
        claims.join(leftover.to_string()),
    )?;
    let other = allocator_sharing(&base.path().join("other"), &claims)?;
    assert!(
        !ports_of_lease(&other.lease("x", &["A", "B"], Holder::Manual)?).contains(&leftover),
        "a claimed port was leased by another document"
    );
    other.release_owner("x")?;
    ports.reclaim()?;
    assert!(!claims.join(leftover.to_string()).exists());
    assert!(
        claims.join(port.to_string()).exists(),
        "a live claim was removed"
    );
    Ok(())
}

#[test]
fn the_last_port_can_be_leased() -> TestResult {
    let base = tempfile::tempdir()?;
    let ports = PortAllocator::open(Options {
        state_dir: Some(base.path().join("state")),
        claims_dir: Some(base.path().join("claims")),
        range: Some(65534..=65535),
        allow_ephemeral_overlap: true,
        ..Options::default()
    })?;
    let lease = ports.lease("top", &["A", "B"], Holder::Manual)?;
    assert_eq!(ports_of_lease(&lease), BTreeSet::from([65534, 65535]));
    Ok(())
}

#[test]
fn a_state_dir_of_another_user_is_refused_at_once() -> TestResult {
    let base = tempfile::tempdir()?;
    let state = base.path().join("state");
    std::fs::create_dir(&state)?;
    // Owned by nobody (65534); we run as root in CI, as any user locally.
    let me = nix::unistd::geteuid().as_raw();
    let foreign = if me == 65534 { 65533 } else { 65534 };
    if nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(foreign)), None).is_err() {
        // Only root may give a directory away; any other user makes one
        // that is not theirs by using a system directory.
        return check_refused(Path::new("/"), 0, me);
    }
    check_refused(&state, foreign, me)
}

fn check_refused(state: &Path, owner: u32, me: u32) -> TestResult {
    let error = PortAllocator::open(Options {
        state_dir: Some(state.to_owned()),
        claims_dir: Some(std::env::temp_dir().join("unused-claims")),
        ..Options::default()
    })
    .err()
    .ok_or("another user's state dir was accepted")?;
    match &error {
        Error::ForeignStateDir { owner_uid, uid, .. } => {
            assert_eq!((*owner_uid, *uid), (owner, me));
        }
        other => return Err(format!("unexpected error {other:?}").into()),
    }
    assert!(error.to_string().contains("ISOLANE_STATE_DIR"), "{error}");
    Ok(())
}
