//! Reclaiming leases whose holder is gone, and never the others.

use std::path::PathBuf;
use std::time::Duration;

use port_alloc::{Holder, Liveness, StaleReason};
use registry::ProcessIdentity;
use test_support::{TestResult, child};

use crate::{allocator, read_ports, report_ports, wait_for};

/// Child: lease `names` for `owner` as this process, report the ports, hold
/// them until `stop` appears.
fn holding_child(args: &[String]) -> TestResult {
    let [state, start, end, owner, stop] = args else {
        return Err(format!("unexpected child args {args:?}").into());
    };
    let ports = allocator(&PathBuf::from(state), start.parse()?..end.parse()?)?;
    let lease = ports.lease(
        owner,
        &["APP_PORT", "API_PORT", "DB_PORT"],
        Holder::current_process(),
    )?;
    report_ports(lease.ports.values().copied())?;
    wait_for(&PathBuf::from(stop))?;
    Ok(())
}

#[test]
fn sigkilled_holder_is_reclaimed_and_a_live_one_never() -> TestResult {
    if let Some(args) = child::args() {
        return holding_child(&args);
    }
    let state = tempfile::tempdir()?;
    let signals = tempfile::tempdir()?;
    let stop = signals.path().join("stop");
    let (start, end) = (30100u16, 30164u16);
    let spawn = |owner: &str| {
        child::spawn(
            "reclaim::sigkilled_holder_is_reclaimed_and_a_live_one_never",
            &[
                state.path().display().to_string(),
                start.to_string(),
                end.to_string(),
                owner.to_owned(),
                stop.display().to_string(),
            ],
        )
    };
    let mut victim = spawn("victim")?;
    let mut survivor = spawn("survivor")?;
    let mut victim_ports = read_ports(&mut victim)?;
    let survivor_ports = read_ports(&mut survivor)?;
    let victim_pid = victim.id();

    victim.kill()?; // SIGKILL
    victim.wait()?;

    let ports = allocator(state.path(), start..end)?;
    let listed = ports.list()?;
    let victim_info = listed
        .iter()
        .find(|l| l.owner == "victim")
        .ok_or("victim not listed")?;
    assert_eq!(
        victim_info.liveness,
        Liveness::Stale(StaleReason::Exited { pid: victim_pid })
    );

    let reclaimed = ports.reclaim()?;
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    assert_eq!(reclaimed[0].owner, "victim");
    assert_eq!(reclaimed[0].reason, StaleReason::Exited { pid: victim_pid });
    let mut freed: Vec<u16> = reclaimed[0].ports.values().copied().collect();
    freed.sort_unstable();
    victim_ports.sort_unstable();
    assert_eq!(freed, victim_ports);

    // The live holder keeps its lease, through any number of reclaims and
    // leases by others.
    assert!(ports.reclaim()?.is_empty());
    let other = ports.lease("newcomer", &["APP_PORT"], Holder::Manual)?;
    assert!(!survivor_ports.contains(&other.port("APP_PORT").ok_or("no port")?));
    let listed = ports.list()?;
    let survivor_info = listed
        .iter()
        .find(|l| l.owner == "survivor")
        .ok_or("survivor was reclaimed")?;
    assert_eq!(survivor_info.liveness, Liveness::Running);
    assert_eq!(survivor_info.pid, Some(survivor.id()));
    let mut held: Vec<u16> = survivor_info.ports.values().copied().collect();
    held.sort_unstable();
    let mut expected = survivor_ports.clone();
    expected.sort_unstable();
    assert_eq!(held, expected);
    assert!(listed.iter().all(|l| l.owner != "victim"));

    std::fs::write(&stop, "")?;
    child::wait_success(survivor)?;
    Ok(())
}

#[test]
fn a_reused_pid_does_not_keep_a_lease() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 30200..30232)?;
    // Our own pid with another start time: what a recorded holder looks like
    // once it died and the kernel gave its pid to this process.
    let me = ProcessIdentity::current();
    let earlier = ProcessIdentity {
        start_time: me.start_time.saturating_sub(1),
        ..me
    };
    let lease = ports.lease("old-run", &["APP_PORT"], Holder::Process(earlier))?;
    let reclaimed = ports.reclaim()?;
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].reason, StaleReason::PidReused { pid: me.pid });
    assert_eq!(reclaimed[0].ports, lease.ports);
    Ok(())
}

#[test]
fn ttl_leases_live_by_heartbeat_and_expire_without() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 30300..30332)?;
    ports.lease(
        "beating",
        &["APP_PORT"],
        Holder::Expires {
            ttl: Duration::from_secs(3600),
        },
    )?;
    let short = ports.lease(
        "silent",
        &["APP_PORT", "API_PORT"],
        Holder::Expires {
            ttl: Duration::from_millis(50),
        },
    )?;
    ports.heartbeat("beating")?;
    std::thread::sleep(Duration::from_millis(120));

    let listed = ports.list()?;
    let beating = listed.iter().find(|l| l.owner == "beating").ok_or("gone")?;
    assert!(matches!(beating.liveness, Liveness::Fresh { .. }));
    assert_eq!(
        beating.holder,
        Holder::Expires {
            ttl: Duration::from_secs(3600)
        }
    );
    assert_eq!(beating.pid, None);
    let silent = listed.iter().find(|l| l.owner == "silent").ok_or("gone")?;
    assert!(matches!(
        silent.liveness,
        Liveness::Stale(StaleReason::Expired { .. })
    ));
    // Too late for a heartbeat: the lease may already be promised elsewhere.
    assert!(matches!(
        ports.heartbeat("silent"),
        Err(port_alloc::Error::NotLeased { owner }) if owner == "silent"
    ));

    let reclaimed = ports.reclaim()?;
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].owner, "silent");
    assert_eq!(reclaimed[0].ports, short.ports);
    assert!(matches!(
        ports.heartbeat("silent"),
        Err(port_alloc::Error::NotLeased { .. })
    ));
    ports.heartbeat("beating")?;
    Ok(())
}

#[test]
fn manual_leases_are_never_reclaimed() -> TestResult {
    let state = tempfile::tempdir()?;
    let ports = allocator(state.path(), 30400..30432)?;
    let lease = ports.lease("worktree-a", &["APP_PORT", "API_PORT"], Holder::Manual)?;
    assert!(ports.reclaim()?.is_empty());
    // Leasing for others reclaims too, and still leaves it alone.
    ports.lease("other", &["APP_PORT"], Holder::current_process())?;
    let listed = ports.list()?;
    let manual = listed
        .iter()
        .find(|l| l.owner == "worktree-a")
        .ok_or("manual lease reclaimed")?;
    assert_eq!(manual.liveness, Liveness::Manual);
    assert_eq!(manual.ports, lease.ports);
    assert_eq!(ports.release_owner("worktree-a")?.len(), 2);
    Ok(())
}

#[test]
fn path_leases_live_while_their_path_exists() -> TestResult {
    let state = tempfile::tempdir()?;
    let repos = tempfile::tempdir()?;
    let (kept, deleted) = (repos.path().join("kept"), repos.path().join("deleted"));
    std::fs::create_dir(&kept)?;
    std::fs::create_dir(&deleted)?;
    let ports = allocator(state.path(), 30440..30472)?;
    let kept_lease = ports.lease("kept", &["APP_PORT"], Holder::Path(kept.clone()))?;
    let deleted_lease = ports.lease("deleted", &["APP_PORT"], Holder::Path(deleted.clone()))?;
    assert!(ports.reclaim()?.is_empty(), "both paths exist");
    let listed = ports.list()?;
    assert!(
        listed
            .iter()
            .all(|l| l.liveness == Liveness::PathExists && matches!(&l.holder, Holder::Path(_))),
        "{listed:?}"
    );

    // The owner is deleted without releasing its lease (a CI workspace).
    std::fs::remove_dir_all(&deleted)?;
    let reclaimed = ports.reclaim()?;
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    assert_eq!(reclaimed[0].owner, "deleted");
    assert_eq!(reclaimed[0].reason, StaleReason::PathGone);
    assert_eq!(reclaimed[0].ports, deleted_lease.ports);
    let owners: Vec<String> = ports.list()?.into_iter().map(|l| l.owner).collect();
    assert_eq!(owners, ["kept"]);
    assert_eq!(
        ports.release_owner("kept")?,
        kept_lease.ports.values().copied().collect::<Vec<_>>()
    );
    Ok(())
}

/// Child: lease and release over and over until killed.
fn churning_child(args: &[String]) -> TestResult {
    let [state, start, end, owner] = args else {
        return Err(format!("unexpected child args {args:?}").into());
    };
    let ports = allocator(&PathBuf::from(state), start.parse()?..end.parse()?)?;
    report_ports([0])?;
    for round in 0..1_000_000u32 {
        let names: &[&str] = if round % 2 == 0 {
            &["APP_PORT", "API_PORT"]
        } else {
            &["APP_PORT", "API_PORT", "WS_PORT", "DB_PORT"]
        };
        ports.lease(owner, names, Holder::current_process())?;
        if round % 3 == 0 {
            ports.release_owner(owner)?;
        }
    }
    Ok(())
}

#[test]
fn processes_killed_mid_lease_leave_a_usable_document() -> TestResult {
    if let Some(args) = child::args() {
        return churning_child(&args);
    }
    let state = tempfile::tempdir()?;
    let (start, end) = (30500u16, 30532u16);
    let mut children = Vec::new();
    for i in 0..4 {
        let mut churner = child::spawn(
            "reclaim::processes_killed_mid_lease_leave_a_usable_document",
            &[
                state.path().display().to_string(),
                start.to_string(),
                end.to_string(),
                format!("churn-{i}"),
            ],
        )?;
        read_ports(&mut churner)?; // running
        children.push(churner);
    }
    // Kill each at a different, arbitrary moment of its loop.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    for (i, mut churner) in children.into_iter().enumerate() {
        let pause = 5 + (seed as usize / (i + 1)) % 60;
        std::thread::sleep(Duration::from_millis(pause as u64));
        churner.kill()?;
        churner.wait()?;
    }

    let ports = allocator(state.path(), start..end)?;
    // The document is intact, and whatever the dead held comes back.
    let before = ports.list()?;
    assert!(before.iter().all(|l| l.owner.starts_with("churn-")));
    let reclaimed = ports.reclaim()?;
    assert_eq!(reclaimed.len(), before.len());
    assert!(
        reclaimed
            .iter()
            .all(|r| matches!(r.reason, StaleReason::Exited { .. }))
    );
    assert!(ports.list()?.is_empty());
    // And the whole range can be leased again.
    let all: Vec<String> = (0..(end - start)).map(|i| format!("P{i}")).collect();
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    let lease = ports.lease("after", &names, Holder::current_process())?;
    assert_eq!(lease.ports.len(), usize::from(end - start));
    Ok(())
}
