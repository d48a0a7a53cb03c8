//! A test worktree with its own leased ports, created from another Rust
//! program (an agent runner, a CI orchestrator), used, and taken back.
//!
//! Everything happens in temporary directories: a scratch git repository,
//! and a scratch port-lease state dir so the example never touches the
//! host's real leases (drop `state_dir` to share them with `isolane`).
//!
//! Run with `cargo run -p examples --example worktree_with_ports`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;

use port_alloc::{Holder, PortAllocator};
use worktree_core::{CreateRequest, RemoveOptions, Worktrees};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let repo = scratch.path().join("app");
    make_repo(&repo)?;

    // 1. The worktree: `<repo>/worktrees/test-integration-signup/` on a new
    //    branch from HEAD, a real git worktree (`git worktree list` shows it).
    let worktrees = Worktrees::open(&repo, worktree_core::Options::default())?;
    let worktree = worktrees
        .create(&CreateRequest::new("test-integration", "signup").branch("feature/signup"))?;
    println!(
        "created worktree {} at {} on {}",
        worktree.id,
        worktree.path.display(),
        worktree.branch.as_deref().unwrap_or("(detached)")
    );

    // 2. The ports, leased to the worktree's id. `Holder::Manual` keeps them
    //    until released, like a worktree that outlives this program would;
    //    `Holder::current_process()` would free them when the process exits.
    let ports = PortAllocator::open(port_alloc::Options {
        state_dir: Some(scratch.path().join("state")),
        claims_dir: Some(scratch.path().join("state").join("claims")),
        ..port_alloc::Options::default()
    })?;
    let lease = ports.lease(&worktree.id, &["APP_PORT", "API_PORT"], Holder::Manual)?;
    println!("leased {:?} to {}", lease.ports, lease.owner);

    // 3. Run a command in the worktree with the ports in its environment
    //    (a test suite, a dev server, ...).
    let status = Command::new("sh")
        .args([
            "-c",
            "echo APP_PORT=$APP_PORT API_PORT=$API_PORT; git status --short --branch",
        ])
        .current_dir(&worktree.path)
        .envs(
            lease
                .ports
                .iter()
                .map(|(name, port)| (name, port.to_string())),
        )
        .status()?;
    if !status.success() {
        return Err(format!("the command in {} failed: {status}", worktree.id).into());
    }

    // 4. Take everything back: the ports, then the worktree and its branch.
    //    `remove` refuses (and lists) uncommitted or unpushed work unless
    //    `force` is set.
    let released = ports.release_owner(&worktree.id)?;
    println!("released ports {released:?}");
    let removed = worktrees.remove(
        &worktree.id,
        RemoveOptions {
            delete_branch: true,
            ..RemoveOptions::default()
        },
    )?;
    println!(
        "removed worktree {} (branch deleted: {})",
        removed.id,
        removed.branch_deleted.as_deref().unwrap_or("none")
    );
    Ok(())
}

/// A small repository with one commit on `main`, made with the git CLI and
/// isolated from the user's git configuration.
fn make_repo(repo: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(repo.join("src"))?;
    std::fs::write(repo.join("README.md"), "# app\n")?;
    std::fs::write(repo.join("src/main.py"), "print('hello')\n")?;
    let git = |args: &[&str]| -> Result<(), Box<dyn std::error::Error>> {
        let status = Command::new("git")
            .current_dir(repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args([
                "-c",
                "user.name=Example",
                "-c",
                "user.email=example@example.com",
            ])
            .args(args)
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("git {} failed: {status}", args.join(" ")).into())
        }
    };
    git(&["init", "--quiet", "--initial-branch", "main"])?;
    git(&["add", "."])?;
    git(&["commit", "--quiet", "--message", "first commit"])
}
