use std::time::Duration;

use registry::{Error, Options, Store};
use test_support::TestResult;

use crate::{Counter, open};

#[test]
fn a_missing_document_reads_as_default_and_is_created_by_update() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state/counter.json");
    let store = open(&path)?;
    assert_eq!(store.read()?, Counter::default());
    assert!(!path.exists());
    store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(())
    })?;
    assert_eq!(store.read()?.value, 1);
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    assert_eq!(on_disk["schema_version"], 2);
    assert_eq!(on_disk["data"]["value"], 1);
    assert!(dir.path().join("state/counter.json.lock").exists());
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("refused")]
    Refused,
    #[error(transparent)]
    Store(#[from] Error),
}

#[test]
fn a_failing_change_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("counter.json"))?;
    store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(())
    })?;
    let before = std::fs::read(store.path())?;
    let result = store.update(|doc| {
        doc.value = 1_000;
        Err::<(), _>(AppError::Refused)
    });
    assert!(matches!(result, Err(AppError::Refused)));
    assert_eq!(std::fs::read(store.path())?, before);
    Ok(())
}

#[test]
fn an_unchanged_document_is_not_rewritten() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("counter.json"))?;
    store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(())
    })?;
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(store.path())?);
    let value = store.update(|doc| Ok::<_, Error>(doc.value))?;
    assert_eq!(value, 1);
    let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(store.path())?);
    assert_eq!(
        inode, after,
        "a rewrite would have renamed a new file into place"
    );
    Ok(())
}

#[test]
fn a_newer_schema_version_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.json");
    let newer = r#"{"schema_version": 3, "data": {"value": 5, "payload": [], "extra": true}}"#;
    std::fs::write(&path, newer)?;
    let store = open(&path)?;
    let error = store.read().expect_err("version 3 is newer than 2");
    assert!(
        matches!(
            error,
            Error::NewerVersion {
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("counter.json"), "{error}");
    let update = store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(())
    });
    assert!(matches!(update, Err(Error::NewerVersion { .. })));
    assert!(
        matches!(store.recover_corrupt(), Err(Error::NewerVersion { .. })),
        "a newer document is not corrupt and must not be moved aside"
    );
    assert_eq!(std::fs::read_to_string(&path)?, newer);
    Ok(())
}

#[test]
fn an_older_schema_version_is_migrated_forward() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.json");
    std::fs::write(&path, r#"{"schema_version": 1, "data": {"count": 41}}"#)?;
    let store = open(&path)?;
    assert_eq!(store.read()?.value, 41);
    store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(())
    })?;
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    assert_eq!(on_disk["schema_version"], 2);
    assert_eq!(on_disk["data"]["value"], 42);
    Ok(())
}

#[test]
fn a_corrupt_document_is_an_error_until_explicitly_recovered() -> TestResult {
    for garbage in [
        "",
        "{\"schema_version\": 2, \"data\": {\"val",
        "not json",
        "[1, 2]",
    ] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("counter.json");
        std::fs::write(&path, garbage)?;
        let store = open(&path)?;
        let error = store.read().expect_err("garbage must not parse");
        assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        let update = store.update(|doc| {
            doc.bump();
            Ok::<_, Error>(())
        });
        assert!(
            matches!(update, Err(Error::Corrupt { .. })),
            "an update must not replace it"
        );
        assert_eq!(std::fs::read_to_string(&path)?, garbage);

        let kept = store.recover_corrupt()?.expect("the document was corrupt");
        assert!(
            kept.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("counter.json.corrupt-")),
            "{kept:?}"
        );
        assert_eq!(std::fs::read_to_string(&kept)?, garbage);
        assert_eq!(store.read()?, Counter::default());
        assert_eq!(
            store.recover_corrupt()?,
            None,
            "a readable document is left alone"
        );
    }
    Ok(())
}

#[test]
fn leftover_temp_files_from_a_crashed_writer_are_removed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.json");
    let leftover = dir.path().join(".counter.json.tmp-abc123");
    let unrelated = dir.path().join(".other.json.tmp-abc123");
    std::fs::write(&leftover, "half a docu")?;
    std::fs::write(&unrelated, "not ours")?;
    let store = open(&path)?;
    store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(())
    })?;
    assert!(!leftover.exists());
    assert!(unrelated.exists());
    Ok(())
}

#[test]
fn a_lock_wait_is_bounded_and_names_the_holder() -> TestResult {
    if let Some(args) = test_support::child::args() {
        // Child: hold the exclusive lock until the parent removes the flag.
        let store = open(std::path::Path::new(&args[0]))?;
        let flag = std::path::PathBuf::from(&args[1]);
        return store.update(|_| {
            std::fs::write(&flag, "held")?;
            while flag.exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        });
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.json");
    let flag = dir.path().join("held");
    let child = test_support::child::spawn(
        "store::a_lock_wait_is_bounded_and_names_the_holder",
        &[path.display().to_string(), flag.display().to_string()],
    )?;
    let child_pid = child.id();
    while !flag.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let impatient: Store<Counter> = Store::open(
        &path,
        Options {
            lock_timeout: Duration::from_millis(200),
            ..Options::default()
        },
    )?;
    let error = impatient.read().expect_err("the child holds the lock");
    match &error {
        Error::LockTimeout { holder, .. } => assert_eq!(*holder, Some(child_pid)),
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&format!("pid {child_pid}")), "{message}");
    assert!(message.contains("still running"), "{message}");
    std::fs::remove_file(&flag)?;
    test_support::child::wait_success(child)?;
    assert_eq!(impatient.read()?, Counter::default());
    Ok(())
}

#[test]
fn a_store_is_refused_where_it_cannot_exist() -> TestResult {
    let dir = tempfile::tempdir()?;
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "")?;
    let error = open(&blocker.join("counter.json")).expect_err("a file is not a directory");
    assert!(matches!(error, Error::Directory { .. }), "{error:?}");
    Ok(())
}
