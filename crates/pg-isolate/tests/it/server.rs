//! The server: embedded start, attach, stop, crash recovery, idle stop,
//! URL precedence, running as root and as an unprivileged user.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use pg_isolate::{Error, Server, ServerOptions, URL_ENV};
use test_support::{TestResult, child};

use crate::{PrivateCluster, alive, emit, eventually, kill9, shared, values};

fn select_one(server: &Server) -> TestResult<i32> {
    let mut client = server.admin_client()?;
    Ok(client.query_one("SELECT 1", &[])?.get(0))
}

#[test]
fn processes_attach_to_one_shared_server() -> TestResult {
    let first = shared()?;
    let second = shared()?;
    assert_eq!(first.url("postgres"), second.url("postgres"));
    assert_eq!(first.embedded_pid(), second.embedded_pid());
    assert!(first.embedded_pid().is_some_and(alive));
    assert!(first.major_version() >= 10);
    assert_eq!(select_one(&second)?, 1);
    let process_wide = Server::shared()?;
    assert_eq!(process_wide.url("x"), first.url("x"));
    assert_eq!(Server::shared()?.url("x"), first.url("x"));
    Ok(())
}

#[test]
fn explicit_url_and_env_url_take_precedence_over_embedded() -> TestResult {
    if let Some(args) = child::args() {
        // The child sees only PG_ISOLATE_URL; its embedded settings point
        // at binaries that do not exist, so only the URL can work.
        let mut options = ServerOptions::default();
        options.embedded.bindir = Some(PathBuf::from(&args[0]));
        let server = Server::connect(options)?;
        assert!(server.embedded_pid().is_none());
        assert_eq!(select_one(&server)?, 1);
        return Ok(());
    }
    let embedded = shared()?;
    let url = embedded.url("postgres");

    let mut options = ServerOptions {
        url: Some(url.clone()),
        ..ServerOptions::default()
    };
    options.embedded.bindir = Some(PathBuf::from("/nonexistent/bin"));
    let by_option = Server::connect(options)?;
    assert!(by_option.embedded_pid().is_none());
    assert_eq!(by_option.url("x"), embedded.url("x"));
    assert_eq!(select_one(&by_option)?, 1);
    assert!(!format!("{by_option:?}").contains(&password_of(&url)));

    let mut command = child::command(
        "server::explicit_url_and_env_url_take_precedence_over_embedded",
        &["/nonexistent/bin".to_owned()],
    )?;
    command.env(URL_ENV, &url);
    child::wait_success(
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?,
    )?;
    Ok(())
}

fn password_of(url: &str) -> String {
    let after = url.split("://").nth(1).unwrap_or_default();
    let userinfo = after.split('@').next().unwrap_or_default();
    userinfo.split(':').nth(1).unwrap_or_default().to_owned()
}

#[test]
fn errors_never_show_the_password() -> TestResult {
    let options = ServerOptions {
        url: Some("postgres://someone:hunter2secret@127.0.0.1:1/db".to_owned()),
        ..ServerOptions::default()
    };
    let error = Server::connect(options).expect_err("nothing listens on port 1");
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(!chain.contains("hunter2secret"), "{chain}");
    assert!(!format!("{error:?}").contains("hunter2secret"));
    assert!(chain.contains("someone:***@127.0.0.1:1"), "{chain}");

    let options = ServerOptions {
        url: Some("mysql://u:hunter2secret@h/db".to_owned()),
        ..ServerOptions::default()
    };
    let error = Server::connect(options).expect_err("not a postgres URL");
    assert!(matches!(error, Error::InvalidUrl { .. }));
    assert!(!error.to_string().contains("hunter2secret"));
    Ok(())
}

#[test]
fn missing_binaries_say_where_we_looked_and_what_to_install() -> TestResult {
    let mut options = ServerOptions::default();
    options.embedded.bindir = Some(PathBuf::from("/nonexistent/pg/bin"));
    let error = Server::connect(options).expect_err("no binaries there");
    assert!(matches!(error, Error::NoBinaries { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("/nonexistent/pg/bin"), "{message}");
    assert!(message.contains("apt-get install postgresql"), "{message}");
    Ok(())
}

/// The port in a URL (`...@127.0.0.1:PORT/db`).
fn port_of(url: &str) -> TestResult<u16> {
    let after = url.rsplit(':').next().ok_or("a port")?;
    Ok(after.split('/').next().ok_or("a port")?.parse()?)
}

#[test]
fn private_cluster_starts_stops_and_starts_again_on_the_same_url() -> TestResult {
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    let first = server.embedded_pid().ok_or("embedded")?;
    assert_eq!(select_one(&server)?, 1);
    let url = server.url("app_db");
    let dir = Server::embedded_dir(&cluster.options.embedded)?;
    assert!(dir.starts_with(cluster.path()));
    assert!(dir.join("pristine/PG_VERSION").is_file());
    drop(server);

    assert!(Server::stop_embedded(&cluster.options.embedded)?);
    assert!(!alive(first));
    assert!(!Server::stop_embedded(&cluster.options.embedded)?);

    // Same port and password: a URL written down once keeps working.
    let again = cluster.connect()?;
    let second = again.embedded_pid().ok_or("embedded")?;
    assert_ne!(first, second);
    assert_eq!(again.url("app_db"), url);
    assert_eq!(select_one(&again)?, 1);
    drop(again);

    // Another program took the port meanwhile: a new free port, remembered
    // for the starts after that.
    assert!(Server::stop_embedded(&cluster.options.embedded)?);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port_of(&url)?))?;
    let moved = cluster.connect()?;
    let moved_url = moved.url("app_db");
    assert_ne!(port_of(&moved_url)?, port_of(&url)?);
    assert_eq!(select_one(&moved)?, 1);
    drop(moved);
    drop(squatter);
    assert!(Server::stop_embedded(&cluster.options.embedded)?);
    assert_eq!(cluster.connect()?.url("app_db"), moved_url);
    Ok(())
}

#[test]
fn stale_pid_file_naming_a_foreign_process_is_never_signalled() -> TestResult {
    // Another cluster's postmaster runs the very same binary: only its
    // working directory (its own data directory) tells it apart.
    let other = PrivateCluster::new()?;
    let other_server = other.connect()?;
    let other_pid = other_server.embedded_pid().ok_or("embedded")?;
    let other_data = Server::embedded_dir(&other.options.embedded)?.join("data");

    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    let url = server.url("x");
    drop(server);
    assert!(Server::stop_embedded(&cluster.options.embedded)?);
    let pid_file = Server::embedded_dir(&cluster.options.embedded)?
        .join("data")
        .join("postmaster.pid");
    // A stale postmaster.pid whose pid is now the other cluster's
    // postmaster (even saying "ready" on the other cluster's port).
    std::fs::copy(other_data.join("postmaster.pid"), &pid_file)?;
    assert!(!Server::stop_embedded(&cluster.options.embedded)?);
    assert!(alive(other_pid));
    let restarted = cluster.connect()?;
    let pid = restarted.embedded_pid().ok_or("embedded")?;
    assert_ne!(pid, other_pid);
    assert_eq!(restarted.url("x"), url);
    assert_eq!(select_one(&restarted)?, 1);
    assert!(alive(other_pid));
    assert_eq!(select_one(&other_server)?, 1);
    drop(restarted);
    assert!(Server::stop_embedded(&cluster.options.embedded)?);

    // A stale postmaster.pid naming an unrelated live process.
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn()?;
    std::fs::write(&pid_file, format!("{}\n", sleeper.id()))?;
    assert!(!Server::stop_embedded(&cluster.options.embedded)?);
    let restarted = cluster.connect()?;
    assert_eq!(select_one(&restarted)?, 1);
    assert!(alive(sleeper.id()));
    assert!(
        sleeper.try_wait()?.is_none(),
        "the sleeper was not signalled"
    );
    sleeper.kill()?;
    sleeper.wait()?;
    assert!(alive(other_pid));
    Ok(())
}

#[test]
fn sigkilled_server_is_detected_and_restarted_with_its_data() -> TestResult {
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    let name = server.create_database("survivor", Default::default())?;
    server
        .client(&name)?
        // The server commits asynchronously (tuned for tests): ask for a
        // synchronous commit so the row is in the WAL before the crash.
        .batch_execute(
            "SET synchronous_commit = on; CREATE TABLE t (v int); INSERT INTO t VALUES (42)",
        )?;
    let pid = server.embedded_pid().ok_or("embedded")?;
    kill9(pid)?;
    eventually(
        "the killed server to be gone",
        Duration::from_secs(30),
        || Ok(!alive(pid)),
    )?;

    let run = Server::embedded_dir(&cluster.options.embedded)?.join("run");
    let stale_sockets = std::fs::read_dir(&run)?.count();
    assert!(
        stale_sockets > 0,
        "the killed server left its socket behind"
    );

    let recovered = cluster.connect()?;
    let new_pid = recovered.embedded_pid().ok_or("embedded")?;
    // Only the new server's socket and its lock file remain.
    assert_eq!(std::fs::read_dir(&run)?.count(), 2);
    assert_ne!(new_pid, pid);
    let value: i32 = recovered
        .client(&name)?
        .query_one("SELECT v FROM t", &[])?
        .get(0);
    assert_eq!(value, 42);
    // The old handle re-attaches to the new server on its next use: its
    // idle pooled connections are stale. The new server runs on the old
    // port when that is free again; a killed server's port can still be
    // held for a moment (its backends outlive it), and then the restart
    // takes another port, which the re-attached handle follows.
    let after = server.create_database("after_restart", Default::default())?;
    server.drop_database(&after)?;
    assert_eq!(select_one(&server)?, 1);
    assert_eq!(server.embedded_pid(), Some(new_pid));
    assert_eq!(server.url("x"), recovered.url("x"));
    recovered.drop_database(&name)?;
    Ok(())
}

#[test]
fn idle_server_stops_itself() -> TestResult {
    let mut cluster = PrivateCluster::new()?;
    cluster.options.embedded.idle_timeout = Duration::from_millis(600);
    let server = cluster.connect()?;
    let pid = server.embedded_pid().ok_or("embedded")?;
    let url = server.url("app");
    // While a client is connected it keeps running.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(pid));
    assert_eq!(select_one(&server)?, 1);
    drop(server);
    eventually("the idle server to stop", Duration::from_secs(60), || {
        Ok(!alive(pid))
    })?;
    // The next caller starts it again, on the same URL.
    let again = cluster.connect()?;
    assert_eq!(again.url("app"), url);
    assert_eq!(select_one(&again)?, 1);
    Ok(())
}

#[test]
fn concurrent_starters_start_exactly_one_server() -> TestResult {
    if let Some(args) = child::args() {
        let options = PrivateCluster::options_for(std::path::Path::new(&args[0]));
        let server = Server::connect(options)?;
        emit("PID", server.embedded_pid().ok_or("embedded")?);
        emit(
            "URL_PORT",
            server.url("").rsplit(':').next().unwrap_or_default(),
        );
        return Ok(());
    }
    let cluster = PrivateCluster::new()?;
    let dir = cluster.path().display().to_string();
    let children = (0..4)
        .map(|_| {
            child::spawn(
                "server::concurrent_starters_start_exactly_one_server",
                std::slice::from_ref(&dir),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut pids = Vec::new();
    for c in children {
        let out = child::wait_success(c)?;
        pids.extend(values(&out, "PID").into_iter().map(str::to_owned));
    }
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|p| p == &pids[0]), "{pids:?}");
    let server = cluster.connect()?;
    assert_eq!(
        server.embedded_pid().map(|p| p.to_string()),
        Some(pids[0].clone())
    );
    Ok(())
}

#[test]
fn runs_as_an_unprivileged_user_too() -> TestResult {
    if child::args().is_some() {
        // Default options: the cluster goes to $XDG_CACHE_HOME/isolane/pg.
        let options = ServerOptions::default();
        emit("DIR", Server::embedded_dir(&options.embedded)?.display());
        let server = Server::connect(options.clone())?;
        let template = server.template(b"unprivileged", |client| {
            client.batch_execute("CREATE TABLE t (v int)")?;
            Ok(())
        })?;
        let db = template.test_database()?;
        db.client()?.batch_execute("INSERT INTO t VALUES (1)")?;
        drop(db);
        drop(server);
        assert!(Server::stop_embedded(&options.embedded)?);
        emit("DONE", nix_uid());
        return Ok(());
    }
    let cluster = PrivateCluster::new()?;
    let mut command = child::command(
        "server::runs_as_an_unprivileged_user_too",
        &[cluster.path().display().to_string()],
    )?;
    let xdg = cluster.path().join("xdg-cache");
    std::fs::create_dir(&xdg)?;
    command
        .env("XDG_CACHE_HOME", &xdg)
        .env_remove("PG_ISOLATE_CACHE_DIR");
    let is_root = nix_uid() == 0;
    if is_root {
        // As root, the same code path runs as `nobody` in a child: the
        // server then runs as the caller itself, in a cache dir it owns.
        let status = std::process::Command::new("chown")
            .args(["-R", "nobody", &cluster.path().display().to_string()])
            .status()?;
        assert!(status.success());
        command.uid(65534).gid(65534).env("HOME", cluster.path());
    }
    let out = child::wait_success(
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?,
    )?;
    let uid = values(&out, "DONE");
    assert_eq!(uid.len(), 1, "{out}");
    let dir = values(&out, "DIR");
    assert_eq!(dir.len(), 1);
    let dir = std::path::Path::new(dir[0]);
    assert!(
        dir.starts_with(xdg.join("isolane").join("pg")),
        "{}",
        dir.display()
    );
    assert!(dir.join("pristine").join("PG_VERSION").is_file());
    if is_root {
        assert_eq!(uid[0], "65534");
    }
    Ok(())
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
