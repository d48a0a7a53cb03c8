//! Templates built by the project's own command (`[database.template]`):
//! keyed by the command and its inputs in the worktree being created, built
//! once, cloned by `create` and `db reset`, and leaving nothing when the
//! command fails. The "migration tool" here is a shell script with `psql`,
//! driven only by the `PG*` variables isolane gives it.

use std::path::{Path, PathBuf};

use test_support::TestResult;

use crate::{database_names, json, ok, output, repo_with_config, url_of, wait_ok};

/// `build.sh` applies `schema/*.sql` with psql and counts its runs in a
/// file outside the repository.
fn config(counter: &Path) -> String {
    format!(
        r#"
[database.template]
command = "sh build.sh {}"
inputs = ["schema/*.sql", "build.sh"]

[hooks]
post_reset = ["echo reset > reset.txt"]
"#,
        counter.display()
    )
}

const BUILD: &str = r#"set -e
echo "building $PGDATABASE"
test -n "$DATABASE_URL"
for f in schema/*.sql; do psql -X -q -v ON_ERROR_STOP=1 -f "$f"; done
echo run >> "$1"
"#;

/// A repository whose template `build.sh` builds from one schema file;
/// the scratch dir holds the count of builds (`runs`).
fn fixture() -> TestResult<(tempfile::TempDir, test_support::GitRepo)> {
    let scratch = tempfile::tempdir()?;
    let repo = repo_with_config(&config(&scratch.path().join("runs")))?;
    repo.write(".gitignore", "reset.txt\n")?;
    repo.write("build.sh", BUILD)?;
    repo.write(
        "schema/001_users.sql",
        "CREATE TABLE users (id serial PRIMARY KEY, name text);\n\
         INSERT INTO users (name) VALUES ('seed');\n",
    )?;
    repo.commit_all("schema")?;
    Ok((scratch, repo))
}

fn runs(counter: &Path) -> usize {
    std::fs::read_to_string(counter).map_or(0, |t| t.lines().count())
}

fn query_i64(url: &str, sql: &str) -> TestResult<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client.query_one(sql, &[])?.get(0))
}

#[test]
fn a_command_builds_the_template_once_per_input_content() -> TestResult {
    let (scratch, repo) = fixture()?;
    let counter = scratch.path().join("runs");
    let root = repo.path();
    repo.branch("feature/email")?;

    let a = json(
        root,
        &["create", "--purpose", "test-tpl", "--identifier", "a"],
    )?;
    let url_a = url_of(root, a["id"].as_str().ok_or("no id")?)?;
    assert_eq!(query_i64(&url_a, "SELECT count(*) FROM users")?, 1);
    assert_eq!(runs(&counter), 1);

    // Same inputs: the template is reused, and a reset clones it.
    let b = json(
        root,
        &["create", "--purpose", "test-tpl", "--identifier", "b"],
    )?;
    assert_eq!(runs(&counter), 1);
    let url_b = url_of(root, "test-tpl-b")?;
    postgres::Client::connect(&url_b, postgres::NoTls)?
        .batch_execute("INSERT INTO users (name) VALUES ('test data')")?;
    assert_eq!(query_i64(&url_b, "SELECT count(*) FROM users")?, 2);
    ok(root, &["db", "reset", "test-tpl-b"])?;
    assert_eq!(query_i64(&url_b, "SELECT count(*) FROM users")?, 1);
    assert_eq!(runs(&counter), 1);
    let b_path = PathBuf::from(b["path"].as_str().ok_or("no path")?);
    assert_eq!(
        std::fs::read_to_string(b_path.join("reset.txt"))?,
        "reset\n"
    );

    // The branch's own migrations key its template: a changed input file
    // in the worktree being created builds a new one.
    repo.git(["checkout", "-q", "feature/email"])?;
    repo.write(
        "schema/002_email.sql",
        "ALTER TABLE users ADD COLUMN email text;\n",
    )?;
    repo.commit_all("email")?;
    repo.git(["checkout", "-q", "-"])?;
    let c = json(
        root,
        &[
            "create",
            "--purpose",
            "test-tpl",
            "--identifier",
            "c",
            "--branch",
            "feature/email",
        ],
    )?;
    assert_eq!(runs(&counter), 2);
    assert_eq!(c["id"], "test-tpl-c");
    let url_c = url_of(root, "test-tpl-c")?;
    assert_eq!(
        query_i64(
            &url_c,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email'"
        )?,
        1
    );

    // `db template` shows the key and inputs, and rebuilds on request.
    let shown = json(root, &["db", "template", "test-tpl-c"])?;
    assert_eq!(shown["source"], "command");
    let inputs: Vec<&str> = shown["inputs"]
        .as_array()
        .ok_or("inputs")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        inputs,
        ["build.sh", "schema/001_users.sql", "schema/002_email.sql"]
    );
    assert_eq!(shown["built_now"], false);
    assert!(shown["build_ms"].as_u64().is_some());
    let rebuilt = json(root, &["db", "template", "test-tpl-c", "--rebuild"])?;
    assert_eq!(rebuilt["key"], shown["key"]);
    assert_eq!(rebuilt["built_now"], true);
    assert_eq!(runs(&counter), 3);

    for id in ["test-tpl-a", "test-tpl-b", "test-tpl-c"] {
        ok(root, &["remove", id, "--force"])?;
    }
    Ok(())
}

#[test]
fn a_failing_template_command_fails_the_create_with_its_code_and_leaves_nothing() -> TestResult {
    let repo = repo_with_config(
        r#"
[database.template]
command = "echo applying 0001; echo 'boom: relation missing' >&2; exit 7"
inputs = []
"#,
    )?;
    let root = repo.path();
    let out = output(
        root,
        &["create", "--purpose", "test-tplfail", "--identifier", "x"],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("boom: relation missing"), "{stderr}");
    assert!(stderr.contains("exit status: 7"), "{stderr}");
    let template = stderr
        .split("setting up template ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or(format!("no template named in: {stderr}"))?;
    let names = database_names(root)?;
    assert!(!names.iter().any(|n| n == template), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("tplfail")), "{names:?}");
    assert!(!root.join("worktrees/test-tplfail-x").exists());
    assert_eq!(json(root, &["list"])?.as_array().map(Vec::len), Some(0));
    Ok(())
}

#[test]
fn migrations_and_a_template_command_together_are_refused() -> TestResult {
    let repo = repo_with_config(
        "[database]\nmigrations = \"migrations\"\n[database.template]\ncommand = \"true\"\n",
    )?;
    let out = output(repo.path(), &["list"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("database.migrations") && stderr.contains("database.template"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn leases_are_private_clones_of_the_template_reclaimed_after_their_holder() -> TestResult {
    let (scratch, repo) = fixture()?;
    let counter = scratch.path().join("runs");
    let root = repo.path();
    ok(
        root,
        &["create", "--purpose", "test-lease", "--identifier", "a"],
    )?;

    let mut holder = std::process::Command::new("sleep").arg("600").spawn()?;
    let pid = holder.id().to_string();
    let first = json(root, &["db", "lease", "test-lease-a", "--pid", &pid])?;
    let second = json(root, &["db", "lease", "test-lease-a", "--pid", &pid])?;
    assert_ne!(first["name"], second["name"]);
    let url = first["url"].as_str().ok_or("no url")?;
    postgres::Client::connect(url, postgres::NoTls)?
        .batch_execute("INSERT INTO users (name) VALUES ('only in the first')")?;
    assert_eq!(query_i64(url, "SELECT count(*) FROM users")?, 2);
    let other = second["url"].as_str().ok_or("no url")?;
    assert_eq!(query_i64(other, "SELECT count(*) FROM users")?, 1);
    assert_eq!(runs(&counter), 1);

    let name = first["name"].as_str().ok_or("no name")?;
    ok(root, &["db", "release", name])?;
    assert!(!database_names(root)?.iter().any(|n| n == name));
    // Only leases: the worktree's own database is refused.
    let refused = output(root, &["db", "release", "testdb_test_lease_a"])?;
    assert_eq!(refused.status.code(), Some(2));

    // The holder killed: the next gc reclaims its lease.
    holder.kill()?;
    holder.wait()?;
    let name = second["name"].as_str().ok_or("no name")?;
    ok(root, &["db", "gc"])?;
    assert!(!database_names(root)?.iter().any(|n| n == name));
    ok(root, &["remove", "test-lease-a", "--force"])?;
    Ok(())
}

/// A repository whose template command first runs `before` (a shell
/// command), then `build.sh`; a schema file of its own keys its template.
fn slow_fixture(before: &str) -> TestResult<(tempfile::TempDir, test_support::GitRepo)> {
    let scratch = tempfile::tempdir()?;
    let repo = repo_with_config(&format!(
        "[database.template]\ncommand = \"{before}; sh build.sh {}\"\ninputs = [\"schema/*.sql\"]\n",
        scratch.path().join("runs").display()
    ))?;
    repo.write("build.sh", BUILD)?;
    repo.write(
        "schema/001.sql",
        format!("CREATE TABLE t (v int); -- {:?}\n", scratch.path()),
    )?;
    repo.commit_all("schema")?;
    Ok((scratch, repo))
}

#[test]
fn concurrent_creates_build_the_template_once() -> TestResult {
    let (scratch, repo) = slow_fixture("sleep 1")?;
    let root = repo.path();
    let children: Vec<_> = (0..3)
        .map(|i| {
            crate::isolane(root)
                .args([
                    "create",
                    "--purpose",
                    "test-race",
                    "--identifier",
                    &i.to_string(),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        wait_ok(child)?;
    }
    assert_eq!(runs(&scratch.path().join("runs")), 1);
    for i in 0..3 {
        ok(root, &["remove", &format!("test-race-{i}"), "--force"])?;
    }
    Ok(())
}

#[test]
fn a_build_killed_with_kill_9_is_built_again_by_the_next_create() -> TestResult {
    use std::os::unix::process::CommandExt as _;
    let scratch = tempfile::tempdir()?;
    let started = scratch.path().join("started");
    let fast = scratch.path().join("fast");
    let (runs_dir, repo) = slow_fixture(&format!(
        "touch {}; test -e {} || sleep 60",
        started.display(),
        fast.display()
    ))?;
    let root = repo.path();
    let mut child = crate::isolane(root)
        .args(["create", "--purpose", "test-killed", "--identifier", "a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        if std::time::Instant::now() > deadline {
            return Err("the template command never started".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The whole job, as a Ctrl-C or a CI timeout takes it: isolane, the
    // shell and the command.
    let group = format!("-{}", child.id());
    let status = std::process::Command::new("kill")
        .args(["-9", "--", &group])
        .status()?;
    assert!(status.success());
    child.wait()?;

    std::fs::write(&fast, "")?;
    ok(root, &["gc"])?;
    let out = output(
        root,
        &["create", "--purpose", "test-killed", "--identifier", "b"],
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("built template"), "{said}");
    assert_eq!(runs(&runs_dir.path().join("runs")), 1);
    let url = url_of(root, "test-killed-b")?;
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t")?, 0);
    assert_eq!(json(root, &["list"])?.as_array().map(Vec::len), Some(1));
    ok(root, &["remove", "test-killed-b", "--force"])?;
    Ok(())
}
