//! Rollback verification and the catalog snapshot behind it, on the
//! hand-written fixtures of both formats.

use pg_isolate::{
    Change, Format, Migrations, RollbackEntry, RollbackOptions, RollbackReport, RollbackStatus,
    RollbackStep, SchemaSnapshot, Target, verify_rollbacks,
};
use serde_json::{Value, json};
use test_support::TestResult;

use crate::migrate_format::fixture;
use crate::migrate_run::empty_database;

fn options(from: Option<&str>, to: Option<&str>, strict: bool, reapply: bool) -> RollbackOptions {
    RollbackOptions {
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        strict,
        reapply,
    }
}

fn has(
    entry: &RollbackEntry,
    kind: &str,
    object: &str,
    change: Change,
    field: Option<&str>,
) -> bool {
    entry.differences.iter().any(|d| {
        d.difference.kind == kind
            && d.difference.object == object
            && d.difference.change == change
            && d.difference.field.as_deref() == field
    })
}

fn statuses(report: &RollbackReport) -> Vec<(&str, RollbackStatus)> {
    report
        .migrations
        .iter()
        .map(|e| (e.name.as_str(), e.status))
        .collect()
}

/// The expectations shared by both formats' rollback fixtures.
fn check_fixture(report: &RollbackReport, underscore: bool) -> TestResult {
    let name = |n: &str| {
        if underscore {
            n.replace(' ', "_")
        } else {
            n.to_owned()
        }
    };
    let expected = [
        ("create users", RollbackStatus::Ok),
        ("leaves column", RollbackStatus::SchemaDiffers),
        ("readds status loosely", RollbackStatus::SchemaDiffers),
        ("loses index", RollbackStatus::SchemaDiffers),
        ("loses constraint", RollbackStatus::SchemaDiffers),
        ("reorders columns only", RollbackStatus::Ok),
        ("function whitespace", RollbackStatus::Ok),
        ("down fails", RollbackStatus::DownFailed),
        ("concurrent indexes", RollbackStatus::Ok),
        ("many kinds of objects", RollbackStatus::Ok),
    ];
    let expected: Vec<(String, RollbackStatus)> =
        expected.iter().map(|(n, s)| (name(n), *s)).collect();
    let got: Vec<(String, RollbackStatus)> = statuses(report)
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect();
    assert_eq!(got, expected, "{}", report.to_json());
    let m = &report.migrations;

    assert!(
        m[0].differences.is_empty() && m[0].notes.is_empty(),
        "{:?}",
        m[0]
    );

    assert!(
        has(
            &m[1],
            "column",
            "public.users.nickname",
            Change::Added,
            None
        ),
        "{:?}",
        m[1]
    );
    assert_eq!(m[1].differences.len(), 1, "{:?}", m[1].differences);

    let status = &m[2];
    assert!(has(
        status,
        "column",
        "public.users.status",
        Change::Changed,
        Some("not_null")
    ));
    assert!(has(
        status,
        "column",
        "public.users.status",
        Change::Changed,
        Some("default")
    ));
    let default = status
        .differences
        .iter()
        .find(|d| d.difference.field.as_deref() == Some("default"))
        .ok_or("a default difference")?;
    assert_eq!(default.step, RollbackStep::Down);
    assert_eq!(default.difference.before, json!("'active'::text"));
    assert_eq!(default.difference.after, Value::Null);
    assert_eq!(status.notes.len(), 1, "{:?}", status.notes);
    assert_eq!(status.notes[0].difference.change, Change::ColumnOrder);

    assert!(
        has(
            &m[3],
            "index",
            "public.users_created_at_idx",
            Change::Removed,
            None
        ),
        "{:?}",
        m[3]
    );
    assert_eq!(m[3].differences.len(), 1, "{:?}", m[3].differences);
    assert!(
        has(
            &m[4],
            "constraint",
            "public.users.users_email_check",
            Change::Removed,
            None
        ),
        "{:?}",
        m[4]
    );
    assert_eq!(m[4].differences.len(), 1, "{:?}", m[4].differences);

    assert_eq!(m[5].notes.len(), 1, "{:?}", m[5].notes);
    let note = &m[5].notes[0].difference;
    assert_eq!(
        (note.kind.as_str(), note.object.as_str()),
        ("table", "public.users")
    );
    assert_eq!(note.change, Change::ColumnOrder);
    assert!(m[5].differences.is_empty());

    assert_eq!(m[6].notes.len(), 1, "{:?}", m[6].notes);
    let note = &m[6].notes[0].difference;
    assert_eq!(
        (note.kind.as_str(), note.object.as_str(), note.change),
        (
            "function",
            "public.normalize_email(address text)",
            Change::BodyWhitespace
        )
    );

    let error = m[7].error.as_ref().ok_or("down_failed carries its error")?;
    assert_eq!(error.step, RollbackStep::Down);
    assert_eq!(error.failure.sqlstate.as_deref(), Some("42P01"));
    assert_eq!(
        (error.failure.line, error.failure.column),
        (Some(2), Some(1))
    );
    assert!(
        error.failure.file.to_string_lossy().contains("down"),
        "{}",
        error.failure.file.display()
    );

    for entry in [&m[8], &m[9]] {
        assert!(
            entry.differences.is_empty() && entry.notes.is_empty(),
            "{entry:?}"
        );
    }
    let summary = &report.summary;
    assert_eq!(
        (summary.checked, summary.ok, summary.failed, summary.notes),
        (10, 5, 5, 3)
    );
    assert!(!report.is_success());
    assert!(
        report
            .summary_line()
            .contains("10 checked, 5 ok, 5 failed, 3 notes")
    );
    Ok(())
}

#[test]
fn diesel_fixture_reports_every_kind_of_rollback_problem() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("diesel/rollback"), Format::Auto)?;
    let report = verify_rollbacks(&server, &m, &RollbackOptions::default())?;
    check_fixture(&report, false)?;
    assert_eq!(
        report.migrations[0].version, "2023-01-01-000001",
        "as written"
    );
    Ok(())
}

#[test]
fn sqlx_fixture_reports_every_kind_of_rollback_problem() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("sqlx/rollback"), Format::Auto)?;
    let report = verify_rollbacks(&server, &m, &RollbackOptions::default())?;
    check_fixture(&report, true)?;
    let versions: Vec<&str> = report
        .migrations
        .iter()
        .map(|e| e.version.as_str())
        .collect();
    assert_eq!(
        versions,
        ["0001", "2", "003", "4", "5", "6", "7", "8", "9", "10"]
    );
    Ok(())
}

#[test]
fn report_json_has_the_documented_shape() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("diesel/rollback"), Format::Auto)?;
    let report = verify_rollbacks(
        &server,
        &m,
        &options(Some("20230106000000"), Some("20230108000000"), false, false),
    )?;
    let value: Value = serde_json::from_str(&report.to_json())?;
    let top: Vec<&str> = value
        .as_object()
        .ok_or("object")?
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, ["migrations", "summary"]);
    let summary = &value["summary"];
    let mut keys: Vec<&str> = summary
        .as_object()
        .ok_or("object")?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["checked", "failed", "notes", "ok", "seconds"]);
    assert_eq!(summary["checked"], json!(3));
    assert_eq!(summary["ok"], json!(2));
    assert_eq!(summary["failed"], json!(1));
    assert_eq!(summary["notes"], json!(2));
    assert!(summary["seconds"].as_f64().is_some_and(|s| s > 0.0));
    let entries = value["migrations"].as_array().ok_or("array")?;
    for entry in entries {
        let mut keys: Vec<&str> = entry
            .as_object()
            .ok_or("object")?
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["differences", "error", "name", "notes", "status", "version"]
        );
    }
    assert_eq!(entries[0]["version"], json!("20230106000000"));
    assert_eq!(entries[0]["name"], json!("reorders columns only"));
    assert_eq!(entries[0]["status"], json!("ok"));
    assert_eq!(entries[0]["error"], Value::Null);
    assert_eq!(entries[0]["notes"][0]["change"], json!("column_order"));
    assert_eq!(entries[0]["notes"][0]["step"], json!("down"));
    assert_eq!(entries[1]["version"], json!("2023-01-07-000000"));
    assert_eq!(entries[2]["status"], json!("down_failed"));
    let error = &entries[2]["error"];
    assert_eq!(error["step"], json!("down"));
    assert_eq!(error["direction"], json!("down"));
    assert_eq!(error["sqlstate"], json!("42P01"));
    assert_eq!(error["line"], json!(2));
    assert_eq!(error["column"], json!(1));
    assert_eq!(error["statement"], json!(1));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("post"))
    );
    Ok(())
}

#[test]
fn strict_mode_turns_notes_into_failures() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("sqlx/rollback"), Format::Auto)?;
    let report = verify_rollbacks(&server, &m, &options(Some("6"), Some("7"), true, false))?;
    assert_eq!(
        statuses(&report),
        [
            ("reorders_columns_only", RollbackStatus::SchemaDiffers),
            ("function_whitespace", RollbackStatus::SchemaDiffers)
        ]
    );
    assert!(has(
        &report.migrations[0],
        "table",
        "public.users",
        Change::ColumnOrder,
        Some("columns")
    ));
    assert!(report.migrations.iter().all(|e| e.notes.is_empty()));
    assert_eq!(report.summary.notes, 0);
    Ok(())
}

#[test]
fn reapply_compares_the_second_up_with_the_first() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("diesel/rollback"), Format::Auto)?;
    let report = verify_rollbacks(
        &server,
        &m,
        &options(
            Some("2023-01-01-000001"),
            Some("20230102000000"),
            false,
            true,
        ),
    )?;
    assert_eq!(
        statuses(&report),
        [
            ("create users", RollbackStatus::Ok),
            ("leaves column", RollbackStatus::UpFailed)
        ]
    );
    // The column the down left behind makes the second up fail.
    let error = report.migrations[1].error.as_ref().ok_or("error")?;
    assert_eq!(error.step, RollbackStep::Reapply);
    assert_eq!(error.failure.sqlstate.as_deref(), Some("42701"));
    assert_eq!(error.failure.line, Some(1));
    // ... and the down's own difference is still reported.
    assert!(has(
        &report.migrations[1],
        "column",
        "public.users.nickname",
        Change::Added,
        None
    ));

    // Reapplying the non-transactional migration works on its clone.
    let report = verify_rollbacks(
        &server,
        &m,
        &options(
            Some("2023-01-09-000000"),
            Some("20230110000000"),
            false,
            true,
        ),
    )?;
    assert_eq!(
        statuses(&report),
        [
            ("concurrent indexes", RollbackStatus::Ok),
            ("many kinds of objects", RollbackStatus::Ok)
        ]
    );
    Ok(())
}

#[test]
fn verification_stops_at_a_failing_up() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("diesel/broken_up"), Format::Auto)?;
    let report = verify_rollbacks(&server, &m, &RollbackOptions::default())?;
    assert_eq!(
        statuses(&report),
        [
            ("people", RollbackStatus::Ok),
            ("add age", RollbackStatus::UpFailed)
        ]
    );
    let error = report.migrations[1].error.as_ref().ok_or("error")?;
    assert_eq!(error.step, RollbackStep::Up);
    assert_eq!(
        (error.failure.line, error.failure.sqlstate.as_deref()),
        (Some(5), Some("42703"))
    );
    assert_eq!((report.summary.checked, report.summary.failed), (2, 1));
    Ok(())
}

#[test]
fn ranges_are_validated() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("sqlx/rollback"), Format::Auto)?;
    let error = match verify_rollbacks(&server, &m, &options(Some("7"), Some("6"), false, false)) {
        Ok(report) => return Err(format!("expected an error, got {report}").into()),
        Err(error) => error,
    };
    assert!(
        error.to_string().contains("invalid rollback range"),
        "{error}"
    );
    let error = match verify_rollbacks(&server, &m, &options(Some("99"), None, false, false)) {
        Ok(report) => return Err(format!("expected an error, got {report}").into()),
        Err(error) => error,
    };
    assert!(
        error.to_string().contains("no migration with version 99"),
        "{error}"
    );
    Ok(())
}

#[test]
fn snapshot_reads_every_kind_of_object_from_the_catalogs() -> TestResult {
    let m = Migrations::load(fixture("sqlx/rollback"), Format::Auto)?;
    let db = empty_database()?;
    let mut client = db.client()?;
    let empty = SchemaSnapshot::capture(&mut client)?;
    m.migrate(&mut client, Target::Latest, |_| {})?;
    let snapshot = SchemaSnapshot::capture(&mut client)?;
    let get = |kind: &str, name: &str| {
        snapshot.get(kind, name).cloned().ok_or_else(|| {
            format!(
                "no {kind} {name} in {:?}",
                snapshot.objects(kind).map(|o| o.keys().collect::<Vec<_>>())
            )
        })
    };
    get("schema", "billing")?;
    assert_eq!(get("extension", "btree_gist")?["schema"], json!("public"));
    let table = get("table", "billing.subscriptions")?;
    assert_eq!(table["row_security"], json!(true));
    assert_eq!(table["columns"][0], json!("id"));
    assert_eq!(
        get("column", "billing.subscriptions.id")?["identity"],
        json!("a")
    );
    assert_eq!(
        get("column", "billing.subscriptions.total")?["generated"],
        json!("(seats * (price)::bigint)")
    );
    assert_eq!(
        get("column", "billing.subscriptions.plan")?["default"],
        json!("'free'::billing.plan")
    );
    assert_eq!(
        get("column", "billing.subscriptions.price")?["type"],
        json!("billing.cents")
    );
    let constraint_types: Vec<Value> = snapshot
        .objects("constraint")
        .ok_or("constraints")?
        .iter()
        .filter(|(name, _)| name.starts_with("billing.subscriptions."))
        .map(|(_, props)| props["type"].clone())
        .collect();
    for kind in ["p", "f", "c", "x"] {
        assert!(
            constraint_types.contains(&json!(kind)),
            "{kind} in {constraint_types:?}"
        );
    }
    let fk = get(
        "constraint",
        "billing.subscriptions.subscriptions_user_id_fkey",
    )?;
    assert_eq!(
        (fk["deferrable"].clone(), fk["deferred"].clone()),
        (json!(true), json!(true))
    );
    assert!(
        get("index", "public.users_email_key")?["definition"]
            .as_str()
            .is_some_and(|d| d.contains("UNIQUE"))
    );
    assert_eq!(
        get("sequence", "billing.invoice_numbers")?["increment"],
        json!(10)
    );
    assert!(get("view", "billing.active_subscriptions")?["definition"].is_string());
    get("materialized_view", "billing.seats_per_plan")?;
    assert_eq!(
        get("function", "billing.check_seats()")?["language"],
        json!("plpgsql")
    );
    assert!(
        get("procedure", "billing.close_all()")?["body"]
            .as_str()
            .is_some_and(|b| b.contains("UPDATE"))
    );
    assert!(
        get("trigger", "billing.subscriptions.subscriptions_check_seats")?["definition"]
            .as_str()
            .is_some_and(|d| d.contains("BEFORE INSERT OR UPDATE"))
    );
    assert_eq!(
        get("type", "billing.plan")?["labels"],
        json!(["free", "team", "enterprise"])
    );
    assert_eq!(get("type", "billing.cents")?["not_null"], json!(true));
    assert_eq!(get("type", "billing.money_pair")?["kind"], json!("c"));
    get("policy", "billing.subscriptions.own_subscriptions")?;
    // Extension members and the tracking table stay out.
    assert!(
        snapshot
            .get(
                "function",
                "public.gbt_int4_consistent(internal, integer, smallint, oid, internal)"
            )
            .is_none()
    );
    assert!(snapshot.get("table", "public._sqlx_migrations").is_none());

    // Down and up again: the same schema as before.
    m.migrate(&mut client, Target::Version("9".into()), |_| {})?;
    let at_nine = SchemaSnapshot::capture(&mut client)?;
    assert!(!empty.diff(&at_nine).is_empty());
    assert!(at_nine.get("schema", "billing").is_none());
    m.migrate(&mut client, Target::Latest, |_| {})?;
    assert!(
        snapshot
            .diff(&SchemaSnapshot::capture(&mut client)?)
            .is_empty()
    );
    m.migrate(&mut client, Target::Version("9".into()), |_| {})?;
    let diff = at_nine.diff(&SchemaSnapshot::capture(&mut client)?);
    assert!(diff.is_empty(), "{diff:?}");
    Ok(())
}

#[test]
fn irreversible_migrations_are_applied_but_not_checked() -> TestResult {
    let server = crate::shared()?;
    let m = Migrations::load(fixture("sqlx/basic"), Format::Auto)?;
    let report = verify_rollbacks(&server, &m, &RollbackOptions::default())?;
    let versions: Vec<(&str, RollbackStatus)> = report
        .migrations
        .iter()
        .map(|e| (e.version.as_str(), e.status))
        .collect();
    // 3 (seed data, no down) is applied on the way to 10 but not checked.
    assert_eq!(
        versions,
        [
            ("1", RollbackStatus::Ok),
            ("0002", RollbackStatus::Ok),
            ("10", RollbackStatus::Ok)
        ]
    );
    assert!(report.is_success(), "{}", report.to_json());
    Ok(())
}

#[test]
fn a_down_that_only_fails_in_the_ups_transaction_is_not_a_failure() -> TestResult {
    let dir = fixture("sqlx/enum_value");
    // What PostgreSQL says when the up and the down share a transaction:
    let db = empty_database()?;
    let mut client = db.client()?;
    client.batch_execute(&std::fs::read_to_string(dir.join("1_moods.up.sql"))?)?;
    client.batch_execute("BEGIN")?;
    client.batch_execute(&std::fs::read_to_string(dir.join("2_add_meh.up.sql"))?)?;
    let shared = client.batch_execute(&std::fs::read_to_string(dir.join("2_add_meh.down.sql"))?);
    let code = shared
        .err()
        .and_then(|e| e.code().map(|c| c.code().to_owned()));
    assert_eq!(code.as_deref(), Some("55P04"), "unsafe use of new value");
    client.batch_execute("ROLLBACK")?;

    // A real run gives each script its own transaction, and so does the
    // verification in the end.
    let server = crate::shared()?;
    let m = Migrations::load(&dir, Format::Auto)?;
    let report = verify_rollbacks(&server, &m, &options(None, None, false, true))?;
    assert_eq!(
        statuses(&report),
        [
            ("moods", RollbackStatus::Ok),
            ("add_meh", RollbackStatus::Ok)
        ],
        "{}",
        report.to_json()
    );
    Ok(())
}
