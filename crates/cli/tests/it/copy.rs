//! `[worktrees] copy` and `.worktreeinclude`: `create` gives the new
//! worktree a copy of the main worktree's selected ignored entries.

use std::path::PathBuf;

use test_support::TestResult;

use crate::{json, ok, output, repo_with_config};

#[test]
fn create_copies_the_configured_ignored_entries_of_the_main_worktree() -> TestResult {
    let repo = repo_with_config(
        "[worktrees]\ncopy = [\".env\", \"target\"]\n[database]\nenabled = false\n",
    )?;
    repo.write(".gitignore", ".env\ntarget/\nnode_modules/\n")?;
    repo.write(".worktreeinclude", "node_modules/\n")?;
    repo.commit_all("ignore")?;
    let root = repo.path();
    repo.write(".env", "TOKEN=local\n")?;
    repo.write("target/debug/app", "built\n")?;
    repo.write("node_modules/pkg/index.js", "1\n")?;

    let out = output(
        root,
        &[
            "create",
            "--purpose",
            "test-copy",
            "--identifier",
            "a",
            "--json",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("copied 3 ignored entries"), "{stderr}");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let path = PathBuf::from(created["path"].as_str().ok_or("path")?);
    assert_eq!(std::fs::read_to_string(path.join(".env"))?, "TOKEN=local\n");
    assert_eq!(
        std::fs::read_to_string(path.join("target/debug/app"))?,
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(path.join("node_modules/pkg/index.js"))?,
        "1\n"
    );
    let status = repo.git(["-C", path.to_str().ok_or("path")?, "status", "--porcelain"])?;
    assert_eq!(status.trim(), "");
    ok(root, &["remove", "test-copy-a"])?;
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    Ok(())
}

#[test]
fn a_bad_copy_pattern_is_refused_by_name() -> TestResult {
    let repo = repo_with_config("[worktrees]\ncopy = [\"\"]\n")?;
    let out = output(repo.path(), &["list"])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("copy pattern") && stderr.contains("line 2"),
        "{stderr}"
    );
    Ok(())
}
