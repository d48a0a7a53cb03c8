//! `cargo bench -p benches [-- GROUP ...] [--quick]`: every benchmark group,
//! each subject beside its baseline. See the crate docs of `benches`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use benches::{BenchResult, Config, Report};

type Group = (&'static str, fn(&Config, &mut Report) -> BenchResult);

const GROUPS: &[Group] = &[
    ("registry", benches::registry::run),
    ("ports", benches::ports::run),
    ("worktree", benches::worktree::run),
    ("copy", benches::copy::run),
    ("pg", benches::pg::run),
    ("migrations", benches::migrations::run),
    ("cli", benches::cli::run),
    ("django", benches::django::run),
    ("rust-tests", benches::rust_tests::run_group),
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> BenchResult {
    let mut quick = false;
    let mut wanted = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}").into()),
            group => {
                if !GROUPS.iter().any(|(name, _)| *name == group) {
                    let known: Vec<_> = GROUPS.iter().map(|(name, _)| *name).collect();
                    return Err(
                        format!("unknown group {group}; groups: {}", known.join(", ")).into(),
                    );
                }
                wanted.push(group.to_owned());
            }
        }
    }
    let config = Config {
        quick,
        scratch: std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    };
    let mut report = Report::default();
    for (name, group) in GROUPS {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            eprintln!("running {name} ...");
            group(&config, &mut report)?;
        }
    }
    println!("{}", report.markdown());
    if let Ok(path) = std::env::var("ISOLANE_BENCH_JSON") {
        std::fs::write(&path, report.json())?;
        eprintln!("figures written to {path}");
    }
    Ok(())
}
