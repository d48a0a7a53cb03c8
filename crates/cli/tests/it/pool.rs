//! The warm pool in the CLI (`[worktrees] pool = N`): `remove` pools a
//! clean worktree with its ignored build outputs and without its last
//! user's files, `create` takes it, `pool` lists and drains it, `gc` trims
//! it; `kill -9` while pooling or taking, and concurrent creates.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use test_support::{GitRepo, TestResult};

use crate::crashes::killed_at;
use crate::{database_names, isolane, json, leases, ok, output, repo_with_config, wait_ok};

/// A repository with `[worktrees] pool = size`, `target/` ignored and a
/// branch `other` that changes one file.
fn pooled_repo(size: usize, database: bool) -> TestResult<GitRepo> {
    let repo = repo_with_config(&format!(
        "[worktrees]\npool = {size}\n[database]\nenabled = {database}\n"
    ))?;
    repo.write(".gitignore", "target/\n")?;
    repo.write("src/lib.rs", "pub fn one() {}\n")?;
    repo.commit_all("code")?;
    repo.git(["branch", "other"])?;
    repo.git(["checkout", "-q", "other"])?;
    repo.write("src/lib.rs", "pub fn two() {}\n")?;
    repo.commit_all("other")?;
    repo.git(["checkout", "-q", "main"])?;
    Ok(repo)
}

fn create(root: &Path, identifier: &str, extra: &[&str]) -> TestResult<serde_json::Value> {
    let mut args = vec![
        "create",
        "--purpose",
        "test-pool",
        "--identifier",
        identifier,
    ];
    args.extend_from_slice(extra);
    json(root, &args)
}

fn pooled_paths(root: &Path) -> TestResult<Vec<PathBuf>> {
    Ok(json(root, &["pool"])?
        .as_array()
        .ok_or("pool --json is not an array")?
        .iter()
        .filter_map(|row| row["path"].as_str().map(PathBuf::from))
        .collect())
}

#[test]
fn remove_pools_a_clean_worktree_and_create_takes_it_without_its_last_users_state() -> TestResult {
    let repo = pooled_repo(2, true)?;
    let root = repo.path();
    let first = create(root, "first", &[])?;
    assert_eq!(first["from_pool"], false);
    let first_path = PathBuf::from(first["path"].as_str().ok_or("path")?);
    let first_db = first["database"].as_str().ok_or("database")?.to_owned();
    std::fs::create_dir_all(first_path.join("target/debug"))?;
    std::fs::write(first_path.join("target/debug/app"), "built\n")?;
    assert!(first_path.join(".env.test").is_file());

    let removed = json(root, &["remove", "test-pool-first"])?;
    let slot = PathBuf::from(removed["pooled"].as_str().ok_or("not pooled")?);
    assert!(!first_path.exists());
    // Kept: the build output. Gone: the last user's files, entry, ports,
    // database and branch.
    assert_eq!(
        std::fs::read_to_string(slot.join("target/debug/app"))?,
        "built\n"
    );
    assert!(!slot.join(".env.test").exists());
    assert!(!slot.join(".worktree-metadata.json").exists());
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    assert!(
        leases(root)?
            .iter()
            .all(|(o, _)| !o.ends_with("test-pool-first"))
    );
    assert!(!database_names(root)?.contains(&first_db));
    assert_eq!(removed["branch_deleted"], "test-pool-first");
    assert_eq!(pooled_paths(root)?, vec![slot.clone()]);

    let second = create(root, "second", &["--branch", "other"])?;
    assert_eq!(second["from_pool"], true);
    let second_path = PathBuf::from(second["path"].as_str().ok_or("path")?);
    assert!(!slot.exists());
    assert_eq!(
        std::fs::read_to_string(second_path.join("target/debug/app"))?,
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(second_path.join("src/lib.rs"))?,
        "pub fn two() {}\n"
    );
    // Its own environment: its id, ports and a new database.
    let env = std::fs::read_to_string(second_path.join(".env.test"))?;
    assert!(env.contains("ISOLANE_WORKTREE=test-pool-second"), "{env}");
    assert!(!env.contains(&first_db), "{env}");
    let database = second["database"].as_str().ok_or("database")?;
    assert!(env.contains(database), "{env}");
    let metadata: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        second_path.join(".worktree-metadata.json"),
    )?)?;
    assert_eq!(metadata["id"], "test-pool-second");
    let status = repo.git([
        "-C",
        second_path.to_str().ok_or("path")?,
        "status",
        "--porcelain",
    ])?;
    assert_eq!(status.trim(), "", "the handed-out worktree is clean");
    assert_eq!(pooled_paths(root)?, Vec::<PathBuf>::new());

    // Its branch `other` holds a commit of its own: --force.
    ok(root, &["remove", "test-pool-second", "--force"])?;
    let drained = json(root, &["pool", "drain"])?;
    assert_eq!(drained["removed"].as_array().map(Vec::len), Some(1));
    assert_eq!(pooled_paths(root)?, Vec::<PathBuf>::new());
    assert!(!repo.git(["worktree", "list"])?.contains(".pool"));
    Ok(())
}

#[test]
fn a_dirty_worktree_is_never_pooled() -> TestResult {
    let repo = pooled_repo(2, false)?;
    let root = repo.path();
    let created = create(root, "dirty", &[])?;
    let path = PathBuf::from(created["path"].as_str().ok_or("path")?);
    std::fs::write(path.join("notes.txt"), "uncommitted work\n")?;
    let refused = output(root, &["remove", "test-pool-dirty"])?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("notes.txt"));
    assert!(path.join("notes.txt").is_file());
    assert!(
        path.join(".env.test").is_file(),
        "a refused remove keeps its files"
    );
    assert_eq!(pooled_paths(root)?, Vec::<PathBuf>::new());

    // Forced: removed, not pooled.
    let removed = json(root, &["remove", "test-pool-dirty", "--force"])?;
    assert!(removed.get("pooled").is_none(), "{removed}");
    assert!(!path.exists());
    assert_eq!(pooled_paths(root)?, Vec::<PathBuf>::new());
    Ok(())
}

#[test]
fn the_pool_is_bounded_and_gc_trims_it_to_the_configured_size() -> TestResult {
    let repo = pooled_repo(2, false)?;
    let root = repo.path();
    for id in ["a", "b", "c"] {
        create(root, id, &[])?;
    }
    for id in ["a", "b", "c"] {
        ok(root, &["remove", &format!("test-pool-{id}")])?;
    }
    // Full at 2: the third was removed.
    assert_eq!(pooled_paths(root)?.len(), 2);
    std::fs::write(
        root.join("isolane.toml"),
        "[worktrees]\npool = 1\n[database]\nenabled = false\n",
    )?;
    let dry = json(root, &["gc", "--dry-run"])?;
    assert_eq!(dry["trimmed_pool"].as_array().map(Vec::len), Some(1));
    assert_eq!(pooled_paths(root)?.len(), 2);
    let report = json(root, &["gc"])?;
    assert_eq!(report["trimmed_pool"].as_array().map(Vec::len), Some(1));
    assert_eq!(pooled_paths(root)?.len(), 1);
    // With the pool off, create does not take the one left, and gc drains it.
    std::fs::write(root.join("isolane.toml"), "[database]\nenabled = false\n")?;
    assert_eq!(create(root, "d", &[])?["from_pool"], false);
    ok(root, &["gc"])?;
    assert_eq!(pooled_paths(root)?, Vec::<PathBuf>::new());
    ok(root, &["remove", "test-pool-d"])?;
    Ok(())
}

#[test]
fn kill_9_while_pooling_is_finished_by_the_next_command() -> TestResult {
    for step in [
        "worktree.release_after_intent",
        "worktree.release_after_move",
    ] {
        let repo = pooled_repo(2, false)?;
        let root = repo.path();
        let created = create(root, "crash", &[])?;
        let path = PathBuf::from(created["path"].as_str().ok_or("path")?);
        std::fs::create_dir_all(path.join("target"))?;
        std::fs::write(path.join("target/out"), "built\n")?;
        killed_at(root, step, &["remove", "test-pool-crash"])?;

        ok(root, &["gc"])?;
        assert_eq!(json(root, &["list"])?, serde_json::json!([]), "{step}");
        assert!(
            leases(root)?
                .iter()
                .all(|(o, _)| !o.ends_with("test-pool-crash"))
        );
        let pooled = pooled_paths(root)?;
        assert_eq!(pooled.len(), 1, "{step}");
        assert!(!pooled[0].join(".env.test").exists(), "{step}");
        assert!(!path.exists(), "{step}");
        let doctor = output(root, &["doctor"])?;
        assert!(
            doctor.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&doctor.stdout)
        );

        let again = create(root, "next", &[])?;
        assert_eq!(again["from_pool"], true, "{step}");
        let next = PathBuf::from(again["path"].as_str().ok_or("path")?);
        assert_eq!(std::fs::read_to_string(next.join("target/out"))?, "built\n");
        ok(root, &["remove", "test-pool-next"])?;
        ok(root, &["pool", "drain"])?;
    }
    Ok(())
}

#[test]
fn kill_9_while_taking_from_the_pool_is_rolled_back_by_the_next_command() -> TestResult {
    for step in [
        "worktree.handout_after_switch",
        "worktree.handout_after_move",
    ] {
        let repo = pooled_repo(2, false)?;
        let root = repo.path();
        create(root, "old", &[])?;
        ok(root, &["remove", "test-pool-old"])?;
        assert_eq!(pooled_paths(root)?.len(), 1);
        killed_at(
            root,
            step,
            &[
                "create",
                "--purpose",
                "test-pool",
                "--identifier",
                "taken",
                "--branch",
                "other",
            ],
        )?;

        ok(root, &["gc"])?;
        assert_eq!(json(root, &["list"])?, serde_json::json!([]), "{step}");
        assert!(!root.join("worktrees/test-pool-taken").exists(), "{step}");
        // The half-switched pooled worktree is discarded, not handed out.
        assert_eq!(pooled_paths(root)?, Vec::<PathBuf>::new(), "{step}");
        let listed = repo.git(["worktree", "list"])?;
        assert_eq!(listed.lines().count(), 1, "{step}: {listed}");
        let doctor = output(root, &["doctor"])?;
        assert!(
            doctor.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&doctor.stdout)
        );

        let again = create(root, "taken", &["--branch", "other"])?;
        assert_eq!(again["from_pool"], false);
        ok(root, &["remove", "test-pool-taken", "--force"])?;
        ok(root, &["pool", "drain"])?;
    }
    Ok(())
}

#[test]
fn concurrent_creates_never_get_the_same_pooled_worktree() -> TestResult {
    const N: usize = 4;
    let repo = pooled_repo(N, false)?;
    let root = repo.path();
    for i in 0..N {
        let created = create(root, &format!("seed{i}"), &[])?;
        let path = PathBuf::from(created["path"].as_str().ok_or("path")?);
        std::fs::create_dir_all(path.join("target"))?;
        std::fs::write(path.join("target/owner"), format!("seed{i}\n"))?;
    }
    for i in 0..N {
        ok(root, &["remove", &format!("test-pool-seed{i}")])?;
    }
    assert_eq!(pooled_paths(root)?.len(), N);

    let children = (0..N)
        .map(|i| {
            isolane(root)
                .args(["create", "--purpose", "test-pool", "--identifier"])
                .arg(format!("job{i}"))
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut owners = BTreeSet::new();
    for child in children {
        let created: serde_json::Value = serde_json::from_str(&wait_ok(child)?)?;
        assert_eq!(created["from_pool"], true, "{created}");
        let path = PathBuf::from(created["path"].as_str().ok_or("path")?);
        // Each pooled worktree (told apart by its build output) went to
        // exactly one create.
        assert!(owners.insert(std::fs::read_to_string(path.join("target/owner"))?));
    }
    assert_eq!(owners.len(), N);
    assert_eq!(pooled_paths(root)?, Vec::<PathBuf>::new());
    for i in 0..N {
        ok(root, &["remove", &format!("test-pool-job{i}")])?;
    }
    ok(root, &["pool", "drain"])?;
    Ok(())
}
