//! The whole workflow, as a user runs it: create, run with a service,
//! reset the database, verify rollbacks, remove.

use std::path::{Path, PathBuf};

use test_support::{GitRepo, TestResult};

use crate::{database_names, isolane, json, leases, listening, ok, output, repo_with_config};

const CONFIG: &str = r#"
[ports]
names = ["APP_PORT", "API_PORT"]

[database]
migrations = "migrations"

[[services]]
name = "web"
command = "exec python3 -m http.server $APP_PORT --bind 127.0.0.1"
ready = "APP_PORT"
timeout = "30s"

[hooks]
post_create = ["echo hook ran in $ISOLANE_WORKTREE > hook.txt"]
"#;

/// A repository with a service, a setup hook and two diesel migrations.
fn fixture() -> TestResult<GitRepo> {
    let repo = repo_with_config(CONFIG)?;
    repo.write(".gitignore", "hook.txt\nrun.txt\n")?;
    repo.write(
        "migrations/2024-01-01-000000_create_users/up.sql",
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n",
    )?;
    repo.write(
        "migrations/2024-01-01-000000_create_users/down.sql",
        "DROP TABLE users;\n",
    )?;
    repo.write(
        "migrations/2024-01-02-000000_add_email/up.sql",
        "ALTER TABLE users ADD COLUMN email text NOT NULL DEFAULT '';\n",
    )?;
    repo.write(
        "migrations/2024-01-02-000000_add_email/down.sql",
        "ALTER TABLE users DROP COLUMN email;\n",
    )?;
    repo.commit_all("app with migrations")?;
    Ok(repo)
}

fn count_users(url: &str) -> TestResult<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client.query_one("SELECT count(*) FROM users", &[])?.get(0))
}

#[test]
fn create_run_reset_check_rollback_remove() -> TestResult {
    let repo = fixture()?;
    let root = repo.path();

    // create
    let created = json(
        root,
        &[
            "create",
            "--purpose",
            "test-flow",
            "--identifier",
            "one",
            "--branch",
            "feature/flow-one",
        ],
    )?;
    let path = PathBuf::from(created["path"].as_str().ok_or("no path")?);
    assert_eq!(path, root.join("worktrees/test-flow-one"));
    let app_port = created["ports"]["APP_PORT"].as_u64().ok_or("no APP_PORT")? as u16;
    let api_port = created["ports"]["API_PORT"].as_u64().ok_or("no API_PORT")? as u16;
    assert_ne!(app_port, api_port);
    let database = created["database"]
        .as_str()
        .ok_or("no database")?
        .to_owned();
    assert_eq!(database, "testdb_test_flow_one");

    // The files test code reads.
    let env_file = std::fs::read_to_string(path.join(".env.test"))?;
    assert!(
        env_file.contains(&format!("APP_PORT={app_port}\n")),
        "{env_file}"
    );
    assert!(
        env_file.contains("ISOLANE_WORKTREE=test-flow-one\n"),
        "{env_file}"
    );
    let url = env_file
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .ok_or("no DATABASE_URL")?
        .to_owned();
    assert!(
        !env_file.contains(' '),
        "export $(cat .env.test | xargs) needs no spaces: {env_file}"
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join(".worktree-metadata.json"))?)?;
    assert_eq!(metadata["database"], database.as_str());
    assert_eq!(metadata["purpose"], "test-flow");
    assert_eq!(metadata["ports"]["API_PORT"], api_port);
    assert!(
        metadata["created"]
            .as_str()
            .is_some_and(|c| c.ends_with("+00:00")),
        "Python 3.10's datetime.fromisoformat reads an explicit offset, not Z: {}",
        metadata["created"]
    );
    for key in [
        "PGHOST=",
        "PGPORT=",
        "PGUSER=",
        "PGPASSWORD=",
        "PGDATABASE=",
    ] {
        assert!(env_file.contains(key), "{key} missing from {env_file}");
    }
    assert!(env_file.contains(&format!("PGDATABASE={database}\n")));
    assert_eq!(
        std::fs::read_to_string(path.join("hook.txt"))?,
        "hook ran in test-flow-one\n"
    );

    // git sees a first-class, clean worktree, and the main one stays clean.
    assert_eq!(repo.git(["status", "--porcelain"])?, "");
    assert_eq!(test_support::git(&path, ["status", "--porcelain"])?, "");
    assert!(
        repo.git(["worktree", "list"])?
            .contains(&path.display().to_string())
    );
    assert_eq!(
        test_support::git(&path, ["branch", "--show-current"])?.trim(),
        "feature/flow-one"
    );

    // The database is migrated.
    assert_eq!(count_users(&url)?, 0);

    // run: the service listens on the leased port while CMD runs, and is
    // stopped afterwards.
    let script = "import os, urllib.request\n\
                  urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['APP_PORT']).read()\n\
                  open('run.txt', 'w').write(os.environ['DATABASE_URL'])\n";
    ok(
        root,
        &["run", "test-flow-one", "--", "python3", "-c", script],
    )?;
    assert_eq!(std::fs::read_to_string(path.join("run.txt"))?, url);
    assert!(
        !listening(app_port),
        "the service must be stopped after the run"
    );
    // CMD's exit code is isolane's.
    let failed = output(
        root,
        &[
            "run",
            "test-flow-one",
            "--no-services",
            "--",
            "sh",
            "-c",
            "exit 7",
        ],
    )?;
    assert_eq!(failed.status.code(), Some(7));
    // libpq's own variables: psql with no arguments reaches the database.
    let psql = ok(
        root,
        &[
            "run",
            "test-flow-one",
            "--no-services",
            "--",
            "psql",
            "-X",
            "-A",
            "-t",
            "-c",
            "select current_database()",
        ],
    )?;
    assert_eq!(psql.trim(), database.as_str());

    // db reset: fresh from the template.
    {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.execute("INSERT INTO users (name) VALUES ('alice')", &[])?;
    }
    assert_eq!(count_users(&url)?, 1);
    ok(root, &["db", "reset", "test-flow-one"])?;
    assert_eq!(count_users(&url)?, 0);

    // db migrate down to a version and back up, by worktree and by URL.
    let has_email = |url: &str| -> TestResult<bool> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        let row = client.query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email'",
            &[],
        )?;
        Ok(row.get::<_, i64>(0) == 1)
    };
    let down = ok(
        root,
        &[
            "db",
            "migrate",
            "test-flow-one",
            "--to",
            "2024-01-01-000000",
        ],
    )?;
    assert!(down.contains("reverted 1"), "{down}");
    assert!(!has_email(&url)?);
    ok(
        root,
        &[
            "db",
            "migrate",
            "--url",
            &url,
            "--dir",
            "migrations",
            "--to",
            "latest",
        ],
    )?;
    assert!(has_email(&url)?);
    let unknown = output(root, &["db", "migrate", "test-flow-one", "--to", "1999"])?;
    assert_eq!(unknown.status.code(), Some(2));

    // check-rollback of the configured migrations.
    let report = json(root, &["db", "check-rollback"])?;
    assert_eq!(report["summary"]["checked"], 2, "{report}");
    assert_eq!(report["summary"]["failed"], 0, "{report}");

    // list / show / env.
    let listed = json(root, &["list"])?;
    assert_eq!(listed[0]["id"], "test-flow-one");
    assert_eq!(listed[0]["state"], "ready");
    let shell = ok(root, &["env", "test-flow-one", "--format", "shell"])?;
    assert!(
        shell.contains(&format!("export APP_PORT='{app_port}'")),
        "{shell}"
    );

    // remove refuses work at stake, naming it.
    std::fs::write(path.join("notes.txt"), "unsaved")?;
    let refused = output(root, &["remove", "test-flow-one"])?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert!(path.join("notes.txt").exists());
    assert!(database_names(root)?.contains(&database));

    // --force takes everything back.
    ok(root, &["remove", "test-flow-one", "--force"])?;
    assert!(!path.exists());
    assert!(!database_names(root)?.contains(&database));
    assert!(
        leases(root)?
            .iter()
            .all(|(_, ports)| !ports.contains(&app_port))
    );
    assert!(
        repo.git(["branch", "--list", "feature/flow-one"])?
            .trim()
            .is_empty()
    );
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    Ok(())
}

#[test]
fn works_from_inside_a_test_worktree_and_without_a_database() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    ok(
        repo.path(),
        &["create", "--purpose", "test-inside", "--identifier", "a"],
    )?;
    let inside: &Path = &repo.path().join("worktrees/test-inside-a");
    // The registry lives in the git common dir: visible from the worktree.
    let listed = json(inside, &["list"])?;
    assert_eq!(listed[0]["id"], "test-inside-a");
    assert_eq!(listed[0]["database"], serde_json::Value::Null);
    let env = ok(inside, &["env", "test-inside-a"])?;
    assert!(!env.contains("DATABASE_URL"), "{env}");
    let status = isolane(inside).args(["remove", "test-inside-a"]).status()?;
    assert!(status.success());
    assert!(!inside.exists());
    Ok(())
}

#[test]
fn a_database_name_taken_by_another_repository_is_never_dropped() -> TestResult {
    // Two repositories, one worktree id: the database name is the same, so
    // the second create must fail, roll back, and leave the first alone.
    let first = repo_with_config("")?;
    let second = repo_with_config("")?;
    let created = json(
        first.path(),
        &["create", "--purpose", "test-same", "--identifier", "name"],
    )?;
    let database = created["database"]
        .as_str()
        .ok_or("no database")?
        .to_owned();
    let url = std::fs::read_to_string(first.path().join("worktrees/test-same-name/.env.test"))?
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL=").map(str::to_owned))
        .ok_or("no DATABASE_URL")?;
    {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute("CREATE TABLE precious (x int); INSERT INTO precious VALUES (1)")?;
    }

    let clash = output(
        second.path(),
        &["create", "--purpose", "test-same", "--identifier", "name"],
    )?;
    assert_eq!(
        clash.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&clash.stderr)
    );
    assert!(String::from_utf8_lossy(&clash.stderr).contains("already exists"));
    assert_eq!(json(second.path(), &["list"])?, serde_json::json!([]));
    assert!(!second.path().join("worktrees/test-same-name").exists());

    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let kept: i32 = client.query_one("SELECT x FROM precious", &[])?.get(0);
    assert_eq!(
        kept, 1,
        "the first repository's database {database} was touched"
    );
    ok(first.path(), &["remove", "test-same-name"])?;
    Ok(())
}

#[test]
fn databases_of_a_deleted_repository_are_reclaimed_or_taken_over() -> TestResult {
    // A cluster of its own: every `gc` and `doctor --fix` of the other tests
    // reclaims a deleted repository's databases too, whichever repository
    // it runs in.
    let cluster = crate::OwnCluster::new("gone")?;
    let cli = |dir: &Path, args: &[&str]| cluster.isolane(dir).args(args).output();
    let ok = |dir: &Path, args: &[&str]| -> TestResult<String> {
        let out = cli(dir, args)?;
        if !out.status.success() {
            return Err(format!("isolane {args:?} failed: {out:?}").into());
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let names = |dir: &Path| -> TestResult<Vec<String>> {
        crate::names_in(&serde_json::from_str(&ok(dir, &["db", "list", "--json"])?)?)
    };
    let purpose = format!("test-gone{}", std::process::id());
    let db = |identifier: &str| format!("testdb_{}_{identifier}", purpose.replace('-', "_"));
    let config = "[ports]\nnames = [\"GONE_PORT\"]\n";
    let gone = repo_with_config(config)?;
    for identifier in ["taken", "reclaimed"] {
        ok(
            gone.path(),
            &["create", "--purpose", &purpose, "--identifier", identifier],
        )?;
    }
    // A worktree without a database: only its port lease says it existed.
    ok(
        gone.path(),
        &[
            "create",
            "--purpose",
            &purpose,
            "--identifier",
            "nodb",
            "--no-db",
        ],
    )?;
    // CI deletes its workspace without `isolane remove`.
    std::fs::remove_dir_all(gone.path())?;

    let fresh = repo_with_config(config)?;
    let root = fresh.path();
    let doctor = cli(root, &["doctor", "--json"])?;
    let findings: serde_json::Value = serde_json::from_slice(&doctor.stdout)?;
    for identifier in ["taken", "reclaimed"] {
        assert!(
            findings.as_array().is_some_and(|all| all.iter().any(|f| {
                f["kind"] == "database-of-gone-repository" && f["subject"] == db(identifier)
            })),
            "{findings:#}"
        );
    }
    // A create of the same id in another clone takes the database over.
    let taken = cli(
        root,
        &["create", "--purpose", &purpose, "--identifier", "taken"],
    )?;
    let stderr = String::from_utf8_lossy(&taken.stderr);
    assert!(taken.status.success(), "{stderr}");
    assert!(stderr.contains("taking it over"), "{stderr}");
    // gc, run in any repository, reclaims the rest.
    let gc: serde_json::Value = serde_json::from_str(&ok(root, &["gc", "--json"])?)?;
    assert!(
        gc["dropped_databases"]
            .as_array()
            .is_some_and(|d| d.iter().any(|n| *n == db("reclaimed"))),
        "{gc:#}"
    );
    let left = names(root)?;
    assert!(!left.contains(&db("reclaimed")), "{left:?}");
    assert!(left.contains(&db("taken")), "{left:?}");
    // The deleted repository's port leases went with its databases.
    let owners: Vec<String> = leases(root)?
        .into_iter()
        .map(|(owner, _)| owner)
        .filter(|owner| owner.contains(&purpose))
        .collect();
    // The --no-db worktree's lease too, though no database named it: it
    // was held by the deleted repository's path.
    assert_eq!(owners.len(), 1, "only the new clone's lease: {owners:?}");
    ok(root, &["remove", &format!("{purpose}-taken")])?;
    assert!(!names(root)?.contains(&db("taken")));
    Ok(())
}

#[test]
fn gc_dry_run_says_would_remove_and_removes_nothing() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let root = repo.path();
    ok(
        root,
        &[
            "create",
            "--purpose",
            "test-dry",
            "--identifier",
            "one",
            "--no-db",
        ],
    )?;
    let said = ok(root, &["gc", "--max-age", "0s", "--dry-run"])?;
    assert!(said.contains("would remove: test-dry-one"), "{said}");
    assert!(
        said.contains("gc: 1 would remove, 0 would finish"),
        "{said}"
    );
    assert!(!said.contains(" removed"), "{said}");
    assert!(root.join("worktrees/test-dry-one").is_dir());
    ok(root, &["remove", "test-dry-one"])?;
    Ok(())
}
