//! A test database handed over to another process: kept while it runs,
//! reclaimed by gc once it is killed.

use pg_isolate::{GcOptions, PoolOptions};
use test_support::TestResult;

use crate::{shared, unique_key};

#[test]
fn a_handed_over_database_lives_as_long_as_its_holder() -> TestResult {
    let server = shared()?;
    let template = server.template(&unique_key("lease"), |client| {
        client.batch_execute("CREATE TABLE t (v int)")?;
        Ok(())
    })?;
    let mut holder = std::process::Command::new("sleep").arg("600").spawn()?;
    let identity = registry::ProcessIdentity::of_pid(holder.id()).ok_or("the holder is running")?;
    // From the pool, as a lease is handed out when one is kept warm.
    let pool = template.pool(PoolOptions {
        size: 1,
        ..PoolOptions::default()
    })?;
    pool.wait_filled(std::time::Duration::from_secs(60))?;
    let name = pool.test_database()?.hand_over(identity)?;
    drop(pool);
    let owner = server
        .list_databases()?
        .into_iter()
        .find(|d| d.name == name)
        .and_then(|d| d.owner)
        .ok_or("the leased database exists, with a record")?;
    assert_eq!(owner.pid, holder.id());
    let report = server.gc(&GcOptions::default())?;
    assert!(!report.was_dropped(&name));
    assert!(server.database_exists(&name)?);

    holder.kill()?;
    holder.wait()?;
    let report = server.gc(&GcOptions::default())?;
    assert!(report.was_dropped(&name), "{report:?}");
    assert!(!server.database_exists(&name)?);

    let gone = registry::ProcessIdentity {
        pid: holder.id(),
        start_time: identity.start_time,
    };
    let result = template.test_database()?.hand_over(gone);
    assert!(
        matches!(result, Err(pg_isolate::Error::HolderGone { .. })),
        "{result:?}"
    );
    server.drop_database(template.name())?;
    Ok(())
}
