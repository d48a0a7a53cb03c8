//! `isolane ports [list | release ID | reclaim]`: the host-wide leases.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{age, print_json};
use crate::cli::PortsCommand;
use crate::context::{Repo, open_ports};

#[derive(Debug, Serialize)]
struct LeaseRow {
    owner: String,
    ports: BTreeMap<String, u16>,
    pid: Option<u32>,
    age_seconds: u64,
    /// running, fresh, manual or stale.
    liveness: &'static str,
}

pub(super) fn run(command: Option<PortsCommand>, json: bool) -> Result<ExitCode> {
    // Inside a repository its configuration (the port range) applies; the
    // leases are host-wide either way.
    let repo = Repo::discover().ok();
    let config = repo.as_ref().map(|r| r.config.clone()).unwrap_or_default();
    let ports = open_ports(&config)?;
    match command.unwrap_or(PortsCommand::List) {
        PortsCommand::List => list(&ports, json),
        PortsCommand::Release { owner } => {
            // A worktree id of this repository, or any owner as listed.
            let owner = match &repo {
                Some(repo) if repo.registry.read()?.entries.contains_key(&owner) => {
                    repo.owner(&owner)
                }
                _ => owner,
            };
            let released = ports.release_owner(&owner)?;
            if json {
                print_json(&released)?;
            } else if released.is_empty() {
                println!("{owner} held no ports");
            } else {
                println!("released {released:?} of {owner}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PortsCommand::Reclaim => {
            let reclaimed = ports.reclaim()?;
            if json {
                let rows: Vec<_> = reclaimed.iter().map(|r| (&r.owner, &r.ports)).collect();
                print_json(&rows)?;
            } else {
                for r in &reclaimed {
                    println!("reclaimed {:?} of {} ({:?})", r.ports, r.owner, r.reason);
                }
                println!("{} lease(s) reclaimed", reclaimed.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(ports: &port_alloc::PortAllocator, json: bool) -> Result<ExitCode> {
    let rows: Vec<LeaseRow> = ports
        .list()?
        .into_iter()
        .map(|lease| LeaseRow {
            liveness: match lease.liveness {
                port_alloc::Liveness::Running => "running",
                port_alloc::Liveness::Fresh { .. } => "fresh",
                port_alloc::Liveness::Manual => "manual",
                port_alloc::Liveness::PathExists => "repository",
                _ => "stale",
            },
            owner: lease.owner,
            ports: lease.ports,
            pid: lease.pid,
            age_seconds: lease.age.as_secs(),
        })
        .collect();
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no port leases on this host");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<48} {:<8} {:>8} {:>7}  PORTS",
        "OWNER", "STATE", "PID", "AGE"
    );
    for row in &rows {
        let ports: Vec<String> = row.ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
        println!(
            "{:<48} {:<8} {:>8} {:>7}  {}",
            row.owner,
            row.liveness,
            row.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            age(row.age_seconds),
            ports.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
