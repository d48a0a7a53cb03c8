//! The warm pool: hands out ready clones, refills, never hands one out twice.

use std::collections::HashSet;
use std::time::Duration;

use pg_isolate::{PoolOptions, Server, Template};
use test_support::{TestResult, child};

use crate::{emit, eventually, shared, unique_key, values};

fn template(server: &Server, key: &[u8]) -> TestResult<Template> {
    Ok(server.template(key, |client| {
        client.batch_execute("CREATE TABLE things (v int); INSERT INTO things VALUES (1)")?;
        Ok(())
    })?)
}

#[test]
fn pool_hands_out_ready_clones_and_refills() -> TestResult {
    let server = shared()?;
    let template = template(&server, &unique_key("pool"))?;
    let pool = template.pool(PoolOptions {
        size: 3,
        ..PoolOptions::default()
    })?;
    assert_eq!(
        pool.wait_filled(Duration::from_secs(60))?,
        3,
        "{:?}",
        pool.last_error()
    );
    let ready_before: HashSet<String> = pool_clones(&server, template.key())?;
    let db = pool.test_database()?;
    // A clone claimed through its marker keeps its name.
    assert!(ready_before.contains(db.name()), "{}", db.name());
    assert_eq!(pool.ready()?, 2, "one of three was claimed");
    let count: i64 = db
        .client()?
        .query_one("SELECT count(*) FROM things", &[])?
        .get(0);
    assert_eq!(count, 1);
    // Once half of the pool is taken, it is refilled to its size.
    let second = pool.test_database()?;
    eventually("the pool to refill", Duration::from_secs(60), || {
        Ok(pool.ready()? >= 3)
    })?;
    assert!(pool.ready()? <= 3, "never beyond its size");
    let name = db.name().to_owned();
    drop(db);
    drop(second);
    assert!(!server.database_exists(&name)?);
    let after: HashSet<String> = pool_clones(&server, template.key())?;
    drop(pool);
    server.drop_database(template.name())?;
    let report = server.gc(&pg_isolate::GcOptions::default())?;
    assert!(
        after.iter().all(
            |clone| report.was_dropped(clone) || !server.database_exists(clone).unwrap_or(true)
        ),
        "orphaned clones are collected: {report:?}"
    );
    Ok(())
}

fn pool_clones(server: &Server, key: &str) -> TestResult<HashSet<String>> {
    Ok(server
        .list_databases()?
        .into_iter()
        .filter(|i| i.name.starts_with(&format!("testdb_p_{key}_")))
        .map(|i| i.name)
        .collect())
}

#[test]
fn concurrent_claims_never_share_a_clone() -> TestResult {
    if let Some(args) = child::args() {
        let server = shared()?;
        let template = template(&server, args[0].as_bytes())?;
        let pool = template.pool(PoolOptions {
            size: 4,
            ..PoolOptions::default()
        })?;
        pool.wait_filled(Duration::from_secs(60))?;
        let names = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| -> TestResult<Vec<pg_isolate::TestDatabase>> {
                        (0..3).map(|_| Ok(pool.test_database()?)).collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| "thread panicked")?)
                .collect::<TestResult<Vec<_>>>()
        })?;
        for db in names.iter().flatten() {
            emit("DB", db.name());
        }
        return Ok(());
    }
    let key = String::from_utf8(unique_key("claims"))?;
    let children = (0..3)
        .map(|_| {
            child::spawn(
                "pool::concurrent_claims_never_share_a_clone",
                std::slice::from_ref(&key),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut names = Vec::new();
    for c in children {
        names.extend(
            values(&child::wait_success(c)?, "DB")
                .into_iter()
                .map(str::to_owned),
        );
    }
    assert_eq!(names.len(), 27);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 27);
    let server = shared()?;
    let template = template(&server, key.as_bytes())?;
    server.drop_database(template.name())?;
    Ok(())
}

#[test]
fn disk_bound_limits_the_pool_and_handout_still_works() -> TestResult {
    let server = shared()?;
    let template = template(&server, &unique_key("bounded"))?;
    let pool = template.pool(PoolOptions {
        size: 4,
        max_bytes: 1,
    })?;
    assert_eq!(pool.wait_filled(Duration::from_secs(5))?, 0);
    let db = pool.test_database()?;
    let count: i64 = db
        .client()?
        .query_one("SELECT count(*) FROM things", &[])?
        .get(0);
    assert_eq!(count, 1);
    assert_eq!(pool.ready()?, 0);
    drop(db);
    drop(pool);
    server.drop_database(template.name())?;
    Ok(())
}

#[test]
fn only_pool_clones_are_ever_claimed() -> TestResult {
    let server = shared()?;
    let template = template(&server, &unique_key("decoys"))?;
    let clone_prefix = format!("p_{}_", template.key());
    // Databases whose names match the pool's clone pattern but that are no
    // pool clones: a named database of ours, and hand-made ones whose
    // comments look like pool records to a text search.
    let named = server.create_database(
        &format!("{clone_prefix}named"),
        pg_isolate::CreateOptions::default(),
    )?;
    let hand_made = [
        ("bare", None),
        ("text", Some(r#"hand-made, "kind":"pool""#)),
        ("tool", Some(r#"{"tool":"other-tool","kind":"pool"}"#)),
        (
            "nested",
            Some(r#"{"tool":"pg-isolate","kind":"named","x":{"kind":"pool"}}"#),
        ),
        // Past the quick text filter, stopped by the JSON check.
        (
            "broken",
            Some(r#"{"tool":"pg-isolate","kind":"pool", broken"#),
        ),
        (
            "dup",
            Some(r#"{"tool":"pg-isolate","kind":"pool","kind":"named"}"#),
        ),
    ]
    .map(|(suffix, comment)| (format!("testdb_{clone_prefix}{suffix}"), comment));
    let mut admin = server.admin_client()?;
    for (name, comment) in &hand_made {
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        if let Some(comment) = comment {
            admin.batch_execute(&format!(
                "COMMENT ON DATABASE \"{name}\" IS '{}'",
                comment.replace('\'', "''")
            ))?;
        }
    }
    let mut decoys: Vec<String> = hand_made.iter().map(|(n, _)| n.clone()).collect();
    decoys.push(named.clone());

    let pool = template.pool(PoolOptions {
        size: 0,
        ..PoolOptions::default()
    })?;
    // The two that pass the text filter are counted (a count is only an
    // estimate), but never claimed.
    assert!(pool.ready()? <= 2);
    for _ in 0..3 {
        let db = pool.test_database()?;
        let count: i64 = db
            .client()?
            .query_one("SELECT count(*) FROM things", &[])?
            .get(0);
        assert_eq!(count, 1, "a real clone of the template");
        for decoy in &decoys {
            assert!(server.database_exists(decoy)?, "{decoy} was claimed");
        }
    }
    drop(pool);
    server.drop_database(&named)?;
    for (name, _) in &hand_made {
        admin.batch_execute(&format!("DROP DATABASE \"{name}\""))?;
    }
    server.drop_database(template.name())?;
    Ok(())
}

#[test]
fn a_refill_outlives_the_process_that_claimed() -> TestResult {
    if let Some(args) = child::args() {
        let server = shared()?;
        let template = template(&server, args[0].as_bytes())?;
        let pool = template.pool(PoolOptions {
            size: 3,
            ..PoolOptions::default()
        })?;
        // Claims and exits at once, as a test process under nextest does.
        for _ in 0..3 {
            let db = pool.test_database()?;
            emit("DB", db.name());
        }
        emit("PID", std::process::id());
        return Ok(());
    }
    let key = String::from_utf8(unique_key("outlives"))?;
    let out = child::wait_success(child::spawn(
        "pool::a_refill_outlives_the_process_that_claimed",
        std::slice::from_ref(&key),
    )?)?;
    let pid: u32 = values(&out, "PID")
        .first()
        .ok_or("the child's pid")?
        .parse()?;
    let server = shared()?;
    let template = template(&server, key.as_bytes())?;
    eventually(
        "the pool to be refilled with nobody of pg-isolate's running",
        Duration::from_secs(60),
        || Ok(pool_clones(&server, template.key())?.len() >= 3),
    )?;
    // The clones were made by a process other than the child.
    for clone in pool_clones(&server, template.key())? {
        let owner = server
            .list_databases()?
            .into_iter()
            .find(|i| i.name == clone)
            .and_then(|i| i.owner)
            .ok_or("a pool clone has its owner record")?;
        assert_ne!(owner.pid, pid, "{clone} made by the exited child");
    }
    for name in values(&out, "DB") {
        assert!(!server.database_exists(name)?, "{name} was dropped");
    }
    eventually("the refill to end", Duration::from_secs(60), || {
        Ok(!refill_running(&server, template.key())?)
    })?;
    server.drop_database(template.name())?;
    server.gc(&pg_isolate::GcOptions::default())?;
    Ok(())
}

/// Whether a refill's `psql` is connected to the server for the pool of
/// `key` (it holds the pool's advisory lock).
fn refill_running(server: &Server, key: &str) -> TestResult<bool> {
    let key = u64::from_str_radix(key, 16)?;
    let (c1, c2) = ((key >> 32) as u32, key as u32);
    let mut admin = server.admin_client()?;
    Ok(admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND classid::text = $1 AND objid::text = $2 AND objsubid = 2)",
            &[&c1.to_string(), &c2.to_string()],
        )?
        .get(0))
}

#[test]
fn demand_grows_the_pool_to_the_last_burst_of_claims() -> TestResult {
    let server = shared()?;
    let template = template(&server, &unique_key("demand"))?;
    let pool = template.pool(PoolOptions {
        size: 2,
        ..PoolOptions::default()
    })?;
    assert_eq!(pool.wait_filled(Duration::from_secs(60))?, 2);
    // A burst of six claims (a test run of six tests) ...
    let claimed: Vec<_> = (0..6)
        .map(|_| pool.test_database())
        .collect::<Result<_, _>>()?;
    drop(claimed);
    // ... and the pool holds six for the next run (and half of that again
    // as headroom), not its size of two.
    assert_eq!(
        pool.wait_filled(Duration::from_secs(120))?,
        9,
        "{:?}",
        pool.last_error()
    );
    eventually("the refill to end", Duration::from_secs(60), || {
        Ok(!refill_running(&server, template.key())?)
    })?;
    assert_eq!(pool.ready()?, 9, "never beyond the demand");
    drop(pool);
    server.drop_database(template.name())?;
    server.gc(&pg_isolate::GcOptions::default())?;
    Ok(())
}

/// Drops `template`; gc then drops its pool's clones, every one.
fn drop_template_and_clones(server: &Server, template: &Template) -> TestResult {
    server.drop_database(template.name())?;
    server.gc(&pg_isolate::GcOptions::default())?;
    assert!(pool_clones(server, template.key())?.is_empty());
    Ok(())
}

/// Processes sent SIGKILL when this is dropped.
struct KilledOnDrop(Vec<i32>);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The birth name and the `psql` pid of a refill of `template`'s pool,
/// caught while the server runs its `CREATE DATABASE`.
fn refill_creating(server: &Server, template: &Template) -> TestResult<(String, i32)> {
    let mut admin = server.admin_client()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let rows = admin.query(
            "SELECT a.query FROM pg_stat_activity a \
             WHERE a.application_name = 'psql' AND a.state = 'active' \
               AND a.query LIKE 'CREATE DATABASE \"testdb\\_.new.%' AND a.query LIKE $1",
            &[&format!("%TEMPLATE \"{}\"%", template.name())],
        )?;
        if let Some(row) = rows.first() {
            let query: String = row.get(0);
            // The birth name names the psql process: `.new.<place>.<pid hex>.`
            let birth = query.split('"').nth(1).ok_or("a birth name")?.to_owned();
            let pid_hex = birth.split('.').nth(3).ok_or("a pid in the birth name")?;
            let pid = i32::from_str_radix(pid_hex, 16)?;
            return Ok((birth, pid));
        }
    }
    Err("no refill CREATE DATABASE seen".into())
}

#[test]
fn a_claim_never_waits_for_a_refill_queued_behind_another() -> TestResult {
    let server = shared()?;
    let template = template(&server, &unique_key("queued"))?;
    // A pool big enough that a refill's script (two rounds per clone)
    // outgrows what a pipe's default 64 KiB and psql's read buffer hold.
    let pool = template.pool(PoolOptions {
        size: 100,
        ..PoolOptions::default()
    })?;
    // The first refill stopped while it holds the pool's lock: the refill
    // the claim below starts queues behind it, its psql waiting for the
    // lock without reading its script.
    let (_, pid) = refill_creating(&server, &template)?;
    // Killed however the test ends (a stopped psql holds the lock for good).
    let mut refills = KilledOnDrop(vec![pid]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )?;
    let claimed = (|| -> TestResult {
        let db = pool.test_database()?;
        // Its drop joins the claim's bookkeeping, which started that
        // refill: it must not wait for the stopped one.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(db);
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "the claim waited for the queued refill")?;
        Ok(())
    })();
    // The queued refill is the pool's last started; both are killed, and
    // gc drops what they were creating.
    let last = std::fs::read_to_string(
        Server::embedded_dir(&crate::suite_options()?.embedded)?
            .join("pools")
            .join(template.key())
            .join("refill"),
    )?;
    let queued: i32 = last
        .split_whitespace()
        .next()
        .ok_or("the last refill")?
        .parse()?;
    refills.0.push(queued);
    drop(refills);
    claimed?;
    assert_ne!(queued, pid, "the claim started a refill of its own");
    eventually("the refills to end", Duration::from_secs(120), || {
        Ok(!refill_running(&server, template.key())?)
    })?;
    drop(pool);
    drop_template_and_clones(&server, &template)?;
    Ok(())
}

#[test]
fn a_refill_killed_while_the_server_creates_a_clone_leaves_nothing_gc_cannot_drop() -> TestResult {
    let server = shared()?;
    let template = template(&server, &unique_key("killrefill"))?;
    let pool = template.pool(PoolOptions {
        size: 30,
        ..PoolOptions::default()
    })?;
    // The refill's psql, caught while its CREATE DATABASE runs.
    let (birth, pid) = refill_creating(&server, &template)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    // The server finishes the CREATE DATABASE it was running.
    eventually(
        "the killed refill's backend to end",
        Duration::from_secs(60),
        || Ok(!refill_running(&server, template.key())?),
    )?;
    drop(pool);
    let report = server.gc(&pg_isolate::GcOptions::default())?;
    assert!(
        report.was_dropped(&birth) || !server.database_exists(&birth)?,
        "{birth} is dropped: {report:?}"
    );
    drop_template_and_clones(&server, &template)?;
    Ok(())
}

#[test]
fn a_clone_claimed_by_a_killed_process_goes_with_gc_and_a_stale_marker_is_skipped() -> TestResult {
    use std::io::BufRead as _;
    if let Some(args) = child::args() {
        let server = shared()?;
        let template = template(&server, args[0].as_bytes())?;
        let pool = template.pool(PoolOptions {
            size: 2,
            ..PoolOptions::default()
        })?;
        pool.wait_filled(Duration::from_secs(60))?;
        let db = pool.test_database()?;
        emit("DB", db.name());
        // Killed here, holding the database.
        std::thread::sleep(Duration::from_secs(600));
        return Ok(());
    }
    let key = String::from_utf8(unique_key("killedholder"))?;
    let mut holder = child::spawn(
        "pool::a_clone_claimed_by_a_killed_process_goes_with_gc_and_a_stale_marker_is_skipped",
        std::slice::from_ref(&key),
    )?;
    let stdout = holder.stdout.take().ok_or("the child's stdout")?;
    let mut claimed = None;
    for line in std::io::BufReader::new(stdout).lines() {
        if let Some(name) = line?.strip_prefix("DB ") {
            claimed = Some(name.to_owned());
            break;
        }
    }
    let claimed = claimed.ok_or("the child claimed no clone")?;
    let server = shared()?;
    let report = server.gc(&pg_isolate::GcOptions::default())?;
    assert!(!report.was_dropped(&claimed), "kept while its holder runs");
    holder.kill()?;
    holder.wait()?;
    let report = server.gc(&pg_isolate::GcOptions::default())?;
    assert!(report.was_dropped(&claimed), "{report:?}");
    assert!(!server.database_exists(&claimed)?);

    // A ready clone dropped behind the pool's back: its marker is skipped.
    let template = template(&server, key.as_bytes())?;
    let pool = template.pool(PoolOptions {
        size: 2,
        ..PoolOptions::default()
    })?;
    pool.wait_filled(Duration::from_secs(60))?;
    eventually("the refill to end", Duration::from_secs(60), || {
        Ok(!refill_running(&server, template.key())?)
    })?;
    let ready: Vec<String> = pool_clones(&server, template.key())?.into_iter().collect();
    let gone = ready.first().ok_or("a ready clone")?.clone();
    server
        .admin_client()?
        .batch_execute(&format!("DROP DATABASE \"{gone}\""))?;
    for _ in 0..3 {
        let db = pool.test_database()?;
        assert_ne!(db.name(), gone);
        let count: i64 = db
            .client()?
            .query_one("SELECT count(*) FROM things", &[])?
            .get(0);
        assert_eq!(count, 1);
    }
    drop(pool);
    eventually("the refill to end", Duration::from_secs(60), || {
        Ok(!refill_running(&server, template.key())?)
    })?;
    drop_template_and_clones(&server, &template)?;
    Ok(())
}
