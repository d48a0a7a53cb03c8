//! Several isolane processes at once, and interrupted runs.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::TestResult;

use crate::{database_names, isolane, json, listening, ok, repo_with_config, wait_ok};

#[test]
fn eight_concurrent_creates_get_distinct_ports_paths_and_databases() -> TestResult {
    let repo = repo_with_config("")?;
    let root = repo.path();
    let children = (0..8)
        .map(|i| {
            isolane(root)
                .args([
                    "create",
                    "--purpose",
                    "test-matrix",
                    "--identifier",
                    &format!("job{i}"),
                    "--json",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let mut databases = BTreeSet::new();
    for child in children {
        let created: serde_json::Value = serde_json::from_str(&wait_ok(child)?)?;
        for port in created["ports"].as_object().ok_or("no ports")?.values() {
            assert!(
                ports.insert(port.as_u64().ok_or("port")?),
                "port {port} handed out twice"
            );
        }
        assert!(paths.insert(created["path"].as_str().ok_or("path")?.to_owned()));
        assert!(databases.insert(created["database"].as_str().ok_or("database")?.to_owned()));
    }
    assert_eq!((ports.len(), paths.len(), databases.len()), (16, 8, 8));
    assert_eq!(json(root, &["list"])?.as_array().map(Vec::len), Some(8));
    let on_server: BTreeSet<String> = database_names(root)?.into_iter().collect();
    assert!(databases.is_subset(&on_server));

    for i in 0..8 {
        ok(root, &["remove", &format!("test-matrix-job{i}")])?;
    }
    let on_server: BTreeSet<String> = database_names(root)?.into_iter().collect();
    assert!(databases.is_disjoint(&on_server));
    Ok(())
}

#[test]
fn an_interrupted_run_stops_its_services_and_unlocks_the_worktree() -> TestResult {
    // Two services; the second leaves a grandchild behind its shell, which
    // must be stopped with it (the whole process group goes).
    // The pid goes outside the worktree (beside the repository, in the same
    // temporary directory) so the worktree stays clean.
    let repo = repo_with_config(
        "[database]\nenabled = false\n\n[[services]]\nname = \"web\"\n\
         command = \"exec python3 -m http.server $APP_PORT --bind 127.0.0.1\"\nready = \"APP_PORT\"\n\n\
         [[services]]\nname = \"api\"\n\
         command = \"sleep 600 & echo $! > ../../../grandchild.pid; exec python3 -m http.server $API_PORT --bind 127.0.0.1\"\n\
         ready = \"API_PORT\"\n",
    )?;
    let root = repo.path();
    let created = json(
        root,
        &["create", "--purpose", "test-sigint", "--identifier", "a"],
    )?;
    let port = created["ports"]["APP_PORT"].as_u64().ok_or("no port")? as u16;
    let api_port = created["ports"]["API_PORT"].as_u64().ok_or("no port")? as u16;
    let grandchild_file = root.parent().ok_or("no parent")?.join("grandchild.pid");

    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let _ = std::fs::remove_file(&grandchild_file);
        let mut run = isolane(root)
            .args(["run", "test-sigint-a", "--", "sleep", "600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !listening(port) || !listening(api_port) {
            assert!(Instant::now() < deadline, "the service never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let shown = json(root, &["show", "test-sigint-a"])?;
        assert_eq!(shown["state"], "in-use", "{shown}");

        kill(Pid::from_raw(i32::try_from(run.id())?), signal)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = run.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                run.kill()?;
                return Err(format!("{signal}: isolane run did not stop").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{signal}: {status}");
        assert!(!listening(port), "{signal}: the service outlived the run");
        assert!(
            !listening(api_port),
            "{signal}: the service outlived the run"
        );
        let grandchild: u32 = std::fs::read_to_string(&grandchild_file)?.trim().parse()?;
        assert!(
            !crate::alive(grandchild),
            "{signal}: the service's grandchild {grandchild} outlived the run"
        );
        let shown = json(root, &["show", "test-sigint-a"])?;
        assert_eq!(shown["state"], "ready", "{signal}: still locked: {shown}");
    }
    ok(root, &["remove", "test-sigint-a"])?;
    Ok(())
}

/// Eight processes create the same worktree at once: the registry lock lets
/// exactly one win, the others are refused, and nothing of theirs is left.
#[test]
fn concurrent_creates_of_one_id_let_exactly_one_win() -> TestResult {
    let repo = repo_with_config("")?;
    let root = repo.path();
    let identifier = format!("same{}", std::process::id());
    let id = format!("test-race-{identifier}");
    let children = (0..8)
        .map(|_| {
            isolane(root)
                .args([
                    "create",
                    "--purpose",
                    "test-race",
                    "--identifier",
                    &identifier,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut won = 0;
    for child in children {
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => won += 1,
            Some(2) => assert!(stderr.contains("already exists"), "{stderr}"),
            other => return Err(format!("exit {other:?}: {stderr}").into()),
        }
    }
    assert_eq!(won, 1, "exactly one create may win");
    let listed = json(root, &["list"])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["state"], "ready", "{listed}");
    let database = format!("testdb_test_race_{identifier}");
    assert!(database_names(root)?.contains(&database));
    ok(root, &["remove", &id])?;
    assert!(!database_names(root)?.contains(&database));
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    Ok(())
}
