//! The databases test runners derive from a worktree's (`test_<name>`,
//! `test_<name>_<n>`, `test_<name>_gw<n>`) and a worktree database replaced
//! by hand: room for their names, listed, reported, dropped with the
//! worktree — and nothing else dropped. Made with the real `createdb` and
//! `dropdb`, driven by the `PG*` variables of `isolane run`.

use test_support::TestResult;

use crate::{json, ok, output, repo_with_config};

/// A long identifier: its database name must still leave room for
/// `test_` + name + `_gw99`.
const ID: &str = "test-derived-a-very-long-identifier-for-a-feature-branch-with-many-words";

fn run_sh(root: &std::path::Path, script: &str) -> TestResult<String> {
    ok(
        root,
        &["run", ID, "--no-services", "--", "sh", "-c", script],
    )
}

fn kinds(root: &std::path::Path) -> TestResult<Vec<(String, String, String)>> {
    Ok(json(root, &["db", "list"])?
        .as_array()
        .ok_or("not an array")?
        .iter()
        .filter(|r| r["worktree"] == ID || r["name"].as_str().is_some_and(|n| n.contains("decoy")))
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["kind"].as_str().unwrap_or_default().to_owned(),
                r["worktree"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

#[test]
fn derived_and_hand_replaced_databases_belong_to_their_worktree() -> TestResult {
    let repo = repo_with_config("")?;
    let root = repo.path();
    let (purpose, identifier) = ID.split_at("test-derived".len());
    let created = json(
        root,
        &[
            "create",
            "--purpose",
            purpose,
            "--identifier",
            &identifier[1..],
        ],
    )?;
    let name = created["database"]
        .as_str()
        .ok_or("no database")?
        .to_owned();
    assert!(
        format!("test_{name}_gw99").len() <= 63,
        "{name} leaves no room for the test runners' names"
    );

    // What Django / pytest-django would make, and two decoys that only
    // look alike.
    let derived = [
        format!("test_{name}"),
        format!("test_{name}_1"),
        format!("test_{name}_gw0"),
    ];
    let decoys = [format!("test_{name}_decoy"), format!("test_{name}decoy")];
    let decoys: Vec<String> = decoys
        .iter()
        .map(|d| d.chars().take(63).collect())
        .collect();
    for db in derived.iter().chain(&decoys) {
        run_sh(root, &format!("createdb {db}"))?;
    }
    let listed = kinds(root)?;
    for db in &derived {
        assert!(
            listed.contains(&(db.clone(), "derived".to_owned(), ID.to_owned())),
            "{db} not listed under {ID}: {listed:?}"
        );
    }
    let doctor = output(root, &["doctor"])?;
    let said = String::from_utf8_lossy(&doctor.stdout);
    for db in &derived {
        assert!(said.contains(&format!("derived-database {db}")), "{said}");
    }

    // Replaced by hand: reported, and `db reset` makes it the worktree's
    // again (a fresh database with isolane's record).
    run_sh(root, "dropdb \"$PGDATABASE\" && createdb \"$PGDATABASE\"")?;
    let doctor = output(root, &["doctor"])?;
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.contains(&format!("database-replaced-by-hand {name}")),
        "{said}"
    );
    assert!(!doctor.status.success());
    ok(root, &["db", "reset", ID])?;
    assert!(kinds(root)?.contains(&(name.clone(), "named".to_owned(), ID.to_owned())));
    ok(root, &["doctor"])?;

    // doctor --fix replaces it too, and drops the derived ones.
    run_sh(root, "dropdb \"$PGDATABASE\" && createdb \"$PGDATABASE\"")?;
    let fixed = ok(root, &["doctor", "--fix"])?;
    assert!(
        fixed.contains(&format!("fixed: database-replaced-by-hand {name}")),
        "{fixed}"
    );
    assert!(
        fixed.contains(&format!("fixed: derived-database test_{name}_gw0")),
        "{fixed}"
    );
    assert!(kinds(root)?.contains(&(name.clone(), "named".to_owned(), ID.to_owned())));

    // remove drops the worktree's database even when replaced by hand, and
    // every derived one, saying so; the decoys stay.
    for db in &derived {
        run_sh(root, &format!("createdb {db}"))?;
    }
    run_sh(root, "dropdb \"$PGDATABASE\" && createdb \"$PGDATABASE\"")?;
    let removed = output(root, &["remove", ID])?;
    let said = String::from_utf8_lossy(&removed.stderr);
    assert!(removed.status.success(), "{said}");
    for db in &derived {
        assert!(said.contains(&format!("dropped database {db}")), "{said}");
    }
    assert!(
        said.contains(&format!("dropped database {name} (replaced by hand)")),
        "{said}"
    );
    let server = pg_isolate::Server::connect(crate::server_options())?;
    let left: Vec<String> = server
        .list_databases()?
        .into_iter()
        .map(|d| d.name)
        .collect();
    for db in derived.iter().chain(std::iter::once(&name)) {
        assert!(!left.contains(db), "{db} left behind");
    }
    for decoy in &decoys {
        assert!(left.contains(decoy), "decoy {decoy} was dropped");
        let mut admin = server.admin_client()?;
        admin.batch_execute(&format!("DROP DATABASE \"{decoy}\""))?;
    }
    Ok(())
}
