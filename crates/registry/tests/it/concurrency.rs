//! Several real processes on one store: no lost update, no torn document,
//! whatever the timing and however they die.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use registry::Error;
use test_support::TestResult;
use test_support::child;

use crate::{Counter, open};

fn increment(path: &Path, times: u64) -> TestResult {
    let store = open(path)?;
    for _ in 0..times {
        store.update(|doc| {
            doc.bump();
            Ok::<_, Error>(())
        })?;
    }
    Ok(())
}

#[test]
fn eight_processes_times_500_increments_lose_no_update() -> TestResult {
    if let Some(args) = child::args() {
        return increment(Path::new(&args[0]), args[1].parse()?);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.json");
    let children = (0..8)
        .map(|_| {
            child::spawn(
                "concurrency::eight_processes_times_500_increments_lose_no_update",
                &[path.display().to_string(), "500".to_owned()],
            )
        })
        .collect::<Result<Vec<Child>, _>>()?;
    for c in children {
        child::wait_success(c)?;
    }
    let end = open(&path)?.read()?;
    assert_eq!(end.value, 8 * 500);
    assert!(end.is_consistent());
    Ok(())
}

#[test]
fn a_writer_killed_at_random_moments_never_leaves_an_unreadable_document() -> TestResult {
    if let Some(args) = child::args() {
        // Write until killed.
        return increment(Path::new(&args[0]), u64::MAX);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.json");
    let store = open(&path)?;
    let mut last = 0;
    let mut kills = 0;
    let mut delay_us: u64 = 0;
    while kills < 100 {
        // Killed and reaped even if an assertion below fails first.
        let mut writer = child::KillOnDrop(child::spawn(
            "concurrency::a_writer_killed_at_random_moments_never_leaves_an_unreadable_document",
            &[path.display().to_string()],
        )?);
        // Kill it while it is busy writing: wait for its first write, then
        // for a pseudo-random 0-2 ms, so deaths land at every step of the
        // write path (temp file, fsync, rename, directory fsync).
        let started = Instant::now();
        while store.read()?.value == last {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the writer never wrote"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        delay_us = (delay_us * 7_919 + 3_571) % 2_000;
        std::thread::sleep(Duration::from_micros(delay_us));
        writer.0.kill()?; // SIGKILL
        writer.0.wait()?;
        kills += 1;

        let doc = store.read()?; // must parse, whatever the moment of death
        assert!(
            doc.is_consistent(),
            "torn document after kill {kills}: {doc:?}"
        );
        assert!(
            doc.value >= last,
            "the counter went back from {last} to {}",
            doc.value
        );
        last = doc.value;
    }
    // The store still works after all those deaths, and no temp file piles up.
    store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(())
    })?;
    assert_eq!(store.read()?.value, last + 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Ok(())
}

#[test]
fn a_reader_beside_writers_always_sees_a_valid_version() -> TestResult {
    if let Some(args) = child::args() {
        return increment(Path::new(&args[0]), args[1].parse()?);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.json");
    let store = open(&path)?;
    let mut writers = (0..3)
        .map(|_| {
            child::spawn(
                "concurrency::a_reader_beside_writers_always_sees_a_valid_version",
                &[path.display().to_string(), "300".to_owned()],
            )
        })
        .collect::<Result<Vec<Child>, _>>()?;

    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut locked_reads, mut raw_reads, mut last) = (0u64, 0u64, 0u64);
    while writers.iter_mut().any(|w| matches!(w.try_wait(), Ok(None))) {
        assert!(Instant::now() < deadline, "writers did not finish");
        // Through the store, under the shared lock.
        let doc = store.read()?;
        assert!(doc.is_consistent(), "{doc:?}");
        assert!(doc.value >= last);
        last = doc.value;
        locked_reads += 1;
        // And without any lock: the rename makes every version whole.
        if let Ok(bytes) = std::fs::read(&path) {
            let raw: serde_json::Value = serde_json::from_slice(&bytes)?;
            let doc: Counter = serde_json::from_value(raw["data"].clone())?;
            assert!(doc.is_consistent(), "{doc:?}");
            raw_reads += 1;
        }
    }
    for w in writers {
        child::wait_success(w)?;
    }
    assert_eq!(store.read()?.value, 900);
    assert!(locked_reads > 0 && raw_reads > 0);
    Ok(())
}
