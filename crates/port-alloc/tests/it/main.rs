//! Integration tests of port-alloc: real sockets, real processes.

mod claims;
mod concurrency;
mod errors;
mod fuzz;
mod leasing;
mod reclaim;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::Range;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use port_alloc::{Options, PortAllocator};
use test_support::TestResult;

/// An allocator on `state` leasing from `range`.
///
/// Each test uses its own range below the default 20000..30000 or above it
/// (but below Linux's usual ephemeral start, 32768), so tests running at the
/// same time never bind each other's ports.
pub(crate) fn allocator(state: &Path, range: Range<u16>) -> TestResult<PortAllocator> {
    Ok(PortAllocator::open(Options {
        state_dir: Some(state.to_owned()),
        claims_dir: Some(state.to_owned().join("claims")),
        range: Some(range.start..=range.end - 1),
        // The point of these tests is not the host's ephemeral range.
        allow_ephemeral_overlap: true,
        ..Options::default()
    })?)
}

/// Whether a TCP listener can be bound on `port` on 0.0.0.0 now.
pub(crate) fn bindable(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).is_ok()
}

/// Waits until `path` exists (a signal file from another process).
pub(crate) fn wait_for(path: &Path) -> TestResult {
    let started = Instant::now();
    while !path.exists() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("{} never appeared", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Reads the child's stdout up to its `PORTS a,b,c` line and returns the
/// ports; the rest of the output stays readable by `wait_success`.
pub(crate) fn read_ports(child: &mut Child) -> TestResult<Vec<u16>> {
    let stdout = child.stdout.take().ok_or("child stdout is not piped")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err("child exited without reporting its ports".into());
        }
        if let Some(list) = line.trim().strip_prefix("PORTS ") {
            let ports = list
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<u16>, _>>()?;
            // Keep the pipe open: the child still writes its test summary.
            child.stdout = Some(reader.into_inner());
            return Ok(ports);
        }
    }
}

/// Prints the ports for [`read_ports`] in the parent.
pub(crate) fn report_ports(ports: impl IntoIterator<Item = u16>) -> TestResult {
    let list: Vec<String> = ports.into_iter().map(|p| p.to_string()).collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "PORTS {}", list.join(","))?;
    stdout.flush()?;
    Ok(())
}
