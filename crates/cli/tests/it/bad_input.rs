//! Bad usage and bad input: exit code 2, a message naming the problem, and
//! nothing created.

use test_support::{GitRepo, TestResult};

use crate::{json, output, repo_with_config};

fn expect_refusal(repo: &GitRepo, args: &[&str], code: i32, needle: &str) -> TestResult {
    let out = output(repo.path(), args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    Ok(())
}

#[test]
fn bad_names_and_arguments_are_refused_with_exit_code_2() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let cases: &[(&[&str], &str)] = &[
        (
            &["create", "--purpose", "..", "--identifier", "x"],
            "purpose",
        ),
        (
            &["create", "--purpose", "test", "--identifier", "../../etc"],
            "identifier",
        ),
        (
            &["create", "--purpose", "te st", "--identifier", "x"],
            "purpose",
        ),
        (
            &["create", "--purpose", "test;rm", "--identifier", "x"],
            "purpose",
        ),
        (
            &["create", "--purpose", "test", "--identifier", "a/b"],
            "identifier",
        ),
        (
            &["create", "--purpose", "test", "--identifier", "-x"],
            "identifier",
        ),
        (
            &[
                "create",
                "--purpose",
                "test",
                "--identifier",
                "x",
                "--port",
                "app port",
            ],
            "port name",
        ),
        (
            &[
                "create",
                "--purpose",
                "test",
                "--identifier",
                "x",
                "--branch",
                "bad..branch",
            ],
            "branch",
        ),
        (&["create", "--purpose", "test"], "--identifier"),
        (&["show", "test-nope"], "no worktree"),
        (&["env", "test-nope"], "no worktree"),
        (&["remove", "test-nope"], "no worktree"),
        (&["run", "test-nope", "--", "true"], "no worktree"),
        (&["gc", "--max-age", "soon"], "duration"),
        (&["frobnicate"], "unrecognized subcommand"),
        (&["db", "migrate", "--to", "latest"], "required arguments"),
    ];
    for (args, needle) in cases {
        expect_refusal(&repo, args, 2, needle)?;
    }
    assert_eq!(json(repo.path(), &["list"])?, serde_json::json!([]));
    assert!(
        !repo.path().join("worktrees").exists()
            || std::fs::read_dir(repo.path().join("worktrees"))?
                .next()
                .is_none(),
        "nothing may be created"
    );
    Ok(())
}

#[test]
fn a_bad_config_names_the_key_and_the_line() -> TestResult {
    let cases = [
        ("colour = \"blue\"\n", "unknown field `colour`"),
        ("[ports]\nrange = [30000, 20000]\n", "line 2"),
        ("[gc]\nmax_age = 5\n", "invalid type"),
        (
            "[[services]]\nname = \"x\"\ncommand = \"true\"\nready = \"NOPE_PORT\"\n",
            "NOPE_PORT",
        ),
    ];
    for (config, needle) in cases {
        let repo = repo_with_config(config)?;
        expect_refusal(&repo, &["list"], 2, needle)?;
        expect_refusal(
            &repo,
            &["create", "--purpose", "test", "--identifier", "x"],
            2,
            "isolane.toml",
        )?;
        assert!(!repo.path().join("worktrees").exists(), "{config}");
    }
    Ok(())
}

#[test]
fn a_password_in_the_database_url_is_never_printed() -> TestResult {
    // Nothing listens on port 1: the connection fails, and the error must
    // not show the password.
    let repo =
        repo_with_config("[database]\nurl = \"postgres://app:s3cr3t-pw@127.0.0.1:1/postgres\"\n")?;
    let out = output(
        repo.path(),
        &["create", "--purpose", "test", "--identifier", "pw"],
    )?;
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("s3cr3t-pw"), "{all}");
    assert!(all.contains("127.0.0.1"), "{all}");
    // And the failed create was rolled back.
    assert_eq!(json(repo.path(), &["list"])?, serde_json::json!([]));
    Ok(())
}

#[test]
fn a_create_over_an_existing_directory_never_deletes_it() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let existing = repo.path().join("worktrees/test-pre-x");
    std::fs::create_dir_all(&existing)?;
    std::fs::write(existing.join("work.txt"), "someone's work")?;
    expect_refusal(
        &repo,
        &["create", "--purpose", "test-pre", "--identifier", "x"],
        2,
        "already exists",
    )?;
    assert_eq!(
        std::fs::read_to_string(existing.join("work.txt"))?,
        "someone's work"
    );
    assert_eq!(json(repo.path(), &["list"])?, serde_json::json!([]));
    Ok(())
}
