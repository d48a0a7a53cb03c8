//! Nothing here: the crate exists for its tests (`tests/`), which use
//! `#[pg_isolate::test]` as a project depending on pg-isolate would, with
//! every kind of argument, sync and async, under `cargo test` and
//! `cargo nextest run`.
