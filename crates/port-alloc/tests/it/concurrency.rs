//! Many processes leasing at the same moment.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;

use port_alloc::{Holder, Liveness, Options, PortAllocator};
use test_support::{TestResult, child};

use crate::{read_ports, report_ports, wait_for};

const PROCESSES: usize = 16;
const NAMES: [&str; 8] = [
    "APP_PORT",
    "API_PORT",
    "ADMIN_PORT",
    "REDIS_PORT",
    "SMTP_PORT",
    "WS_PORT",
    "METRICS_PORT",
    "DEBUG_PORT",
];

/// Child: wait for `go`, lease 8 ports as this process with the default
/// range, report them, hold the lease until `stop` appears.
fn leasing_child(args: &[String]) -> TestResult {
    let [state, owner, go, stop] = args else {
        return Err(format!("unexpected child args {args:?}").into());
    };
    let ports = PortAllocator::open(Options {
        state_dir: Some(PathBuf::from(state)),
        claims_dir: Some(PathBuf::from(state).join("claims")),
        ..Options::default()
    })?;
    wait_for(&PathBuf::from(go))?;
    let lease = ports.lease(owner, &NAMES, Holder::current_process())?;
    report_ports(NAMES.iter().map(|name| lease.port(name).unwrap_or(0)))?;
    wait_for(&PathBuf::from(stop))?;
    Ok(())
}

#[test]
fn sixteen_processes_lease_eight_ports_each() -> TestResult {
    if let Some(args) = child::args() {
        return leasing_child(&args);
    }
    let state = tempfile::tempdir()?;
    let signals = tempfile::tempdir()?;
    let go = signals.path().join("go");
    let stop = signals.path().join("stop");
    let mut children = Vec::new();
    for i in 0..PROCESSES {
        children.push(child::spawn(
            "concurrency::sixteen_processes_lease_eight_ports_each",
            &[
                state.path().display().to_string(),
                format!("worker-{i}"),
                go.display().to_string(),
                stop.display().to_string(),
            ],
        )?);
    }
    // Every child is started and waiting: release them all at once.
    std::fs::write(&go, "")?;
    let mut all = Vec::new();
    let mut pids = HashSet::new();
    for child in &mut children {
        pids.insert(child.id());
        let ports = read_ports(child)?;
        assert_eq!(ports.len(), NAMES.len());
        assert!(!ports.contains(&0), "a name without a port: {ports:?}");
        all.extend(ports);
    }

    let distinct: HashSet<u16> = all.iter().copied().collect();
    assert_eq!(distinct.len(), PROCESSES * NAMES.len(), "ports: {all:?}");
    let ephemeral = read_kernel_ephemeral_range()?;
    for port in &all {
        assert!(
            !ephemeral.contains(port),
            "port {port} is in the ephemeral range {ephemeral:?}"
        );
    }
    // All bindable, at once (which also proves them distinct to the kernel).
    let listeners = all
        .iter()
        .map(|port| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port))))
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(listeners.len(), 128);
    drop(listeners);

    // The document agrees: 16 leases, each held by a live child.
    let observer = PortAllocator::open(Options {
        state_dir: Some(state.path().to_owned()),
        claims_dir: Some(state.path().to_owned().join("claims")),
        ..Options::default()
    })?;
    let leases = observer.list()?;
    assert_eq!(leases.len(), PROCESSES);
    for lease in &leases {
        assert_eq!(lease.liveness, Liveness::Running, "{lease:?}");
        assert!(pids.contains(&lease.pid.ok_or("a process lease without a pid")?));
        assert_eq!(lease.ports.len(), NAMES.len());
    }

    std::fs::write(&stop, "")?;
    for child in children {
        child::wait_success(child)?;
    }
    // The children are gone; their leases go with the next reclaim.
    assert_eq!(observer.reclaim()?.len(), PROCESSES);
    assert!(observer.list()?.is_empty());
    Ok(())
}

/// The kernel's ephemeral range, read independently of the crate.
fn read_kernel_ephemeral_range() -> TestResult<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let mut fields = text.split_whitespace();
    let low: u16 = fields.next().ok_or("no low end")?.parse()?;
    let high: u16 = fields.next().ok_or("no high end")?.parse()?;
    assert_eq!(port_alloc::ephemeral_range(), low..=high);
    Ok(low..=high)
}
