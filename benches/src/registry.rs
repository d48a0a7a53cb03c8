//! `registry`: an uncontended update (lock, read, modify, atomic durable
//! write) beside a plain unlocked `std::fs::write` of the same document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BenchResult, Config, Report, Row, interleaved, us};

/// A document shaped like a per-repo worktree registry with a few entries.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Worktrees {
    generation: u64,
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    branch: String,
    path: String,
    ports: BTreeMap<String, u16>,
    database: String,
    state: String,
}

impl registry::Document for Worktrees {
    const VERSION: u32 = 1;
}

fn sample_document() -> Worktrees {
    let mut doc = Worktrees::default();
    for i in 0..20u16 {
        let id = format!("test-integration-{i}");
        doc.entries.insert(
            id.clone(),
            Entry {
                branch: format!("feature/topic-{i}"),
                path: format!("/work/repo/worktrees/{id}"),
                ports: [
                    ("APP_PORT".to_owned(), 20_000 + i * 2),
                    ("API_PORT".to_owned(), 20_001 + i * 2),
                ]
                .into_iter()
                .collect(),
                database: format!("testdb_test_integration_{i}"),
                state: "ready".to_owned(),
            },
        );
    }
    doc
}

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let dir = tempfile::tempdir_in(&config.scratch)?;
    let store: registry::Store<Worktrees> = registry::Store::open(
        dir.path().join("registry.json"),
        registry::Options::default(),
    )?;
    store.update(|doc| {
        *doc = sample_document();
        Ok::<_, registry::Error>(())
    })?;
    let baseline_path = dir.path().join("baseline.json");
    let mut baseline_doc = sample_document();

    let iterations = config.iterations(2_000, 200);
    let (update, write) = interleaved(
        50,
        iterations,
        || {
            store.update(|doc| {
                doc.generation += 1;
                Ok::<_, registry::Error>(())
            })?;
            Ok(())
        },
        || {
            baseline_doc.generation += 1;
            std::fs::write(&baseline_path, serde_json::to_vec_pretty(&baseline_doc)?)?;
            Ok(())
        },
    )?;

    report.figure("registry.update_us_p50", us(update.percentile(50.0)));
    report.figure("registry.update_us_p95", us(update.percentile(95.0)));
    report.figure("registry.update_us_p99", us(update.percentile(99.0)));
    report.figure("registry.write_baseline_us_p50", us(write.percentile(50.0)));
    report.figure("registry.write_baseline_us_p99", us(write.percentile(99.0)));
    report.figure(
        "registry.update_vs_write",
        crate::ratio(update.percentile(50.0), write.percentile(50.0)),
    );
    report.row(Row {
        group: "registry",
        subject: "locked atomic durable update".to_owned(),
        samples: update,
        baseline: Some(("unlocked std::fs::write".to_owned(), write)),
    });
    Ok(())
}
