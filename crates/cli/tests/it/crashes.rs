//! `kill -9` (through ISOLANE_FAULT) at each step of create and remove:
//! the next gc or doctor --fix (each is tried at every step) leaves nothing
//! behind and loses nothing.

use test_support::TestResult;

use crate::{OwnCluster, database_names, isolane, json, leases, ok, repo_with_config};

const CREATE_STEPS: [&str; 6] = [
    "create.after_intent",
    "create.after_worktree",
    "create.after_ports",
    // pg-isolate's: the database exists, its owner record does not yet.
    "pg_isolate.create.after_create",
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

/// Runs isolane with `args` under `ISOLANE_FAULT=step`: it must die by
/// SIGKILL there.
pub(crate) fn killed_at(root: &std::path::Path, step: &str, args: &[&str]) -> TestResult {
    let status = isolane(root)
        .args(args)
        .env("ISOLANE_FAULT", step)
        .status()?;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{step}"
    );
    Ok(())
}

/// `doctor` reports what the kill at `step` left of `identifier`, `repair`
/// clears it all, and `doctor` is then clean.
fn repaired(
    repo: &test_support::GitRepo,
    step: &str,
    repair: &[&str],
    identifier: &str,
) -> TestResult {
    let root = repo.path();
    let found = isolane(root).args(["doctor"]).output()?;
    assert_eq!(
        found.status.code(),
        Some(1),
        "{step}: doctor must report it"
    );
    ok(root, repair)?;
    assert_gone(
        repo,
        &format!("test-crash-{identifier}"),
        &format!("testdb_test_crash_{identifier}"),
    )?;
    ok(root, &["doctor"])?;
    Ok(())
}

/// `isolane create` of worktree `test-crash-<identifier>`.
fn create_args(identifier: &str) -> [&str; 5] {
    [
        "create",
        "--purpose",
        "test-crash",
        "--identifier",
        identifier,
    ]
}

#[test]
fn a_create_killed_at_any_step_is_rolled_back_by_gc_or_doctor() -> TestResult {
    let repo = repo_with_config("[hooks]\npost_create = [\"true\"]\n")?;
    let root = repo.path();
    for (i, step) in CREATE_STEPS.iter().enumerate() {
        for (r, repair) in REPAIRS.iter().enumerate() {
            let identifier = format!("c{i}{r}p{}", std::process::id());
            let create = create_args(&identifier);
            killed_at(root, step, &create)?;
            let listed = json(root, &["list"])?;
            assert_eq!(listed[0]["state"], "interrupted-create", "{step}: {listed}");
            repaired(&repo, step, repair, &identifier)?;
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
            let identifier = format!("r{i}{r}p{}", std::process::id());
            let create = create_args(&identifier);
            ok(root, &create)?;
            killed_at(root, step, &["remove", &format!("test-crash-{identifier}")])?;
            repaired(&repo, step, repair, &identifier)?;
        }
    }
    Ok(())
}

/// `kill -9` from outside at moments spread over whole creates and
/// removes (not only at the named steps): after `gc` and `doctor --fix`,
/// every worktree left is complete and everything else is gone.
#[test]
fn commands_killed_at_arbitrary_moments_are_repaired() -> TestResult {
    let repo = repo_with_config("[hooks]\npost_create = [\"true\"]\n")?;
    let root = repo.path();
    let quiet = |command: &mut std::process::Command| {
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    };
    // How long a whole create takes here: the kills are spread over it
    // (and a little past it), whatever the speed of the machine.
    let started = std::time::Instant::now();
    let calibrate = format!("cal{}", std::process::id());
    ok(
        root,
        &[
            "create",
            "--purpose",
            "test-kill",
            "--identifier",
            &calibrate,
        ],
    )?;
    let span = started.elapsed().mul_f64(1.25);
    ok(root, &["remove", &format!("test-kill-{calibrate}")])?;

    let mut killed = 0;
    for round in 0..16u32 {
        // Leases are host-wide and outlive a failed run's repository: the
        // pid keeps this run's names apart from any earlier run's.
        let identifier = format!("k{round}p{}", std::process::id());
        let id = format!("test-kill-{identifier}");
        // Spread over the span, in an order that is not monotonic.
        let delay = span.mul_f64(f64::from(round * 7 % 16) / 16.0);
        let mut create = quiet(isolane(root).args([
            "create",
            "--purpose",
            "test-kill",
            "--identifier",
            &identifier,
        ]))?;
        std::thread::sleep(delay);
        create.kill()?;
        let created = create.wait()?.success();
        killed += usize::from(!created);
        if created && round % 2 == 0 {
            let mut remove = quiet(isolane(root).args(["remove", &id]))?;
            std::thread::sleep(delay / 2);
            remove.kill()?;
            remove.wait()?;
        }
    }
    // At least the kill at 0 ms lands before the create finishes.
    assert!(killed > 0, "no create was interrupted");
    ok(root, &["gc"])?;
    ok(root, &["doctor", "--fix"])?;
    ok(root, &["doctor"])?;
    let suffix = format!("p{}", std::process::id());

    // What is left is whole: each entry ready, with its directory, leases
    // and database; nothing exists that no entry accounts for.
    let listed = json(root, &["list"])?;
    let entries = listed.as_array().ok_or("list is not an array")?;
    let mut ids = Vec::new();
    for entry in entries {
        let id = entry["id"].as_str().ok_or("id")?.to_owned();
        assert_eq!(entry["state"], "ready", "{entry}");
        assert!(
            root.join("worktrees").join(&id).is_dir(),
            "{id}: no directory"
        );
        let database = entry["database"].as_str().ok_or("database")?;
        assert!(database_names(root)?.iter().any(|d| d == database), "{id}");
        ids.push(id);
    }
    for dir in std::fs::read_dir(root.join("worktrees"))? {
        let dir = dir?;
        let name = dir.file_name().to_string_lossy().into_owned();
        if name == ".trash" {
            // worktree-core's tombstones: none may be left.
            let left: Vec<_> = std::fs::read_dir(dir.path())?.collect();
            assert!(left.is_empty(), "tombstones left: {left:?}");
            continue;
        }
        assert!(ids.contains(&name), "{name}: a directory no entry owns");
    }
    for (owner, _) in leases(root)? {
        if let Some(at) = owner
            .find("test-kill-")
            .filter(|_| owner.ends_with(&suffix))
        {
            assert!(
                ids.contains(&owner[at..].to_owned()),
                "{owner}: orphan lease"
            );
        }
    }
    for database in database_names(root)? {
        if database.starts_with("testdb_test_kill_") && database.ends_with(&suffix) {
            assert!(
                entries.iter().any(|e| e["database"] == database.as_str()),
                "{database}: orphan database"
            );
        }
    }
    for id in &ids {
        ok(root, &["remove", id])?;
    }
    for id in &ids {
        let database = format!("testdb_{}", id.replace('-', "_"));
        assert_gone(&repo, id, &database)?;
    }
    Ok(())
}

/// The embedded server killed with SIGKILL while a worktree uses its
/// database: the next command restarts it and says so, and the database
/// survives. A private cluster, so the shared one other tests use lives on.
#[test]
fn a_killed_embedded_server_is_recovered_and_the_cli_says_so() -> TestResult {
    let cluster = OwnCluster::new("pgkill")?;
    let embedded = &cluster.embedded;
    let repo = repo_with_config("")?;
    let root = repo.path();
    let run = |args: &[&str]| cluster.isolane(root).args(args).output();
    let first = run(&["create", "--purpose", "test-pgkill", "--identifier", "a"])?;
    assert!(first.status.success(), "{first:?}");
    assert!(!String::from_utf8_lossy(&first.stderr).contains("recovered"));

    let data_dir = pg_isolate::Server::embedded_dir(embedded)?;
    let pid_file = std::fs::read_dir(&data_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("postmaster.pid"))
        .chain([data_dir.join("postmaster.pid")])
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no postmaster.pid under {}", data_dir.display()))?;
    let pid: i32 = std::fs::read_to_string(&pid_file)?
        .lines()
        .next()
        .ok_or("empty postmaster.pid")?
        .trim()
        .parse()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)?;
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let second = run(&["create", "--purpose", "test-pgkill", "--identifier", "b"])?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("recovered: the embedded server"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("its pid {pid} is gone")),
        "{stderr}"
    );
    // The first worktree's database lived through the crash.
    let listed = run(&["db", "list", "--json"])?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("testdb_test_pgkill_a"), "{listed}");
    for id in ["test-pgkill-a", "test-pgkill-b"] {
        let removed = run(&["remove", id])?;
        assert!(removed.status.success(), "{removed:?}");
    }
    Ok(())
}

#[test]
fn a_moved_server_gets_the_worktrees_urls_rewritten() -> TestResult {
    let cluster = OwnCluster::new("pgmove")?;
    let embedded = &cluster.embedded;
    let repo = repo_with_config("")?;
    let root = repo.path();
    let run = |args: &[&str]| cluster.isolane(root).args(args).output();
    let created = run(&["create", "--purpose", "test-pgmove", "--identifier", "a"])?;
    assert!(created.status.success(), "{created:?}");
    let env_file = root.join("worktrees/test-pgmove-a/.env.test");
    let url_in = |path: &std::path::Path| -> TestResult<String> {
        std::fs::read_to_string(path)?
            .lines()
            .find_map(|l| l.strip_prefix("DATABASE_URL=").map(str::to_owned))
            .ok_or_else(|| "no DATABASE_URL".into())
    };
    let before = url_in(&env_file)?;
    // Another repository on the same server, where no command runs after
    // the move.
    let other = repo_with_config("")?;
    let other_run = |args: &[&str]| cluster.isolane(other.path()).args(args).output();
    let created = other_run(&["create", "--purpose", "test-pgmove", "--identifier", "b"])?;
    assert!(created.status.success(), "{created:?}");
    let other_env_file = other.path().join("worktrees/test-pgmove-b/.env.test");
    assert_eq!(
        url_in(&other_env_file)?
            .rsplit_once('/')
            .map(|(server, _)| server.to_owned()),
        before.rsplit_once('/').map(|(server, _)| server.to_owned()),
        "both on the same server"
    );
    // The server stops (a reboot, say), and another program takes its port.
    assert!(pg_isolate::Server::stop_embedded(embedded)?);
    let port: u16 =
        std::fs::read_to_string(pg_isolate::Server::embedded_dir(embedded)?.join("port"))?
            .trim()
            .parse()?;
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let listed = run(&["list"])?;
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(listed.status.success(), "{stderr}");
    assert!(stderr.contains("database server moved"), "{stderr}");
    let after = url_in(&env_file)?;
    assert_ne!(after, before);
    assert!(!after.contains(&format!(":{port}/")), "{after}");
    // The rewritten URL works, as written, for any client.
    let mut client = postgres::Client::connect(&after, postgres::NoTls)?;
    assert_eq!(client.query_one("SELECT 1", &[])?.get::<_, i32>(0), 1);
    let metadata =
        std::fs::read_to_string(root.join("worktrees/test-pgmove-a/.worktree-metadata.json"))?;
    assert!(metadata.contains(&after), "{metadata}");
    // The other repository's worktree was rewritten by the same command.
    let other_after = url_in(&other_env_file)?;
    assert!(!other_after.contains(&format!(":{port}/")), "{other_after}");
    let mut client = postgres::Client::connect(&other_after, postgres::NoTls)?;
    assert_eq!(client.query_one("SELECT 1", &[])?.get::<_, i32>(0), 1);
    assert!(
        stderr.contains(
            &other
                .path()
                .join("worktrees/test-pgmove-b")
                .display()
                .to_string()
        ),
        "{stderr}"
    );
    let removed = run(&["remove", "test-pgmove-a"])?;
    assert!(removed.status.success(), "{removed:?}");
    let removed = other_run(&["remove", "test-pgmove-b"])?;
    assert!(removed.status.success(), "{removed:?}");
    Ok(())
}
