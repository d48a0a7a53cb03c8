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
    if child::args().is_some() {
        let process_wide = Server::shared()?;
        assert_eq!(Server::shared()?.url("x"), process_wide.url("x"));
        assert_eq!(
            Server::shared()?.embedded_pid(),
            process_wide.embedded_pid()
        );
        emit("URL", process_wide.url("x"));
        return Ok(());
    }
    let first = shared()?;
    let second = shared()?;
    assert_eq!(first.url("postgres"), second.url("postgres"));
    assert_eq!(first.embedded_pid(), second.embedded_pid());
    assert!(first.embedded_pid().is_some_and(alive));
    assert!(first.major_version() >= 10);
    assert_eq!(select_one(&second)?, 1);
    // `Server::shared()` (default options, so the suite's cluster is given
    // by PG_ISOLATE_CACHE_DIR) is one handle per process, on that server.
    let mut command = child::command("server::processes_attach_to_one_shared_server", &[])?;
    let dir = suite_dir()?;
    command.env("PG_ISOLATE_CACHE_DIR", &dir);
    let stdout = child::wait_success(
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?,
    )?;
    assert_eq!(values(&stdout, "URL"), [first.url("x")], "{stdout}");
    Ok(())
}

fn suite_dir() -> TestResult<PathBuf> {
    crate::suite_options()?
        .embedded
        .cache_dir
        .ok_or_else(|| "the suite names its cluster".into())
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

    // Stopped, the port stays the cluster's: held as a port-alloc lease, so
    // no allocator on the host (another cluster, a worktree) hands it out.
    let port = port_of(&url)?;
    let others = tempfile::tempdir()?;
    let other = port_alloc::PortAllocator::open(port_alloc::Options {
        state_dir: Some(others.path().to_owned()),
        range: Some(port..=port),
        ..port_alloc::Options::default()
    })?;
    let refused = other.lease("someone else", &["PORT"], port_alloc::Holder::Manual);
    assert!(
        matches!(refused, Err(port_alloc::Error::Exhausted { .. })),
        "{refused:?}"
    );

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
    let recovery = restarted
        .recovery()
        .ok_or("the stale pid file is reported")?;
    assert_eq!(recovery.stale_pid, Some(other_pid));
    assert!(recovery.pid_reused, "{recovery:?}");
    assert!(recovery.to_string().contains("left alone"), "{recovery}");
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
    let recovery = restarted
        .recovery()
        .ok_or("the stale pid file is reported")?;
    assert_eq!(recovery.stale_pid, Some(sleeper.id()));
    assert!(recovery.pid_reused, "{recovery:?}");
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
fn a_named_database_keeps_the_idle_server_up() -> TestResult {
    let mut cluster = PrivateCluster::new()?;
    cluster.options.embedded.idle_timeout = Duration::from_millis(600);
    let server = cluster.connect()?;
    let pid = server.embedded_pid().ok_or("embedded")?;
    let named = server.create_database("worktree_db", pg_isolate::CreateOptions::default())?;
    let url = server.url(&named);
    drop(server);
    // No client for many idle periods: a worktree's URL must keep working.
    std::thread::sleep(Duration::from_millis(3000));
    assert!(alive(pid), "stopped while a named database exists");
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    assert_eq!(client.query_one("SELECT 1", &[])?.get::<_, i32>(0), 1);
    drop(client);
    // Once it is gone, the server stops when idle again.
    cluster.connect()?.drop_database(&named)?;
    eventually("the idle server to stop", Duration::from_secs(60), || {
        Ok(!alive(pid))
    })?;
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

/// The pid in a cluster's `data/postmaster.pid`.
fn postmaster_pid(data: &std::path::Path) -> TestResult<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid"))?;
    Ok(text
        .lines()
        .next()
        .ok_or("an empty postmaster.pid")?
        .trim()
        .parse()?)
}

/// The unix socket files (`.s.PGSQL.<port>` and its `.lock`) in `run`.
fn socket_files(run: &std::path::Path) -> TestResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(run)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `error` says the connection was cut off by the server's death,
/// in one of the forms the race between client and dying backend gives:
/// closed, reset by the peer, or PostgreSQL's own "terminating connection
/// due to unexpected postmaster exit" from a backend that noticed first.
fn cut_off(error: &postgres::Error) -> bool {
    let reset = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        });
    error.is_closed()
        || reset
        || error.as_db_error().is_some_and(|db| {
            db.code().code() == "57P01" && db.message().contains("unexpected postmaster exit")
        })
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `f` with this thread's tracing events formatted into a buffer, as
/// an application's subscriber would print them; returns that text too.
fn capture_events<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buffer = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = buffer
        .0
        .lock()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    (result, text)
}

#[test]
fn sigkilled_server_under_an_open_test_database_is_recovered_and_says_so() -> TestResult {
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    assert_eq!(server.recovery(), None, "a clean start recovers nothing");
    let db = server.test_database()?;
    let mut client = db.client()?;
    client.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")?;
    let backend: i32 = client.query_one("SELECT pg_backend_pid()", &[])?.get(0);
    let backend = u32::try_from(backend)?;

    let dir = Server::embedded_dir(&cluster.options.embedded)?;
    let data = dir.join("data");
    let pid = postmaster_pid(&data)?;
    assert_eq!(server.embedded_pid(), Some(pid));
    kill9(pid)?;
    let killed = std::time::Instant::now();
    // Its backends notice the postmaster's death and exit on their own.
    eventually(
        "the killed server and its backend to be gone",
        Duration::from_secs(30),
        || Ok(!alive(pid) && !alive(backend)),
    )?;
    // SIGKILL leaves the pid file and the socket with its lock file.
    assert_eq!(postmaster_pid(&data)?, pid);
    let stale_sockets = socket_files(&dir.join("run"))?;
    assert_eq!(stale_sockets.len(), 2, "{stale_sockets:?}");

    // The connection in use fails (it does not hang) and says why.
    let error = client
        .query_one("SELECT v FROM t", &[])
        .expect_err("its server is gone");
    assert!(cut_off(&error), "{error:?}");

    // The next use, from a new handle as a new test process would do it,
    // restarts the server and says so: in the API and as a WARN event.
    let (recovered, events) = capture_events(|| cluster.connect());
    let recovered = recovered?;
    let recovery = recovered
        .recovery()
        .ok_or("the restart after a crash must be reported")?;
    let new_pid = recovered.embedded_pid().ok_or("embedded")?;
    assert_eq!(recovery.stale_pid, Some(pid));
    assert!(!recovery.pid_reused);
    assert_eq!(recovery.new_pid, new_pid);
    assert_ne!(new_pid, pid);
    assert!(alive(new_pid));
    assert_eq!(recovery.data_dir, data);
    for stale in stale_sockets.iter().chain([&data.join("postmaster.pid")]) {
        assert!(recovery.removed.contains(stale), "{recovery:?}");
    }
    let message = recovery.to_string();
    assert!(message.contains("had not shut down cleanly"), "{message}");
    assert!(message.contains(&format!("pid {pid} is gone")), "{message}");
    let warning = events
        .lines()
        .find(|line| line.contains("recovered the embedded server"))
        .ok_or_else(|| format!("no recovery event among:\n{events}"))?;
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&format!("stale_pid={pid}")), "{warning}");
    assert!(!warning.contains(&password_of(&recovered.url("x"))));
    emit("RECOVERY_MS", recovery.elapsed.as_millis());
    emit("KILL_TO_READY_MS", killed.elapsed().as_millis());

    // A new test database on the restarted server works.
    let fresh = recovered.test_database()?;
    assert_eq!(
        fresh.client()?.query_one("SELECT 1", &[])?.get::<_, i32>(0),
        1
    );
    // The old handle re-attaches to the new server; it restarted nothing,
    // so it reports nothing. Its test database is dropped as usual.
    let name = db.name().to_owned();
    drop(client);
    drop(db);
    assert_eq!(server.embedded_pid(), Some(new_pid));
    assert_eq!(server.recovery(), None);
    assert!(
        !recovered.list_databases()?.iter().any(|d| d.name == name),
        "the killed server's test database was left behind"
    );
    // A restart that found nothing stale reports nothing.
    drop((fresh, recovered, server));
    assert!(Server::stop_embedded(&cluster.options.embedded)?);
    assert_eq!(cluster.connect()?.recovery(), None);
    Ok(())
}

#[test]
fn server_killed_mid_query_fails_the_query_and_the_next_use_recovers() -> TestResult {
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    let db = server.test_database()?;
    let mut client = db.client()?;
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let result = client.query_one("SELECT pg_sleep(600)", &[]).map(|_| ());
        let _ = sender.send(result);
    });
    {
        let mut watcher = db.client()?;
        eventually("the query to be running", Duration::from_secs(30), || {
            let row = watcher.query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE state = 'active' AND query = 'SELECT pg_sleep(600)'",
                &[],
            )?;
            Ok(row.get::<_, i64>(0) == 1)
        })?;
    }
    let pid = server.embedded_pid().ok_or("embedded")?;
    kill9(pid)?;
    // A generous bound only so that a hang fails the test instead of
    // stalling the suite; the query normally fails at once.
    let outcome = receiver
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| "the in-flight query still hangs after its server was killed")?;
    worker.join().map_err(|_| "the query thread panicked")?;
    let error = outcome.expect_err("a query cut off by a dead server must fail");
    assert!(cut_off(&error), "{error:?}");
    emit("MID_QUERY_ERROR", &error);

    // The same handle's next use (a long-lived handle, like the one
    // Server::shared() gives a test binary) restarts it and says so.
    let next = server.test_database()?;
    assert_eq!(
        next.client()?.query_one("SELECT 1", &[])?.get::<_, i32>(0),
        1
    );
    let recovery = server
        .recovery()
        .ok_or("the handle that restarted the server must report it")?;
    assert_eq!(recovery.stale_pid, Some(pid));
    assert_eq!(server.embedded_pid(), Some(recovery.new_pid));
    let name = db.name().to_owned();
    drop(db);
    assert!(!server.list_databases()?.iter().any(|d| d.name == name));
    Ok(())
}
