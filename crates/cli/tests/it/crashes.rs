//! `kill -9` (through ISOLANE_FAULT) at each step of create and remove:
//! the next gc or doctor --fix (each is tried at every step) leaves nothing
//! behind and loses nothing.

use test_support::TestResult;

use crate::{database_names, isolane, json, leases, ok, repo_with_config};

const CREATE_STEPS: [&str; 5] = [
    "create.after_intent",
    "create.after_worktree",
    "create.after_ports",
    "create.after_database",
    "create.during_hooks",
];
/// The two commands that repair what an interrupted command left.
const REPAIRS: [&[&str]; 2] = [&["gc"], &["doctor", "--fix"]];
const REMOVE_STEPS: [&str; 4] = [
    "remove.after_intent",
    "remove.after_worktree",
    "remove.after_database",
    "remove.after_ports",
];

/// Nothing of worktree `id` is left: no entry, directory, lease or database.
fn assert_gone(repo: &test_support::GitRepo, id: &str, database: &str) -> TestResult {
    let root = repo.path();
    assert_eq!(json(root, &["list"])?, serde_json::json!([]), "{id}");
    assert!(
        !root.join("worktrees").join(id).exists(),
        "{id}: directory left"
    );
    assert!(
        !repo.git(["worktree", "list"])?.contains(id),
        "{id}: git still lists it"
    );
    assert!(
        leases(root)?.iter().all(|(owner, _)| !owner.ends_with(id)),
        "{id}: lease left"
    );
    assert!(
        !database_names(root)?.iter().any(|d| d == database),
        "{id}: database left"
    );
    Ok(())
}

#[test]
fn a_create_killed_at_any_step_is_rolled_back_by_gc_or_doctor() -> TestResult {
    let repo = repo_with_config("[hooks]\npost_create = [\"true\"]\n")?;
    let root = repo.path();
    for (i, step) in CREATE_STEPS.iter().enumerate() {
        for (r, repair) in REPAIRS.iter().enumerate() {
            let identifier = format!("c{i}{r}");
            let id = format!("test-crash-{identifier}");
            let status = isolane(root)
                .args([
                    "create",
                    "--purpose",
                    "test-crash",
                    "--identifier",
                    &identifier,
                ])
                .env("ISOLANE_FAULT", step)
                .status()?;
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "{step}"
            );
            let listed = json(root, &["list"])?;
            assert_eq!(listed[0]["state"], "interrupted-create", "{step}: {listed}");
            let found = isolane(root).args(["doctor"]).output()?;
            assert_eq!(
                found.status.code(),
                Some(1),
                "{step}: doctor must report it"
            );
            ok(root, repair)?;
            assert_gone(&repo, &id, &format!("testdb_test_crash_{identifier}"))?;
            ok(root, &["doctor"])?;
        }
    }
    Ok(())
}

#[test]
fn a_remove_killed_at_any_step_is_finished_by_gc_or_doctor() -> TestResult {
    let repo = repo_with_config("")?;
    let root = repo.path();
    for (i, step) in REMOVE_STEPS.iter().enumerate() {
        for (r, repair) in REPAIRS.iter().enumerate() {
            let identifier = format!("r{i}{r}");
            let id = format!("test-crash-{identifier}");
            ok(
                root,
                &[
                    "create",
                    "--purpose",
                    "test-crash",
                    "--identifier",
                    &identifier,
                ],
            )?;
            let status = isolane(root)
                .args(["remove", &id])
                .env("ISOLANE_FAULT", step)
                .status()?;
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "{step}"
            );
            let found = isolane(root).args(["doctor"]).output()?;
            assert_eq!(
                found.status.code(),
                Some(1),
                "{step}: doctor must report the interrupted remove"
            );
            ok(root, repair)?;
            assert_gone(&repo, &id, &format!("testdb_test_crash_{identifier}"))?;
            ok(root, &["doctor"])?;
        }
    }
    Ok(())
}
