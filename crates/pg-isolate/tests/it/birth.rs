//! Owned from birth: whatever is killed when (the creating client exactly
//! while the server runs `CREATE DATABASE`, the server itself, a test binary
//! holding a pool in a `static`), every database pg-isolate made is
//! recognisable as its own and gone after `gc`; a foreign database under the
//! same prefix is never touched.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use pg_isolate::{CreateOptions, GcOptions, GcReason, Pool, PoolOptions, Server};
use test_support::{TestResult, child};

use crate::{PrivateCluster, emit, eventually, kill9, unique_key, values};

/// A foreign database under the prefix (made by hand, no owner record).
const FOREIGN: &str = "testdb_hand_made";

fn names(server: &Server) -> TestResult<BTreeSet<String>> {
    Ok(server
        .list_databases()?
        .into_iter()
        .map(|db| db.name)
        .collect())
}

/// Databases under the prefix that carry no owner record.
fn unowned(server: &Server) -> TestResult<Vec<String>> {
    Ok(server
        .list_databases()?
        .into_iter()
        .filter(|db| db.name.starts_with(server.prefix()) && db.owner.is_none())
        .filter(|db| db.name != FOREIGN)
        .map(|db| db.name)
        .collect())
}

fn template(server: &Server, key: &[u8]) -> TestResult<pg_isolate::Template> {
    Ok(server.template(key, |client| {
        client.batch_execute("CREATE TABLE things (v int); INSERT INTO things VALUES (1)")?;
        Ok(())
    })?)
}

/// A private cluster with a foreign database under the prefix.
fn cluster_with_foreign() -> TestResult<(PrivateCluster, Server)> {
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    server
        .admin_client()?
        .batch_execute(&format!("CREATE DATABASE \"{FOREIGN}\""))?;
    Ok((cluster, server))
}

/// Holds the lock every `CREATE DATABASE ... TEMPLATE <template>` waits
/// on (a `COMMENT ON DATABASE` of the template in an open transaction
/// conflicts with the share lock a clone takes on its source), so a
/// create can be caught exactly while the server runs it.
struct CloneBlocker {
    client: postgres::Client,
}

impl CloneBlocker {
    fn hold(server: &Server, template: &str) -> TestResult<Self> {
        let mut client = server.admin_client()?;
        let comment: Option<String> = client
            .query_one(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
                &[&template],
            )?
            .get(0);
        let comment = comment.ok_or("the template has no owner record")?;
        client.batch_execute(&format!(
            "BEGIN; COMMENT ON DATABASE \"{template}\" IS '{}'",
            comment.replace('\'', "''")
        ))?;
        Ok(Self { client })
    }

    fn release(mut self) -> TestResult {
        self.client.batch_execute("ROLLBACK")?;
        Ok(())
    }
}

/// The server pid of a `CREATE DATABASE` waiting for a lock, once there is one.
fn waiting_create(server: &Server) -> TestResult<i32> {
    let mut admin = server.admin_client()?;
    let mut found = None;
    eventually(
        "a CREATE DATABASE waiting for the template's lock",
        Duration::from_secs(60),
        || {
            found = admin
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND query LIKE 'CREATE DATABASE%'",
                    &[],
                )?
                .first()
                .map(|row| row.get(0));
            Ok(found.is_some())
        },
    )?;
    found.ok_or_else(|| "no waiting create".into())
}

/// Waits until server backend `pid` has finished (its statement done).
fn backend_gone(server: &Server, pid: i32) -> TestResult {
    let mut admin = server.admin_client()?;
    eventually(
        "the killed client's backend to finish",
        Duration::from_secs(60),
        || {
            Ok(admin
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])?
                .is_none())
        },
    )
}

/// Waits until no other client's statement runs on the server.
fn no_other_activity(server: &Server) -> TestResult {
    let mut admin = server.admin_client()?;
    eventually(
        "the statements of gone clients to finish",
        Duration::from_secs(60),
        || {
            Ok(admin
                .query(
                    "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'client backend' \
                     AND state <> 'idle' AND pid <> pg_backend_pid()",
                    &[],
                )?
                .is_empty())
        },
    )
}

fn child_server(dir: &str) -> TestResult<Server> {
    Ok(Server::connect(PrivateCluster::options_for(Path::new(
        dir,
    )))?)
}

#[test]
fn a_client_killed_during_create_database_leaves_nothing_after_gc() -> TestResult {
    if let Some(args) = child::args() {
        let server = child_server(&args[0])?;
        let options = CreateOptions {
            kind: if args[2] == "test" {
                pg_isolate::DatabaseKind::Test
            } else {
                pg_isolate::DatabaseKind::Named
            },
            ..CreateOptions::from_template(&args[1])
        };
        server.create_database(&format!("killed_{}", args[2]), options)?;
        return Err("the create should have been killed while it ran".into());
    }
    let (cluster, server) = cluster_with_foreign()?;
    let template = template(&server, &unique_key("birth_kill"))?;
    let before = names(&server)?;
    for kind in ["named", "test", "named"] {
        let blocker = CloneBlocker::hold(&server, template.name())?;
        let creator = child::Guarded::spawn(
            "birth::a_client_killed_during_create_database_leaves_nothing_after_gc",
            &[
                cluster.path().display().to_string(),
                template.name().to_owned(),
                kind.to_owned(),
            ],
        )?;
        let backend = waiting_create(&server)?;
        kill9(creator.id())?;
        creator.wait()?;
        blocker.release()?;
        // The server finishes the CREATE its client no longer waits for.
        backend_gone(&server, backend)?;
    }
    let half_created = server
        .list_databases()?
        .into_iter()
        .filter(|db| db.interrupted_create() == Some(true))
        .count();
    // The kill hit the moment every time: the database exists, but only
    // under the name that says whose it is.
    assert_eq!(half_created, 3, "every kill left a half-created database");
    let report = server.gc(&GcOptions::default())?;
    assert_eq!(
        report
            .dropped
            .iter()
            .filter(|e| e.reason == GcReason::HalfCreated)
            .count(),
        3,
        "{report:?}"
    );
    assert!(report.was_kept(FOREIGN), "{report:?}");
    assert_eq!(names(&server)?, before, "nothing left, nothing else gone");
    // The name the killed create wanted is free.
    server.create_database(
        "killed_named",
        CreateOptions::from_template(template.name()),
    )?;
    Ok(())
}

#[test]
fn a_server_killed_during_create_database_fails_nothing_for_good() -> TestResult {
    if let Some(args) = child::args() {
        let server = child_server(&args[0])?;
        let name =
            server.create_database("during_server_kill", CreateOptions::from_template(&args[1]))?;
        emit("CREATED", name);
        return Ok(());
    }
    let (cluster, server) = cluster_with_foreign()?;
    let template = template(&server, &unique_key("birth_server"))?;
    let blocker = CloneBlocker::hold(&server, template.name())?;
    let creator = child::Guarded::spawn(
        "birth::a_server_killed_during_create_database_fails_nothing_for_good",
        &[
            cluster.path().display().to_string(),
            template.name().to_owned(),
        ],
    )?;
    waiting_create(&server)?;
    let pid = server.embedded_pid().ok_or("an embedded server")?;
    kill9(pid)?;
    drop(blocker);
    // The client's create is retried on the restarted server and succeeds.
    let stdout = creator.wait_success()?;
    let created = values(&stdout, "CREATED");
    assert_eq!(created, ["testdb_during_server_kill"], "{stdout}");
    let server = cluster.connect()?;
    let info = server
        .list_databases()?
        .into_iter()
        .find(|db| db.name == created[0])
        .ok_or("the created database is missing")?;
    assert!(info.owner.is_some(), "{info:?}");
    assert_eq!(unowned(&server)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn server_kills_at_random_moments_leave_no_unowned_database() -> TestResult {
    if let Some(args) = child::args() {
        let server = child_server(&args[0])?;
        let template = template(&server, args[1].as_bytes())?;
        for i in 0..40 {
            match server.create_database(
                &format!("random_{i}"),
                CreateOptions::from_template(template.name()),
            ) {
                Ok(name) => emit("CREATED", name),
                Err(error) => emit("FAILED", error),
            }
        }
        return Ok(());
    }
    let (cluster, server) = cluster_with_foreign()?;
    let key = String::from_utf8(unique_key("birth_random"))?;
    template(&server, key.as_bytes())?;
    let before = names(&server)?;
    let creator = child::Guarded::spawn(
        "birth::server_kills_at_random_moments_leave_no_unowned_database",
        &[cluster.path().display().to_string(), key],
    )?;
    let mut kills = 0;
    for delay in [150, 400, 250, 600] {
        std::thread::sleep(Duration::from_millis(delay));
        let Some(pid) = Server::connect(cluster.options.clone())?.embedded_pid() else {
            continue;
        };
        kill9(pid)?;
        kills += 1;
    }
    let stdout = creator.wait_success()?;
    assert_eq!(kills, 4);
    let server = cluster.connect()?;
    let created = values(&stdout, "CREATED");
    for name in &created {
        assert!(server.database_exists(name)?, "{name} reported created");
    }
    // The child is gone: what it left under a birth name goes now.
    no_other_activity(&server)?;
    server.gc(&GcOptions::default())?;
    assert_eq!(unowned(&server)?, Vec::<String>::new(), "{stdout}");
    // Everything new carries its owner record (a create whose reply the
    // kill cut off may have happened all the same), and nothing is gone.
    let after = server.list_databases()?;
    for db in &after {
        assert!(
            before.contains(&db.name) || db.owner.is_some(),
            "{db:?}\n{stdout}"
        );
    }
    let after: BTreeSet<String> = after.into_iter().map(|db| db.name).collect();
    assert!(after.is_superset(&before), "{stdout}");
    Ok(())
}

static POOL: OnceLock<Pool> = OnceLock::new();

#[test]
fn a_test_binary_with_a_static_pool_killed_or_exiting_mid_refill_leaves_nothing_after_gc()
-> TestResult {
    if let Some(args) = child::args() {
        let server = child_server(&args[0])?;
        let template = template(&server, args[1].as_bytes())?;
        let pool = POOL.get_or_init(|| {
            template
                .pool(PoolOptions {
                    size: 6,
                    ..PoolOptions::default()
                })
                .expect("the pool starts")
        });
        // Use it the way a test would; the refill runs meanwhile (in a
        // psql of its own, which outlives this process).
        let db = pool.test_database()?;
        emit("USED", db.name());
        if args[2] == "exit" {
            std::thread::sleep(Duration::from_millis(30));
            // Statics are not dropped, nor is the database.
            std::process::exit(0);
        }
        nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL)?;
        return Err("SIGKILL should have killed this process".into());
    }
    let (cluster, server) = cluster_with_foreign()?;
    let key = String::from_utf8(unique_key("birth_pool"))?;
    let template = template(&server, key.as_bytes())?;
    let before = names(&server)?;
    let test = "birth::a_test_binary_with_a_static_pool_killed_or_exiting_mid_refill_leaves_nothing_after_gc";
    let dir = cluster.path().display().to_string();
    let mut killed = 0;
    let mut used = Vec::new();
    for mode in ["kill", "exit", "kill", "exit"] {
        let output =
            child::command(test, &[dir.clone(), key.clone(), mode.to_owned()])?.output()?;
        if output.status.signal() == Some(9) {
            killed += 1;
        } else {
            assert!(
                mode == "exit" && output.status.success(),
                "{mode}: {output:?}"
            );
        }
        used.extend(
            values(&String::from_utf8_lossy(&output.stdout), "USED")
                .into_iter()
                .map(str::to_owned),
        );
    }
    assert_eq!(killed, 2);
    assert_eq!(used.len(), 4, "each child claimed a clone");
    // The refills (each holding its pool's two-key advisory lock) and the
    // server's statements of clients that are gone end by themselves.
    let mut admin = server.admin_client()?;
    eventually("the refills to end", Duration::from_secs(120), || {
        Ok(admin
            .query(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2",
                &[],
            )?
            .is_empty())
    })?;
    no_other_activity(&server)?;
    let report = server.gc(&GcOptions::default())?;
    for name in &used {
        assert!(!server.database_exists(name)?, "{name}: {report:?}");
    }
    assert_eq!(unowned(&server)?, Vec::<String>::new());
    // What remains is the template's pool (ready clones, with records);
    // with the template gone, gc takes them too.
    server.drop_database(template.name())?;
    let report = server.gc(&GcOptions::default())?;
    let mut expected = before.clone();
    expected.remove(template.name());
    assert_eq!(names(&server)?, expected, "{report:?}");
    Ok(())
}

#[test]
fn concurrent_creates_of_one_name_fail_cleanly() -> TestResult {
    let cluster = PrivateCluster::new()?;
    let server = cluster.connect()?;
    for round in 0..5 {
        let name = format!("race_{round}");
        let results: Vec<Result<String, pg_isolate::Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let server = server.clone();
                    let name = name.clone();
                    scope.spawn(move || server.create_database(&name, CreateOptions::default()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a create thread does not panic"))
                .collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for result in &results {
            if let Err(error) = result {
                assert!(
                    matches!(error, pg_isolate::Error::DatabaseExists { .. }),
                    "{error:?}"
                );
            }
        }
    }
    assert_eq!(unowned(&server)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn clients_killed_at_random_moments_leave_nothing_after_gc() -> TestResult {
    if let Some(args) = child::args() {
        let server = child_server(&args[0])?;
        let template = template(&server, args[1].as_bytes())?;
        std::fs::write(&args[2], "creating")?;
        for i in 0.. {
            let db = template.test_database()?;
            let options = CreateOptions {
                kind: pg_isolate::DatabaseKind::Test,
                ..CreateOptions::from_template(template.name())
            };
            server.create_database(&format!("random_kill_{}_{i}", std::process::id()), options)?;
            drop(db);
        }
        return Err("the creating loop should have been killed".into());
    }
    let (cluster, server) = cluster_with_foreign()?;
    let key = String::from_utf8(unique_key("birth_random_client"))?;
    template(&server, key.as_bytes())?;
    let before = names(&server)?;
    let scratch = tempfile::tempdir()?;
    let kills = 8;
    for i in 0..kills {
        let marker = scratch.path().join(format!("creating-{i}"));
        let creator = child::Guarded::spawn(
            "birth::clients_killed_at_random_moments_leave_nothing_after_gc",
            &[
                cluster.path().display().to_string(),
                key.clone(),
                marker.display().to_string(),
            ],
        )?;
        crate::wait_for_file(&marker)?;
        // Spread over a few creates, at no moment chosen by the code.
        std::thread::sleep(Duration::from_millis(20 + (i * 53) % 170));
        kill9(creator.id())?;
        creator.wait()?;
    }
    no_other_activity(&server)?;
    server.gc(&GcOptions::default())?;
    assert_eq!(unowned(&server)?, Vec::<String>::new());
    assert_eq!(names(&server)?, before, "nothing left, nothing else gone");
    Ok(())
}
