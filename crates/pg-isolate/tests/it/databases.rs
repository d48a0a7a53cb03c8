//! Named databases, owner records, names, isolation.

use pg_isolate::{CreateOptions, DatabaseKind, Error, GcOptions};
use test_support::TestResult;

use crate::{shared, unique, unique_key};

#[test]
fn create_list_reset_and_drop_with_owner_record() -> TestResult {
    let server = shared()?;
    let short = unique("named");
    let options = CreateOptions {
        label: Some("worktree feature/x"),
        ..CreateOptions::default()
    };
    let name = server.create_database(&short, options)?;
    assert_eq!(name, format!("testdb_{short}"));
    assert!(server.database_exists(&short)?);
    assert!(server.database_exists(&name)?);

    let listed = server.list_databases()?;
    let info = listed.iter().find(|i| i.name == name).ok_or("listed")?;
    let owner = info.owner.as_ref().ok_or("owner record")?;
    assert_eq!(owner.kind, DatabaseKind::Named);
    assert_eq!(owner.label.as_deref(), Some("worktree feature/x"));
    assert_eq!(owner.pid, std::process::id());
    assert_eq!(owner.owner_gone(), Some(false));
    assert!(!info.is_template);

    let again = server.create_database(&short, CreateOptions::default());
    assert!(
        matches!(again, Err(Error::DatabaseExists { .. })),
        "{again:?}"
    );

    server
        .client(&name)?
        .batch_execute("CREATE TABLE leftovers (v int)")?;
    assert_eq!(server.reset_database(&short, None)?, name);
    let tables: i64 = server
        .client(&name)?
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'leftovers'",
            &[],
        )?
        .get(0);
    assert_eq!(tables, 0, "reset gives a fresh database");
    let info = server
        .list_databases()?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or("listed")?;
    assert_eq!(
        info.owner.and_then(|o| o.label).as_deref(),
        Some("worktree feature/x")
    );

    // Open connections do not stop a drop.
    let mut open = server.client(&name)?;
    open.batch_execute("SELECT 1")?;
    server.drop_database(&short)?;
    assert!(!server.database_exists(&short)?);
    let gone = server.drop_database(&short);
    assert!(
        matches!(gone, Err(Error::DatabaseNotFound { .. })),
        "{gone:?}"
    );
    Ok(())
}

#[test]
fn reset_clones_the_template_each_time() -> TestResult {
    let server = shared()?;
    let template = server.template(&unique_key("reset"), |client| {
        client.batch_execute("CREATE TABLE items (v int); INSERT INTO items VALUES (1), (2)")?;
        Ok(())
    })?;
    let short = unique("reset");
    let name = server.create_database(&short, CreateOptions::from_template(template.name()))?;
    server
        .client(&name)?
        .batch_execute("INSERT INTO items VALUES (3)")?;
    server.reset_database(&name, Some(template.name()))?;
    let count: i64 = server
        .client(&name)?
        .query_one("SELECT count(*) FROM items", &[])?
        .get(0);
    assert_eq!(count, 2);
    server.drop_database(&name)?;
    server.drop_database(template.name())?;
    Ok(())
}

#[test]
fn databases_without_our_record_are_never_dropped() -> TestResult {
    let server = shared()?;
    let foreign = format!("testdb_{}", unique("foreign"));
    let other_tool = format!("testdb_{}", unique("othertool"));
    let mut admin = server.admin_client()?;
    admin.batch_execute(&format!("CREATE DATABASE \"{foreign}\""))?;
    admin.batch_execute(&format!("CREATE DATABASE \"{other_tool}\""))?;
    admin.batch_execute(&format!(
        "COMMENT ON DATABASE \"{other_tool}\" IS '{{\"tool\":\"something-else\",\"kind\":\"test\"}}'"
    ))?;

    for name in [&foreign, &other_tool] {
        let refused = server.drop_database(name);
        assert!(
            matches!(refused, Err(Error::NotOwned { .. })),
            "{refused:?}"
        );
        let reset = server.reset_database(name, None);
        assert!(matches!(reset, Err(Error::NotOwned { .. })), "{reset:?}");
    }
    let report = server.gc(&GcOptions {
        max_age: None,
        ..GcOptions::default()
    })?;
    assert!(report.was_kept(&foreign), "{report:?}");
    assert!(report.was_kept(&other_tool), "{report:?}");
    let prefix = report_prefix(&foreign);
    let by_prefix = server.drop_databases_with_prefix(&prefix)?;
    assert!(by_prefix.dropped.is_empty(), "{by_prefix:?}");
    assert!(by_prefix.was_kept(&foreign));
    assert!(server.database_exists(&foreign)?);
    assert!(server.database_exists(&other_tool)?);

    admin.batch_execute(&format!("DROP DATABASE \"{foreign}\""))?;
    admin.batch_execute(&format!("DROP DATABASE \"{other_tool}\""))?;
    Ok(())
}

/// `testdb_foreign_<pid>_` : the prefix shared by this process's names.
fn report_prefix(name: &str) -> String {
    let cut = name.rfind('_').unwrap_or(name.len());
    name[..cut].to_owned()
}

#[test]
fn drop_by_prefix_drops_only_ours() -> TestResult {
    let server = shared()?;
    let stem = unique("byprefix");
    let ours = server.create_database(&format!("{stem}_a"), CreateOptions::default())?;
    let ours_too = server.create_database(&format!("{stem}_b"), CreateOptions::default())?;
    let foreign = format!("testdb_{stem}_c");
    server
        .admin_client()?
        .batch_execute(&format!("CREATE DATABASE \"{foreign}\""))?;
    let report = server.drop_databases_with_prefix(&format!("testdb_{stem}_"))?;
    assert!(
        report.was_dropped(&ours) && report.was_dropped(&ours_too),
        "{report:?}"
    );
    assert!(report.was_kept(&foreign));
    assert!(!server.database_exists(&ours)?);
    assert!(server.database_exists(&foreign)?);
    server
        .admin_client()?
        .batch_execute(&format!("DROP DATABASE \"{foreign}\""))?;
    Ok(())
}

#[test]
fn names_are_validated_and_long_ones_cut_with_a_hash() -> TestResult {
    let server = shared()?;
    for bad in [
        "",
        "a b",
        "x\"; DROP DATABASE postgres; --",
        "../etc",
        "-x",
        "naïve",
    ] {
        let result = server.create_database(bad, CreateOptions::default());
        assert!(
            matches!(result, Err(Error::InvalidName { .. })),
            "{bad:?}: {result:?}"
        );
    }
    let long = format!("{}_{}", unique("long"), "x".repeat(80));
    let name = server.create_database(&long, CreateOptions::default())?;
    assert_eq!(name.len(), 63);
    assert_eq!(server.database_name(&long)?, name);
    assert!(server.database_exists(&long)?);
    let longer = format!("{long}y");
    assert_ne!(server.database_name(&longer)?, name);
    server.drop_database(&long)?;
    assert!(!server.database_exists(&name)?);

    let dashed = server.create_database(
        &format!("{}-with-dash", unique("d")),
        CreateOptions::default(),
    )?;
    assert!(server.database_exists(&dashed)?);
    server.drop_database(&dashed)?;
    Ok(())
}

#[test]
fn writes_in_one_database_are_invisible_in_another() -> TestResult {
    let server = shared()?;
    let template = server.template(&unique_key("isolation"), |client| {
        client.batch_execute("CREATE TABLE notes (body text)")?;
        Ok(())
    })?;
    let a = template.test_database()?;
    let b = template.test_database()?;
    assert_ne!(a.name(), b.name());
    a.client()?
        .execute("INSERT INTO notes VALUES ('only in a')", &[])?;
    let in_a: i64 = a
        .client()?
        .query_one("SELECT count(*) FROM notes", &[])?
        .get(0);
    let in_b: i64 = b
        .client()?
        .query_one("SELECT count(*) FROM notes", &[])?
        .get(0);
    assert_eq!((in_a, in_b), (1, 0));
    // Nor does the template see it.
    let c = template.test_database()?;
    let in_c: i64 = c
        .client()?
        .query_one("SELECT count(*) FROM notes", &[])?
        .get(0);
    assert_eq!(in_c, 0);
    Ok(())
}

#[test]
fn racing_takeovers_never_drop_the_winners_fresh_database() -> TestResult {
    let server = shared()?;
    for round in 0..3 {
        let short = unique(&format!("takeover{round}"));
        let name = server.create_database(
            &short,
            CreateOptions {
                label: Some("gone owner"),
                ..CreateOptions::default()
            },
        )?;
        let seen = server
            .list_databases()?
            .into_iter()
            .find(|i| i.name == name)
            .ok_or("listed")?;
        // Both saw the old owner's database and take it over at once.
        let barrier = std::sync::Barrier::new(2);
        let outcomes: Vec<Result<bool, Error>> = std::thread::scope(|scope| {
            let racers: Vec<_> = ["first", "second"]
                .into_iter()
                .map(|label| {
                    let (server, seen, barrier, name) = (&server, &seen, &barrier, &name);
                    scope.spawn(move || {
                        barrier.wait();
                        server.drop_database_if(name, |now| now.owner == seen.owner)?;
                        let options = CreateOptions {
                            label: Some(label),
                            ..CreateOptions::default()
                        };
                        server.create_database(name, options).map(|_| true)
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|racer| racer.join().unwrap_or(Ok(false)))
                .collect()
        });
        let won = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
        assert_eq!(won, 1, "exactly one takes it over: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Err(Error::DatabaseExists { .. }))),
            "the other is told it exists: {outcomes:?}"
        );
        let label = server
            .list_databases()?
            .into_iter()
            .find(|i| i.name == name)
            .and_then(|i| i.owner)
            .and_then(|o| o.label)
            .ok_or("the winner's database is there")?;
        assert_ne!(label, "gone owner");
        // The loser's view is stale: the database it saw is gone, and the
        // winner's fresh one under the same name is left alone.
        assert!(!server.drop_database_if(&name, |now| now.owner == seen.owner)?);
        assert!(server.database_exists(&name)?);
        assert!(server.drop_database_if(&name, |_| true)?);
        assert!(!server.database_exists(&name)?);
    }
    Ok(())
}
