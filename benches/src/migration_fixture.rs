//! A generated migration history shaped like a real application's, for the
//! `pg` and migration benchmarks.
//!
//! [`generate`] writes diesel-format migrations
//! (`<version>_<name>/up.sql` and `down.sql`) in which every `down.sql` is
//! the exact inverse of its `up.sql`. They cycle through the steps an
//! application schema grows by, one "entity" per eight migrations: a table
//! (with a foreign key to the previous entity's table), indexes, an enum
//! column, a PL/pgSQL trigger function and its trigger, a view, seed data, a
//! column with a check constraint, and a link table with two foreign keys.

use std::fmt::Write as _;
use std::path::Path;

use crate::BenchResult;

/// Migration steps per entity.
const STEPS: usize = 8;

/// Writes `count` migrations into `dir` (created if needed).
pub fn generate(dir: &Path, count: usize) -> BenchResult<()> {
    std::fs::create_dir_all(dir)?;
    for index in 0..count {
        let (name, up, down) = migration(index / STEPS, index % STEPS);
        // diesel's `YYYY-MM-DD-HHMMSS` version: one second apart.
        let second = index + 1;
        let version = format!(
            "2024-01-01-{:02}{:02}{:02}",
            second / 3600,
            (second / 60) % 60,
            second % 60
        );
        let migration_dir = dir.join(format!("{version}_{name}"));
        std::fs::create_dir_all(&migration_dir)?;
        std::fs::write(migration_dir.join("up.sql"), up)?;
        std::fs::write(migration_dir.join("down.sql"), down)?;
    }
    Ok(())
}

/// The name, up and down SQL of step `step` of entity `k`.
fn migration(k: usize, step: usize) -> (String, String, String) {
    let t = format!("entity_{k}");
    let parent = k.checked_sub(1).map(|p| format!("entity_{p}"));
    match step {
        0 => {
            let mut up = format!(
                "-- The {t} table.\nCREATE TABLE {t} (\n    id bigserial PRIMARY KEY,\n    name text NOT NULL,\n"
            );
            if let Some(parent) = &parent {
                let _ = writeln!(
                    up,
                    "    parent_id bigint REFERENCES {parent} (id) ON DELETE SET NULL,"
                );
            }
            up.push_str(
                "    payload jsonb NOT NULL DEFAULT '{}',\n    created_at timestamptz NOT NULL DEFAULT now(),\n    updated_at timestamptz NOT NULL DEFAULT now()\n);\n",
            );
            let _ = writeln!(
                up,
                "COMMENT ON TABLE {t} IS 'Entity number {k}; it''s generated.';"
            );
            (format!("create_{t}"), up, format!("DROP TABLE {t};\n"))
        }
        1 => (
            format!("index_{t}"),
            format!(
                "CREATE INDEX {t}_name_idx ON {t} (name);\n\
                 CREATE INDEX {t}_created_idx ON {t} (created_at DESC);\n\
                 CREATE UNIQUE INDEX {t}_lower_name_key ON {t} (lower(name));\n"
            ),
            format!(
                "DROP INDEX {t}_lower_name_key;\nDROP INDEX {t}_created_idx;\nDROP INDEX {t}_name_idx;\n"
            ),
        ),
        2 => (
            format!("add_status_to_{t}"),
            format!(
                "CREATE TYPE {t}_status AS ENUM ('new', 'active', 'archived');\n\
                 ALTER TABLE {t} ADD COLUMN status {t}_status NOT NULL DEFAULT 'new';\n\
                 CREATE INDEX {t}_status_idx ON {t} (status) WHERE status <> 'archived';\n"
            ),
            format!(
                "DROP INDEX {t}_status_idx;\nALTER TABLE {t} DROP COLUMN status;\nDROP TYPE {t}_status;\n"
            ),
        ),
        3 => (
            format!("touch_trigger_for_{t}"),
            format!(
                "CREATE FUNCTION {t}_touch() RETURNS trigger\nLANGUAGE plpgsql AS $$\nBEGIN\n    \
                 -- Keep updated_at current; a ';' inside the body must not split it.\n    \
                 NEW.updated_at := now();\n    RETURN NEW;\nEND;\n$$;\n\n\
                 CREATE TRIGGER {t}_touch BEFORE UPDATE ON {t}\n    FOR EACH ROW EXECUTE FUNCTION {t}_touch();\n"
            ),
            format!("DROP TRIGGER {t}_touch ON {t};\nDROP FUNCTION {t}_touch();\n"),
        ),
        4 => (
            format!("create_{t}_active_view"),
            format!(
                "CREATE VIEW {t}_active AS\n    SELECT id, name, created_at\n    FROM {t}\n    WHERE status = 'active';\n"
            ),
            format!("DROP VIEW {t}_active;\n"),
        ),
        5 => {
            let parent_value = parent
                .as_ref()
                .map(|p| format!("(SELECT min(id) FROM {p})"))
                .unwrap_or_else(|| "NULL".to_owned());
            let columns = if parent.is_some() {
                "name, parent_id, payload"
            } else {
                "name, payload"
            };
            let values = if parent.is_some() {
                format!("'seed-{k}-' || g, {parent_value}, jsonb_build_object('n', g)")
            } else {
                format!("'seed-{k}-' || g, jsonb_build_object('n', g)")
            };
            (
                format!("seed_{t}"),
                format!(
                    "INSERT INTO {t} ({columns})\n    SELECT {values}\n    FROM generate_series(1, 100) AS g;\n"
                ),
                format!("DELETE FROM {t} WHERE name LIKE 'seed-{k}-%';\n"),
            )
        }
        6 => (
            format!("add_score_to_{t}"),
            format!(
                "ALTER TABLE {t} ADD COLUMN score integer NOT NULL DEFAULT 0;\n\
                 ALTER TABLE {t} ADD CONSTRAINT {t}_score_check CHECK (score >= 0);\n"
            ),
            format!(
                "ALTER TABLE {t} DROP CONSTRAINT {t}_score_check;\nALTER TABLE {t} DROP COLUMN score;\n"
            ),
        ),
        _ => {
            let other = parent.clone().unwrap_or_else(|| t.clone());
            (
                format!("create_{t}_links"),
                format!(
                    "CREATE TABLE {t}_links (\n    entity_id bigint NOT NULL REFERENCES {t} (id) ON DELETE CASCADE,\n    \
                     other_id bigint NOT NULL REFERENCES {other} (id),\n    \
                     created_at timestamptz NOT NULL DEFAULT now(),\n    PRIMARY KEY (entity_id, other_id)\n);\n\
                     CREATE INDEX {t}_links_other_idx ON {t}_links (other_id);\n"
                ),
                format!("DROP TABLE {t}_links;\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sorted_diesel_directories_with_both_files() -> BenchResult {
        let dir = tempfile::tempdir()?;
        generate(dir.path(), 20)?;
        let mut names: Vec<String> = std::fs::read_dir(dir.path())?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<BenchResult<_>>()?;
        names.sort();
        assert_eq!(names.len(), 20);
        assert!(names[0].starts_with("2024-01-01-000001_create_entity_0"));
        assert!(names[8].ends_with("_create_entity_1"));
        for name in &names {
            assert!(dir.path().join(name).join("up.sql").is_file());
            assert!(dir.path().join(name).join("down.sql").is_file());
        }
        Ok(())
    }

    #[test]
    fn downs_undo_ups_exactly_on_a_real_server() -> BenchResult {
        let dir = tempfile::tempdir()?;
        generate(dir.path(), 24)?;
        let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())?
            .map(|e| Ok(e?.path()))
            .collect::<BenchResult<_>>()?;
        names.sort();
        let server = pg_isolate::Server::connect(pg_isolate::ServerOptions::default())?;
        let db = server.test_database()?;
        let mut client = db.client()?;
        let objects = |client: &mut postgres::Client| -> BenchResult<i64> {
            Ok(client
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public') \
                          + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public') \
                          + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public')",
                    &[],
                )?
                .get(0))
        };
        let empty = objects(&mut client)?;
        for round in 0..2 {
            for name in &names {
                client.batch_execute(&std::fs::read_to_string(name.join("up.sql"))?)?;
            }
            assert!(objects(&mut client)? > empty, "round {round}");
            for name in names.iter().rev() {
                client.batch_execute(&std::fs::read_to_string(name.join("down.sql"))?)?;
            }
            assert_eq!(objects(&mut client)?, empty, "round {round}");
        }
        Ok(())
    }
}
