//! `#[pg_isolate::test]` with every argument type, sync and async: each
//! test gets its own database, migrated (the crate's `migrations/`), with
//! the fixture's two users, and alone in it (it adds one and finds three).

use pg_isolate::TestDatabase;

const COUNT: &str = "SELECT count(*) FROM users";
const ADD: &str = "INSERT INTO users (email) VALUES ('me@example.com')";

#[pg_isolate::test(fixtures("users.sql"))]
fn sync_test_database(db: TestDatabase) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = db.client()?;
    client.batch_execute(ADD)?;
    let count: i64 = client.query_one(COUNT, &[])?.get(0);
    assert_eq!(count, 3);
    Ok(())
}

#[pg_isolate::test(fixtures("users.sql"))]
fn sync_url(url: String) -> Result<(), postgres::Error> {
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.batch_execute(ADD)?;
    let count: i64 = client.query_one(COUNT, &[])?.get(0);
    assert_eq!(count, 3);
    Ok(())
}

#[pg_isolate::test(fixtures("users.sql"))]
fn sync_postgres_client(mut client: postgres::Client) {
    client.batch_execute(ADD).expect("insert");
    let count: i64 = client.query_one(COUNT, &[]).expect("count").get(0);
    assert_eq!(count, 3);
}

#[pg_isolate::test(fixtures("users.sql"))]
fn sync_diesel(mut conn: diesel::PgConnection) -> diesel::QueryResult<()> {
    use diesel::RunQueryDsl;
    use diesel::sql_types::BigInt;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    diesel::sql_query(ADD).execute(&mut conn)?;
    let row: Count =
        diesel::sql_query("SELECT count(*) AS count FROM users").get_result(&mut conn)?;
    assert_eq!(row.count, 3);
    Ok(())
}

#[pg_isolate::test(migrations = "migrations")]
fn sync_without_fixtures_and_two_arguments(db: TestDatabase, url: String) {
    assert_eq!(db.url(), url);
    let mut client = db.client().expect("connect");
    let count: i64 = client.query_one(COUNT, &[]).expect("count").get(0);
    assert_eq!(count, 0);
    let posts: i64 = client
        .query_one("SELECT count(*) FROM posts", &[])
        .expect("the second migration ran")
        .get(0);
    assert_eq!(posts, 0);
}

#[pg_isolate::test(fixtures("users.sql"))]
async fn async_test_database(db: TestDatabase) -> Result<(), pg_isolate::Error> {
    let client = db.client_async().await?;
    client.batch_execute(ADD).await.expect("insert");
    let count: i64 = client.query_one(COUNT, &[]).await.expect("count").get(0);
    assert_eq!(count, 3);
    // Dropping the handle inside the runtime is fine too.
    drop(db);
    Ok(())
}

#[pg_isolate::test(fixtures("users.sql"))]
async fn async_url(url: String) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(ADD).execute(&mut conn).await?;
    let count: i64 = sqlx::query_scalar(COUNT).fetch_one(&mut conn).await?;
    assert_eq!(count, 3);
    Ok(())
}

#[pg_isolate::test(fixtures("users.sql"))]
async fn async_tokio_postgres(client: tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(ADD).await?;
    let count: i64 = client.query_one(COUNT, &[]).await?.get(0);
    assert_eq!(count, 3);
    Ok(())
}

#[pg_isolate::test(fixtures("users.sql"))]
async fn async_sqlx_pool(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(ADD).execute(&pool).await?;
    let count: i64 = sqlx::query_scalar(COUNT).fetch_one(&pool).await?;
    assert_eq!(count, 3);
    Ok(())
}

#[pg_isolate::test(fixtures("users.sql"))]
async fn async_sqlx_connection(mut conn: sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(ADD).execute(&mut conn).await?;
    let count: i64 = sqlx::query_scalar(COUNT).fetch_one(&mut conn).await?;
    assert_eq!(count, 3);
    Ok(())
}

/// A test that panics inside its runtime with its database in hand fails
/// alone: the binary goes on (the other tests here still run and pass).
#[pg_isolate::test(fixtures("users.sql"))]
#[should_panic(expected = "fails on purpose")]
async fn async_panic_fails_only_this_test(pool: sqlx::PgPool) {
    sqlx::query(ADD).execute(&pool).await.expect("insert");
    panic!("fails on purpose");
}

#[pg_isolate::test]
#[should_panic(expected = "fails on purpose")]
fn sync_panic_fails_only_this_test(db: TestDatabase) {
    let _name = db.name();
    panic!("fails on purpose");
}

/// The child role of [`a_failed_test_keeps_its_database_when_asked`]: fails
/// by returning `Err` when run as the child, passes otherwise.
#[pg_isolate::test(fixtures("users.sql"))]
fn failing_child(db: TestDatabase) -> Result<(), String> {
    if std::env::var_os("RUST_TESTS_CHILD").is_none() {
        return Ok(());
    }
    let _name = db.name();
    Err("this child test fails on purpose".to_owned())
}

#[pg_isolate::test(fixtures("users.sql"))]
#[should_panic(expected = "fails on purpose")]
async fn failing_async_child(_pool: sqlx::PgPool) {
    if std::env::var_os("RUST_TESTS_CHILD").is_some() {
        panic!("this child test fails on purpose");
    }
    panic!("this test fails on purpose (so does its child role)");
}

/// `PG_ISOLATE_KEEP_FAILED=1`: a test that returns `Err` or panics keeps
/// its database and says which; without it, the database goes.
#[test]
fn a_failed_test_keeps_its_database_when_asked() -> Result<(), Box<dyn std::error::Error>> {
    let server = pg_isolate::Server::shared()?;
    for test in ["failing_child", "failing_async_child"] {
        for keep in [true, false] {
            let mut command = std::process::Command::new(std::env::current_exe()?);
            command
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env("RUST_TESTS_CHILD", "1")
                .env_remove("PG_ISOLATE_KEEP_FAILED");
            if keep {
                command.env("PG_ISOLATE_KEEP_FAILED", "1");
            }
            let output = command.output()?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let kept: Vec<&str> = stderr
                .lines()
                .filter_map(|line| line.split("kept database ").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .collect();
            if test == "failing_child" {
                assert!(!output.status.success(), "{stderr}");
            }
            if keep {
                assert_eq!(kept.len(), 1, "{stderr}");
                // Still there after a gc, though its process is gone.
                let report = server.gc(&pg_isolate::GcOptions::default())?;
                assert!(
                    report
                        .kept
                        .iter()
                        .any(|e| e.name == kept[0] && e.reason == pg_isolate::GcReason::KeptFailed),
                    "{report:?}"
                );
                assert!(server.database_exists(kept[0])?);
                server.drop_database(kept[0])?;
            } else {
                assert!(kept.is_empty(), "{stderr}");
            }
        }
    }
    Ok(())
}
