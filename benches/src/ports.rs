//! `ports`: leasing and releasing 4 named ports (with the registry write)
//! beside `portpicker::pick_unused_port()` x4, which reserves nothing; and
//! how many ports each hands to more than one of 16 processes asking at the
//! same moment.
//!
//! The 16-process load re-executes this benchmark binary (group `ports`)
//! with [`CHILD_ENV`] set; [`run`] plays the child role when it sees it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use port_alloc::{Holder, Options, PortAllocator};

use crate::{BenchResult, Config, Report, Row, Samples, interleaved, us};

/// Set in the child processes of the collision measurement:
/// `mode`, state dir, signal dir and index, unit-separated.
pub const CHILD_ENV: &str = "ISOLANE_BENCH_PORTS_CHILD";

const SEPARATOR: char = '\u{1f}';
const PROCESSES: usize = 16;
const PORTS_PER_PROCESS: usize = 8;
const NAMES: [&str; 4] = ["APP_PORT", "API_PORT", "REDIS_PORT", "WS_PORT"];
const CHILD_NAMES: [&str; PORTS_PER_PROCESS] = [
    "APP_PORT",
    "API_PORT",
    "ADMIN_PORT",
    "REDIS_PORT",
    "SMTP_PORT",
    "WS_PORT",
    "METRICS_PORT",
    "DEBUG_PORT",
];

/// Runs the group (or, in a child process, the child's part).
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    latency(config, report)?;
    collisions(config, report)
}

/// Lease + release of 4 ports, interleaved with portpicker x4.
fn latency(config: &Config, report: &mut Report) -> BenchResult {
    let state = tempfile::tempdir_in(&config.scratch)?;
    let ports = PortAllocator::open(Options {
        state_dir: Some(state.path().to_owned()),
        claims_dir: Some(state.path().to_owned().join("claims")),
        ..Options::default()
    })?;
    // A lived-in document: other worktrees hold leases too.
    for i in 0..16 {
        ports.lease(&format!("worktree-{i}"), &NAMES, Holder::Manual)?;
    }
    let holder = Holder::current_process();
    let iterations = config.iterations(2_000, 200);
    let mut lease_times = Vec::with_capacity(iterations + 50);
    let mut release_times = Vec::with_capacity(iterations + 50);
    let (_, picker) = interleaved(
        50,
        iterations,
        || {
            let start = Instant::now();
            let lease = ports.lease("bench-owner", &NAMES, holder.clone())?;
            lease_times.push(start.elapsed());
            let start = Instant::now();
            let released = ports.release_owner("bench-owner")?;
            release_times.push(start.elapsed());
            if released.len() != NAMES.len() || lease.ports.len() != NAMES.len() {
                return Err("lease and release disagree".into());
            }
            Ok(())
        },
        || {
            for _ in 0..NAMES.len() {
                portpicker::pick_unused_port().ok_or("portpicker found no port")?;
            }
            Ok(())
        },
    )?;
    // Drop the warm-up rounds, which interleaved does not time.
    let lease = Samples::new(lease_times.split_off(50));
    let release = Samples::new(release_times.split_off(50));

    report.figure("ports.lease_us_p50", us(lease.percentile(50.0)));
    report.figure("ports.lease_us_p95", us(lease.percentile(95.0)));
    report.figure("ports.lease_us_p99", us(lease.percentile(99.0)));
    report.figure("ports.release_us_p50", us(release.percentile(50.0)));
    report.figure("ports.release_us_p99", us(release.percentile(99.0)));
    report.figure("ports.portpicker_us_p50", us(picker.percentile(50.0)));
    report.figure("ports.portpicker_us_p99", us(picker.percentile(99.0)));
    report.figure(
        "ports.lease_vs_portpicker",
        crate::ratio(lease.percentile(50.0), picker.percentile(50.0)),
    );
    report.row(Row {
        group: "ports",
        subject: "lease 4 named ports (registry write)".to_owned(),
        samples: lease,
        baseline: Some(("portpicker::pick_unused_port x4".to_owned(), picker)),
    });
    report.row(Row {
        group: "ports",
        subject: "release a 4-port lease (registry write)".to_owned(),
        samples: release,
        baseline: None,
    });
    Ok(())
}

/// 16 processes asking for 8 ports each at the same moment, with port-alloc
/// and with portpicker; counts ports handed to more than one process.
fn collisions(config: &Config, report: &mut Report) -> BenchResult {
    let rounds = config.iterations(10, 2);
    let mut ours = 0;
    let mut baseline = 0;
    for _ in 0..rounds {
        ours += collision_round(config, "lease")?;
        baseline += collision_round(config, "portpicker")?;
    }
    report.figure("ports.collisions", ours as f64);
    report.figure("ports.baseline_collisions", baseline as f64);
    report.figure("ports.collision_rounds", rounds as f64);
    if ours != 0 {
        return Err(format!("port-alloc handed {ours} ports to more than one process").into());
    }
    Ok(())
}

/// One round: spawn the children, release them at once, collect their
/// ports, let them exit. Returns the number of ports handed out to more
/// than one process.
fn collision_round(config: &Config, mode: &str) -> BenchResult<usize> {
    let state = tempfile::tempdir_in(&config.scratch)?;
    let signals = tempfile::tempdir_in(&config.scratch)?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(PROCESSES);
    for index in 0..PROCESSES {
        let spec = [
            mode.to_owned(),
            state.path().display().to_string(),
            signals.path().display().to_string(),
            index.to_string(),
        ]
        .join(&SEPARATOR.to_string());
        let spawned = Command::new(&exe)
            .arg("ports")
            .env(CHILD_ENV, spec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => children.push(child),
            Err(error) => {
                finish(children, signals.path())?;
                return Err(error.into());
            }
        }
    }
    std::fs::write(signals.path().join("go"), "")?;
    let mut holders: HashMap<u16, Vec<usize>> = HashMap::new();
    let gathered = (0..PROCESSES).try_for_each(|index| {
        let path = signals.path().join(format!("ports-{index}"));
        wait_for(&path)?;
        let mut ports: Vec<u16> = std::fs::read_to_string(&path)?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            holders.entry(port).or_default().push(index);
        }
        Ok::<_, crate::BenchError>(())
    });
    finish(children, signals.path())?;
    gathered?;
    Ok(holders.values().filter(|owners| owners.len() > 1).count())
}

/// Tells the children to exit and waits for them, reporting a failed one.
fn finish(children: Vec<Child>, signals: &Path) -> BenchResult {
    std::fs::write(signals.join("stop"), "")?;
    let mut failure = None;
    for child in children {
        let output = child.wait_with_output()?;
        if !output.status.success() && failure.is_none() {
            failure = Some(format!(
                "collision child failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    match failure {
        Some(message) => Err(message.into()),
        None => Ok(()),
    }
}

/// The child: wait for `go`, get 8 ports, write them down, hold them (a
/// lease by this live process; portpicker's ports are merely remembered, as
/// a test harness does until its server binds) until `stop`.
fn child(spec: &str) -> BenchResult {
    let fields: Vec<&str> = spec.split(SEPARATOR).collect();
    let [mode, state, signals, index] = fields[..] else {
        return Err(format!("bad {CHILD_ENV} value {spec:?}").into());
    };
    let signals = PathBuf::from(signals);
    let allocator = match mode {
        "lease" => Some(PortAllocator::open(Options {
            state_dir: Some(PathBuf::from(state)),
            claims_dir: Some(PathBuf::from(state).join("claims")),
            ..Options::default()
        })?),
        "portpicker" => None,
        other => return Err(format!("unknown child mode {other}").into()),
    };
    wait_for(&signals.join("go"))?;
    let ports: Vec<u16> = match &allocator {
        Some(allocator) => allocator
            .lease(
                &format!("bench-child-{index}"),
                &CHILD_NAMES,
                Holder::current_process(),
            )?
            .ports
            .into_values()
            .collect(),
        None => (0..PORTS_PER_PROCESS)
            .map(|_| portpicker::pick_unused_port().ok_or("portpicker found no port"))
            .collect::<Result<_, _>>()?,
    };
    let text: Vec<String> = ports.iter().map(u16::to_string).collect();
    let temp = signals.join(format!(".ports-{index}"));
    std::fs::write(&temp, text.join(" "))?;
    std::fs::rename(&temp, signals.join(format!("ports-{index}")))?;
    wait_for(&signals.join("stop"))?;
    Ok(())
}

fn wait_for(path: &Path) -> BenchResult {
    let started = Instant::now();
    while !path.exists() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("{} never appeared", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
