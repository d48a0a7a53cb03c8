//! A worktree's database beyond what pg-isolate records: its name (short
//! enough for the names test runners derive from it), the databases Django
//! and pytest-django derive from it (`test_<name>`, `test_<name>_<n>`,
//! `test_<name>_gw<n>`), and the worktree's database when the user replaced
//! it by hand (`dropdb` + `createdb` of its exact name, which carries no
//! owner record).
//!
//! Neither kind carries pg-isolate's owner record, so pg-isolate will not
//! drop them; isolane does, for a worktree of its registry only, and only
//! under the exact names below.

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

use crate::commands::progress;
use crate::context::database_stem;

/// The longest worktree database name: `test_` + name + `_gw99` must fit
/// PostgreSQL's 63 bytes, or Django refuses to create its test database.
pub(crate) const MAX_NAME: usize = 63 - "test_".len() - "_gw99".len();

/// What the database of worktree `id` is called: the prefix and the id,
/// cut to [`MAX_NAME`] bytes with a deterministic hash suffix when longer.
pub(crate) fn name(server: &pg_isolate::Server, id: &str) -> Result<String> {
    let full = server.database_name(&database_stem(id))?;
    Ok(shorten(&full))
}

fn shorten(full: &str) -> String {
    if full.len() <= MAX_NAME {
        return full.to_owned();
    }
    let digest = Sha256::digest(full.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    // Names are ASCII (validated by pg-isolate), so any index is a boundary.
    format!("{}_{hash}", &full[..MAX_NAME - 13])
}

/// Whether `candidate` is a database a test runner derives from `base`:
/// `test_<base>`, `test_<base>_<digits>` or `test_<base>_gw<digits>`.
pub(crate) fn is_derived(base: &str, candidate: &str) -> bool {
    let Some(rest) = candidate
        .strip_prefix("test_")
        .and_then(|r| r.strip_prefix(base))
    else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(suffix) = rest.strip_prefix('_') else {
        return false;
    };
    let digits = suffix.strip_prefix("gw").unwrap_or(suffix);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The databases derived from `base` among `all` (every database on the
/// server), except any that could as well be derived from another existing
/// database (`test_<a>_1` of worktree database `<a>_1`): never drop a
/// database that might be someone else's.
pub(crate) fn derived<'a>(base: &str, all: &[&'a str]) -> Vec<&'a str> {
    all.iter()
        .copied()
        .filter(|candidate| is_derived(base, candidate))
        .filter(|candidate| {
            !all.iter()
                .any(|other| *other != base && is_derived(other, candidate))
        })
        .collect()
}

/// Drops database `name`, which carries no owner record (a derived one, or
/// the worktree's replaced by hand): the caller has established that it is
/// the worktree's. Other sessions on it are ended.
pub(crate) fn drop_unrecorded(server: &pg_isolate::Server, name: &str) -> Result<()> {
    let ident = format!("\"{}\"", name.replace('"', "\"\""));
    let sql = if server.major_version() >= 13 {
        format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
    } else {
        format!("DROP DATABASE IF EXISTS {ident}")
    };
    server
        .admin_client()?
        .batch_execute(&sql)
        .with_context(|| format!("cannot drop database {name}"))
}

/// Drops every database derived from worktree database `base`, saying
/// so; returns their names.
pub(crate) fn drop_derived(server: &pg_isolate::Server, base: &str) -> Result<Vec<String>> {
    let all = server.list_databases()?;
    let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    let mut dropped = Vec::new();
    for name in derived(base, &names) {
        drop_unrecorded(server, name)?;
        progress(format_args!(
            "dropped database {name} (derived from {base})"
        ));
        dropped.push(name.to_owned());
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_exactly_the_test_runners() {
        let base = "testdb_test_a";
        for yes in [
            "test_testdb_test_a",
            "test_testdb_test_a_1",
            "test_testdb_test_a_gw12",
        ] {
            assert!(is_derived(base, yes), "{yes}");
        }
        for no in [
            "testdb_test_a",
            "test_testdb_test_ab",
            "test_testdb_test_a_",
            "test_testdb_test_a_gw",
            "test_testdb_test_a_x1",
            "test_testdb_test_a_1_2",
            "xtest_testdb_test_a",
        ] {
            assert!(!is_derived(base, no), "{no}");
        }
    }

    #[test]
    fn long_names_leave_room_for_the_test_runners_suffixes() {
        let long = format!("testdb_{}", "x".repeat(80));
        let short = shorten(&long);
        assert_eq!(short.len(), MAX_NAME);
        assert_eq!(shorten(&long), short);
        assert!(format!("test_{short}_gw99").len() <= 63);
        assert_ne!(shorten(&format!("{long}y")), short);
        assert_eq!(shorten("testdb_short"), "testdb_short");
    }

    #[test]
    fn a_name_derivable_from_two_databases_is_nobodys() {
        let all = [
            "testdb_a",
            "testdb_a_1",
            "test_testdb_a",
            "test_testdb_a_1",
            "test_testdb_a_gw0",
        ];
        assert_eq!(
            derived("testdb_a", &all),
            ["test_testdb_a", "test_testdb_a_gw0"]
        );
    }
}
