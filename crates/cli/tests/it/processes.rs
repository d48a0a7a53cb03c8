//! `isolane run` owns what it starts: a killed run's services and command
//! are stopped by the next command, readiness means the service's own
//! listener, every stop takes the command's whole process group, and each
//! service's output is in its log.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::TestResult;
use test_support::child::KillOnDrop;

use crate::{isolane, json, listening, ok, output, repo_with_config};

/// A service that listens on APP_PORT, writes its pid beside the
/// repository, says something on stdout and on stderr, and ignores SIGTERM:
/// only KILL stops it.
const STUBBORN_SERVICE: &str = r#"
import os, signal, socket, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["APP_PORT"])))
s.listen()
with open(os.environ["PID_FILE"], "w") as f:
    f.write(str(os.getpid()))
print("app says hello", flush=True)
print("app warns on stderr", file=sys.stderr, flush=True)
while True:
    conn, _ = s.accept()
    conn.close()
"#;

fn config(service_command: &str) -> String {
    format!(
        "[database]\nenabled = false\n\n[ports]\nnames = [\"APP_PORT\"]\n\n\
         [[services]]\nname = \"app\"\ncommand = {service_command:?}\nready = \"APP_PORT\"\n"
    )
}

/// Whether process `pid` runs.
fn alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(crate::alive)
}

/// The pid written to `path`, once it is written whole.
fn read_pid(path: &Path) -> TestResult<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::fs::read_to_string(path).map(|text| text.trim().parse::<i32>()) {
            Ok(Ok(pid)) => return Ok(pid),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(Err(error)) => return Err(error.into()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// Waits until every file of `files` exists.
fn wait_files(files: &[&Path], what: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files.iter().all(|f| f.exists()) {
        if Instant::now() > deadline {
            return Err(format!("{what} never came up").into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// Waits for `child` to end (at most a minute).
fn wait_end(child: &mut Child) -> TestResult<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            return Err("isolane run did not stop".into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn what_a_killed_run_left_is_stopped_by_the_next_command() -> TestResult {
    // Beside the service, a child that drops the run's token: only the
    // recorded process group can find it.
    let repo = repo_with_config(&config(
        "env -u ISOLANE_RUN_TOKEN sleep 600 & echo $! > ../../../untokened.pid; \
         exec python3 ../../../service.py",
    ))?;
    let root = repo.path();
    let beside = root.parent().ok_or("no parent")?;
    std::fs::write(beside.join("service.py"), STUBBORN_SERVICE)?;
    let created = json(
        root,
        &["create", "--purpose", "test-kill", "--identifier", "run"],
    )?;
    let port = created["ports"]["APP_PORT"].as_u64().ok_or("no port")? as u16;
    let service_pid_file = beside.join("service.pid");
    let command_pid_file = beside.join("command-child.pid");
    let untokened_file = beside.join("untokened.pid");

    // Every command that must stop the leftovers; `run` then starts its own
    // service on the freed port.
    for next in ["list", "gc", "doctor", "run"] {
        let _ = std::fs::remove_file(&service_pid_file);
        let _ = std::fs::remove_file(&command_pid_file);
        let _ = std::fs::remove_file(&untokened_file);
        let mut run = KillOnDrop(
            isolane(root)
                .env("PID_FILE", &service_pid_file)
                .args(["run", "test-kill-run", "--", "sh", "-c"])
                .arg(format!(
                    "sleep 600 & echo $! > {}; wait",
                    command_pid_file.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait_files(
            &[&service_pid_file, &command_pid_file, &untokened_file],
            "the run",
        )?;
        let service = read_pid(&service_pid_file)?;
        let command_child = read_pid(&command_pid_file)?;
        let untokened = read_pid(&untokened_file)?;
        kill(Pid::from_raw(i32::try_from(run.0.id())?), Signal::SIGKILL)?;
        run.0.wait()?;
        // Orphaned, still running: nothing stopped them yet.
        assert!(
            alive(service) && alive(command_child),
            "{next}: nothing was left to stop"
        );
        assert!(listening(port));

        let args: Vec<&str> = match next {
            "run" => vec!["run", "test-kill-run", "--", "true"],
            other => vec![other],
        };
        let out = isolane(root)
            .env("PID_FILE", beside.join("next-service.pid"))
            .args(&args)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{next}: {stderr}");
        assert!(
            stderr.contains("left running by a killed `isolane run` in test-kill-run"),
            "{next} did not say what it stopped: {stderr}"
        );
        assert!(!alive(service), "{next}: the service {service} survived");
        assert!(
            !alive(command_child),
            "{next}: the command's child {command_child} survived"
        );
        assert!(
            !alive(untokened),
            "{next}: the service's token-less child {untokened} survived"
        );
        if next == "run" {
            // It ran its own service (a new pid), which is gone again.
            let fresh = read_pid(&beside.join("next-service.pid"))?;
            assert_ne!(fresh, service);
            assert!(!alive(fresh));
        }
        assert!(
            !listening(port),
            "{next}: something still listens on {port}"
        );
        let shown = json(root, &["show", "test-kill-run"])?;
        assert_eq!(shown["state"], "ready", "{next}: {shown}");
    }

    // The last run's output is in the service's log, stdout and stderr
    // alike; the run before it is kept beside it.
    let log = ok(root, &["logs", "test-kill-run", "app"])?;
    assert!(log.contains("app says hello"), "{log}");
    assert!(log.contains("app warns on stderr"), "{log}");
    // With one service, all the logs are that one, unprefixed.
    assert_eq!(ok(root, &["logs", "test-kill-run"])?, log);
    // --follow prints what is there, then keeps going until interrupted.
    let mut follow = KillOnDrop(
        isolane(root)
            .args(["logs", "test-kill-run", "app", "--follow"])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(follow.0.stdout.take().ok_or("no stdout")?),
        &mut first,
    )?;
    assert_eq!(first.trim_end(), "app says hello");
    assert!(follow.0.try_wait()?.is_none(), "--follow ended by itself");
    drop(follow);
    let unknown = output(root, &["logs", "test-kill-run", "nope"])?;
    assert_eq!(unknown.status.code(), Some(2));

    ok(root, &["remove", "test-kill-run"])?;
    let logs_dir = root.join(".git/isolane/logs/test-kill-run");
    assert!(!logs_dir.exists(), "remove left the logs");
    Ok(())
}

#[test]
fn a_listener_already_on_the_port_fails_the_run_and_names_it() -> TestResult {
    let repo = repo_with_config(&config(
        "exec python3 -m http.server $APP_PORT --bind 127.0.0.1",
    ))?;
    let root = repo.path();
    let created = json(
        root,
        &["create", "--purpose", "test-taken", "--identifier", "port"],
    )?;
    let port = created["ports"]["APP_PORT"].as_u64().ok_or("no port")? as u16;
    // An orphan of some earlier run, another user's server: this process.
    let squatter = TcpListener::bind(("127.0.0.1", port))?;
    let marker = root.parent().ok_or("no parent")?.join("ran");
    let out = isolane(root)
        .args(["run", "test-taken-port", "--", "touch"])
        .arg(&marker)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "APP_PORT={port} is already in use by pid {}",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(!marker.exists(), "the tests ran against the squatter");
    drop(squatter);
    ok(root, &["run", "test-taken-port", "--", "true"])?;
    ok(root, &["remove", "test-taken-port"])?;
    Ok(())
}

#[test]
fn a_port_answered_outside_the_services_group_is_not_ready() -> TestResult {
    // The service's shell starts a listener in a session (and so a group)
    // of its own, then waits: the port answers, but not from the service.
    let escapee_pid = "../../../escapee.pid";
    let repo = repo_with_config(&config(&format!(
        "setsid python3 -m http.server $APP_PORT --bind 127.0.0.1 & echo $! > {escapee_pid}; \
         echo started the escapee; sleep 600"
    )))?;
    let root = repo.path();
    json(
        root,
        &["create", "--purpose", "test-group", "--identifier", "ready"],
    )?;
    let out = output(root, &["run", "test-group-ready", "--", "true"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let escapee_file = root.parent().ok_or("no parent")?.join("escapee.pid");
    let escapee = read_pid(&escapee_file).ok();
    if let Some(pid) = escapee {
        // Not ours to leave running, whatever the outcome.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is answered by a process outside the service"),
        "{stderr}"
    );
    assert!(
        stderr.contains("started the escapee"),
        "the log tail is missing: {stderr}"
    );
    assert!(escapee.is_some(), "the escapee never started");
    ok(root, &["remove", "test-group-ready"])?;
    Ok(())
}

/// Runs, in worktree `id`, a command that ignores TERM and INT (it writes
/// its pid to `pid_file`), sends the run TERM, and checks that the run ends
/// and takes the command along (KILL after the grace period).
fn a_stubborn_run_ends_on_term(root: &Path, id: &str, pid_file: &Path) -> TestResult {
    let mut run = KillOnDrop(
        isolane(root)
            .args(["run", id, "--", "sh", "-c"])
            .arg(format!(
                "trap '' TERM INT; echo $$ > {}; sleep 600",
                pid_file.display()
            ))
            .stdin(Stdio::null())
            .spawn()?,
    );
    let stubborn = read_pid(pid_file)?;
    kill(Pid::from_raw(i32::try_from(run.0.id())?), Signal::SIGTERM)?;
    let status = wait_end(&mut run.0)?;
    assert!(!status.success(), "{status}");
    assert!(
        !alive(stubborn),
        "the command that ignored TERM outlived the run"
    );
    Ok(())
}

#[test]
fn a_stopped_run_leaves_no_descendant_of_the_command() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let root = repo.path();
    json(
        root,
        &["create", "--purpose", "test-tree", "--identifier", "stop"],
    )?;
    let beside = root.parent().ok_or("no parent")?;
    let (a, b, c) = (
        beside.join("a.pid"),
        beside.join("b.pid"),
        beside.join("c.pid"),
    );
    // A child, a grandchild, and a grandchild that ignores TERM.
    let script = format!(
        "sleep 600 & echo $! > {a}; \
         (sleep 600 & echo $! > {b}; wait) & \
         (trap '' TERM; sleep 600) & echo $! > {c}; wait",
        a = a.display(),
        b = b.display(),
        c = c.display()
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        for file in [&a, &b, &c] {
            let _ = std::fs::remove_file(file);
        }
        let mut run = KillOnDrop(
            isolane(root)
                .args(["run", "test-tree-stop", "--", "sh", "-c", &script])
                .stdin(Stdio::null())
                .spawn()?,
        );
        wait_files(&[&a, &b, &c], "the command's children")?;
        let pids = [read_pid(&a)?, read_pid(&b)?, read_pid(&c)?];
        kill(Pid::from_raw(i32::try_from(run.0.id())?), signal)?;
        let status = wait_end(&mut run.0)?;
        assert!(!status.success(), "{signal}: {status}");
        for pid in pids {
            assert!(!alive(pid), "{signal}: descendant {pid} outlived the run");
        }
    }
    // A command that ignores the stop signal gets KILL after the grace
    // period: the run ends, and takes it along.
    let _ = std::fs::remove_file(&a);
    a_stubborn_run_ends_on_term(root, "test-tree-stop", &a)?;

    // A command that ends normally takes its leftovers with it too.
    ok(
        root,
        &[
            "run",
            "test-tree-stop",
            "--",
            "sh",
            "-c",
            &format!("sleep 600 & echo $! > {}", a.display()),
        ],
    )?;
    assert!(
        !alive(read_pid(&a)?),
        "a background child outlived a normal run"
    );
    ok(root, &["remove", "test-tree-stop"])?;
    Ok(())
}

#[test]
fn a_stop_signal_while_the_command_is_being_recorded_still_ends_a_command_that_ignores_it()
-> TestResult {
    // The registry's lock is held by a service, as a slow disk would hold
    // it: the run cannot record its command's group while the signal
    // comes. The command ignores TERM and INT, so only the KILL after the
    // grace period ends it.
    let repo = repo_with_config("")?;
    let root = repo.path();
    let lock = root.join(".git/isolane/registry.json.lock");
    let beside = root.parent().ok_or("no parent")?;
    std::fs::write(
        beside.join("listen.py"),
        "import os, socket, time\n\
         s = socket.socket()\n\
         s.bind((\"127.0.0.1\", int(os.environ[\"APP_PORT\"])))\n\
         s.listen()\n\
         time.sleep(600)\n",
    )?;
    let config = config(&format!(
        "sleep 1; exec flock -x {} python3 ../../../listen.py",
        lock.display()
    ));
    repo.write("isolane.toml", &config)?;
    repo.commit_all("a service that holds the registry's lock")?;
    json(
        root,
        &["create", "--purpose", "test-tree", "--identifier", "rec"],
    )?;
    a_stubborn_run_ends_on_term(root, "test-tree-rec", &beside.join("stubborn.pid"))?;
    ok(root, &["remove", "test-tree-rec"])?;
    Ok(())
}
