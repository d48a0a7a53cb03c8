//! A full or read-only filesystem (a real tmpfs) under the host-wide port
//! state or under the repository's registry: `create` and `remove` fail
//! with exit code 1 and a message naming the state file and the cause,
//! nothing is half-created, and the previous state documents are intact.

use std::path::{Path, PathBuf};
use std::process::Output;

use test_support::mount::Tmpfs;
use test_support::{GitRepo, TestResult};

use crate::{database_names, isolane, repo_with_config};

const CONFIG: &str = "[ports]\nnames = [\"APP_PORT\"]\n";

/// Runs isolane with the port state in `state` instead of the suite's.
fn run_with_state(dir: &Path, state: &Path, args: &[&str]) -> TestResult<Output> {
    Ok(isolane(dir)
        .env("ISOLANE_STATE_DIR", state)
        .args(args)
        .output()?)
}

/// Like [`run_with_state`], requiring success; returns stdout.
fn ok_with_state(dir: &Path, state: &Path, args: &[&str]) -> TestResult<String> {
    let out = run_with_state(dir, state, args)?;
    if !out.status.success() {
        return Err(format!(
            "isolane {args:?} failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The ids in `isolane list`.
fn listed(dir: &Path, state: &Path) -> TestResult<Vec<String>> {
    let rows: serde_json::Value =
        serde_json::from_str(&ok_with_state(dir, state, &["list", "--json"])?)?;
    Ok(rows
        .as_array()
        .ok_or("list --json is not an array")?
        .iter()
        .filter_map(|row| row["id"].as_str().map(str::to_owned))
        .collect())
}

/// Requires a failure with exit code 1 whose message names `file` and
/// contains `cause`; returns stderr.
fn assert_fails_naming(out: &Output, file: &Path, cause: &str) -> TestResult<String> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "the message must name {}:\n{stderr}",
        file.display()
    );
    assert!(
        stderr.contains(cause),
        "the message must say {cause:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(stderr)
}

/// Requires that nothing of worktree `id` exists: no directory, no entry,
/// no git worktree, no database.
fn assert_not_created(repo: &GitRepo, state: &Path, id: &str) -> TestResult {
    let root = repo.path();
    assert!(
        !root.join("worktrees").join(id).exists(),
        "{id}: directory left"
    );
    assert!(
        !listed(root, state)?.iter().any(|listed| listed == id),
        "{id}: entry left"
    );
    let path = format!("worktree {}", root.join("worktrees").join(id).display());
    assert!(
        !repo
            .git(["worktree", "list", "--porcelain"])?
            .lines()
            .any(|line| line == path),
        "{id}: git lists it"
    );
    let database = format!("testdb_{}", id.replace('-', "_"));
    assert!(
        !database_names(root)?.contains(&database),
        "{id}: database left"
    );
    Ok(())
}

fn create_args(identifier: &str) -> Vec<&str> {
    vec![
        "create",
        "--purpose",
        "test-storage",
        "--identifier",
        identifier,
    ]
}

/// The lease document must still parse and hold exactly `owners`' leases.
fn assert_ports_document(path: &Path, before: &[u8]) -> TestResult {
    let after = std::fs::read(path)?;
    assert_eq!(after, before, "{} changed", path.display());
    let _: serde_json::Value = serde_json::from_slice(&after)?;
    Ok(())
}

/// What happens to the port state: `break_it` makes the filesystem full or
/// read-only, `heal` undoes it.
fn port_state_fault(
    label: &str,
    cause: &str,
    break_it: impl Fn(&Tmpfs) -> TestResult,
    heal: impl Fn(&Tmpfs) -> TestResult,
) -> TestResult {
    let repo = repo_with_config(CONFIG)?;
    let root = repo.path();
    let state = Tmpfs::new(256 * 1024)?;
    let seed_id = format!("test-storage-{label}-seed");
    ok_with_state(
        root,
        state.path(),
        &[
            "create",
            "--purpose",
            "test-storage",
            "--identifier",
            &format!("{label}-seed"),
            "--no-db",
        ],
    )?;
    let ports: PathBuf = state.path().join("ports.json");
    let before = std::fs::read(&ports)?;

    break_it(&state)?;
    let id = format!("test-storage-{label}");
    let out = run_with_state(root, state.path(), &create_args(label))?;
    assert_fails_naming(&out, &ports, cause)?;
    assert_not_created(&repo, state.path(), &id)?;
    assert_ports_document(&ports, &before)?;
    // The worktree made before the fault is untouched.
    assert_eq!(listed(root, state.path())?, std::slice::from_ref(&seed_id));
    assert!(root.join("worktrees").join(&seed_id).is_dir());

    heal(&state)?;
    ok_with_state(root, state.path(), &create_args(label))?;
    assert!(root.join("worktrees").join(&id).is_dir());
    ok_with_state(root, state.path(), &["remove", &id])?;
    ok_with_state(root, state.path(), &["remove", &seed_id])?;
    assert!(listed(root, state.path())?.is_empty());
    Ok(())
}

#[test]
fn create_on_a_full_port_state_dir_fails_clearly_and_rolls_back() -> TestResult {
    port_state_fault(
        "full",
        "No space left on device",
        |fs| {
            fs.fill()?;
            Ok(())
        },
        |fs| Ok(fs.free()?),
    )
}

#[test]
fn create_on_a_read_only_port_state_dir_fails_clearly_and_rolls_back() -> TestResult {
    port_state_fault(
        "ro",
        "Read-only file system",
        |fs| Ok(fs.remount_read_only()?),
        |fs| Ok(fs.remount_read_write()?),
    )
}

/// The repository registry on a broken filesystem: `create` and `remove`
/// refuse cleanly, the registry keeps its previous version.
fn registry_fault(
    label: &str,
    cause: &str,
    break_it: impl Fn(&Tmpfs) -> TestResult,
    heal: impl Fn(&Tmpfs) -> TestResult,
) -> TestResult {
    let repo = repo_with_config(CONFIG)?;
    let root = repo.path();
    let state = crate::state_dir();
    let seed_id = format!("test-storage-{label}-seed");
    ok_with_state(
        root,
        &state,
        &[
            "create",
            "--purpose",
            "test-storage",
            "--identifier",
            &format!("{label}-seed"),
            "--no-db",
        ],
    )?;
    let isolane_dir = root.join(".git").join("isolane");
    let registry = isolane_dir.join("registry.json");
    {
        // Dropped (unmounted) before the repository is deleted.
        let mounted = Tmpfs::mount_on(&isolane_dir, 256 * 1024)?;
        let before = std::fs::read(&registry)?;
        break_it(&mounted)?;

        let id = format!("test-storage-{label}");
        let out = run_with_state(root, &state, &create_args(label))?;
        assert_fails_naming(&out, &registry, cause)?;
        assert_eq!(std::fs::read(&registry)?, before);
        assert_not_created(&repo, &state, &id)?;

        let out = run_with_state(root, &state, &["remove", &seed_id])?;
        assert_fails_naming(&out, &registry, cause)?;
        assert_eq!(std::fs::read(&registry)?, before);
        assert_eq!(listed(root, &state)?, std::slice::from_ref(&seed_id));
        assert!(
            root.join("worktrees").join(&seed_id).is_dir(),
            "a remove that could not record its intent must delete nothing"
        );

        heal(&mounted)?;
        ok_with_state(root, &state, &create_args(label))?;
        assert_eq!(listed(root, &state)?.len(), 2);
        ok_with_state(root, &state, &["remove", &id])?;
    }
    // Unmounted: the registry from before the mount, with the seed.
    assert_eq!(listed(root, &state)?, std::slice::from_ref(&seed_id));
    ok_with_state(root, &state, &["remove", &seed_id])?;
    assert!(listed(root, &state)?.is_empty());
    Ok(())
}

#[test]
fn create_and_remove_on_a_full_registry_dir_fail_clearly_and_keep_the_registry() -> TestResult {
    registry_fault(
        "regfull",
        "No space left on device",
        |fs| {
            fs.fill()?;
            Ok(())
        },
        |fs| Ok(fs.free()?),
    )
}

#[test]
fn create_and_remove_on_a_read_only_registry_dir_fail_clearly_and_keep_the_registry() -> TestResult
{
    registry_fault(
        "regro",
        "Read-only file system",
        |fs| Ok(fs.remount_read_only()?),
        |fs| Ok(fs.remount_read_write()?),
    )
}
