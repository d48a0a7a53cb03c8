//! A private, migrated PostgreSQL database per test, the way a test suite
//! would use pg-isolate: each thread below plays one test.
//!
//! The migrations run once, into a template database (shared by every
//! process on the host and rebuilt only when the migration files change);
//! each test then gets a clone of it, which is dropped with its handle.
//! Nothing needs to be set up first: with no `PG_ISOLATE_URL`, pg-isolate
//! starts (or attaches to) the host's embedded server.
//!
//! Run with `cargo run -p examples --example per_test_database`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::{Arc, Barrier};
use std::thread;

use pg_isolate::{Format, Migrations, Server, Template, TestDatabase, redact_url};

/// How many "tests" run at once.
const TESTS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Once per process: the server handle and the migrated template.
    let server = Server::shared()?;
    let migrations = Migrations::load(examples::migrations_dir(), Format::Diesel)?;
    let template = migrations.template(&server)?;
    println!(
        "server {} (PostgreSQL {}), template {} from {} migrations",
        server.redacted_url(),
        server.major_version(),
        template.name(),
        migrations.len()
    );

    // Each thread is one test; they all run at once.
    let inserted = Arc::new(Barrier::new(TESTS));
    let tests: Vec<_> = (0..TESTS)
        .map(|n| {
            let template = template.clone();
            let inserted = Arc::clone(&inserted);
            thread::spawn(move || one_test(n, &template, &inserted))
        })
        .collect();

    let mut failures = 0;
    for (n, test) in tests.into_iter().enumerate() {
        match test.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("test {n} failed: {error}");
                failures += 1;
            }
            Err(_) => {
                eprintln!("test {n} panicked");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return Err(format!("{failures} of {TESTS} tests failed").into());
    }
    println!("all {TESTS} tests passed, each in its own database");
    Ok(())
}

/// What a test's thread returns: errors must be `Send` to cross threads.
type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The body of one test.
fn one_test(n: usize, template: &Template, inserted: &Barrier) -> TestResult {
    let setup = write_row(n, template);
    // Wait until every test has written its row (or failed to), so the
    // check below would see the other tests' rows if databases were shared.
    inserted.wait();
    let (db, mut client, email) = setup?;

    // This database holds this test's row and nothing else.
    let emails: Vec<String> = client
        .query("SELECT email FROM users ORDER BY id", &[])?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if emails != [email.as_str()] {
        return Err(format!("{}: expected only {email}, found {emails:?}", db.name()).into());
    }
    let active: i64 = client
        .query_one("SELECT count(*) FROM active_users", &[])?
        .get(0);
    println!("test {n}: sees only its own row {email} ({active} active user)");

    // `db` is dropped here, and the database with it.
    Ok(())
}

/// Creates the test's database and writes one user into it.
fn write_row(
    n: usize,
    template: &Template,
) -> TestResult<(TestDatabase, postgres::Client, String)> {
    // One line per test: a fresh clone of the migrated template.
    let db = template.test_database()?;

    // The hand-off to any client library is the URL. With sqlx this would
    // be `sqlx::PgPool::connect(&db.url()).await?`, with diesel
    // `PgConnection::establish(&db.url())?`; here it is the `postgres`
    // crate. The URL holds the password: only ever print it redacted.
    let url = db.url();
    println!("test {n}: database {} at {}", db.name(), redact_url(&url));
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;

    // The schema and seed data are there already.
    let email = format!("user{n}@example.com");
    let role = if n == 0 { "admin" } else { "member" };
    client.execute(
        "INSERT INTO users (email, name) VALUES ($1, $2)",
        &[&email, &format!("User {n}")],
    )?;
    client.execute(
        "INSERT INTO user_roles (user_id, role_id)
         SELECT u.id, r.id FROM users u, roles r WHERE u.email = $1 AND r.name = $2",
        &[&email, &role],
    )?;
    Ok((db, client, email))
}
