//! pg-isolate's leak cleanup as the CLI runs and shows it, shared by
//! `isolane gc` and `isolane db gc`.

use anyhow::Result;
use serde::Serialize;

/// One database `db gc` (or `gc`) dropped or kept.
#[derive(Debug, Serialize)]
pub(super) struct GcRow {
    pub(super) name: String,
    pub(super) kind: Option<String>,
    pub(super) reason: String,
}

/// What pg-isolate's gc did, for printing.
#[derive(Debug, Default, Serialize)]
pub(super) struct GcRows {
    pub(super) dropped: Vec<GcRow>,
    pub(super) kept: Vec<GcRow>,
    pub(super) dry_run: bool,
}

/// Runs pg-isolate's gc on `server` (dropping nothing on a dry run).
pub(super) fn server_gc(server: &pg_isolate::Server, dry_run: bool) -> Result<GcRows> {
    let report = server.gc(&pg_isolate::GcOptions {
        dry_run,
        ..pg_isolate::GcOptions::default()
    })?;
    let rows = |entries: Vec<pg_isolate::GcEntry>| {
        entries
            .into_iter()
            .map(|e| GcRow {
                name: e.name,
                kind: e.kind.map(|k| format!("{k:?}").to_lowercase()),
                reason: e.reason.to_string(),
            })
            .collect()
    };
    Ok(GcRows {
        dropped: rows(report.dropped),
        kept: rows(report.kept),
        dry_run,
    })
}
