//! A full or read-only filesystem under the store (a real tmpfs): a clear
//! error naming the document and the cause, the previous version intact,
//! no temp files left behind, and updates work again once space or write
//! access is back.

use registry::{Error, Store};
use test_support::TestResult;
use test_support::mount::{FILLER, Tmpfs};

use crate::{Counter, open};

/// The error and all its sources, joined as the CLI prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The names in `dir`, sorted.
fn names(dir: &std::path::Path) -> TestResult<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<TestResult<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn bump(store: &Store<Counter>) -> Result<u64, Error> {
    store.update(|doc| {
        doc.bump();
        Ok::<_, Error>(doc.value)
    })
}

/// A store on the tmpfs holding version 3 of the counter.
fn store_at_version_3(fs: &Tmpfs) -> TestResult<Store<Counter>> {
    let store = open(&fs.path().join("counter.json"))?;
    for _ in 0..3 {
        bump(&store)?;
    }
    Ok(store)
}

#[test]
fn a_full_filesystem_fails_the_update_clearly_and_keeps_the_previous_version() -> TestResult {
    let fs = Tmpfs::new(256 * 1024)?;
    let store = store_at_version_3(&fs)?;
    let before = std::fs::read(store.path())?;
    let filled = fs.fill()?;
    assert!(filled > 0);

    // A bigger document needs a new page, which no longer exists.
    let error = store
        .update(|doc| {
            doc.value = 1_000;
            doc.payload = (0..5_000).collect();
            Ok::<_, Error>(())
        })
        .expect_err("the filesystem is full");
    let message = chain(&error);
    assert!(matches!(error, Error::Write { .. }), "{error:?}");
    assert!(
        message.contains(&store.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("No space left on device"), "{message}");
    assert!(message.contains("previous version is intact"), "{message}");

    // The previous version, byte for byte, and no temp file eating the
    // little space there is.
    assert_eq!(std::fs::read(store.path())?, before);
    assert_eq!(store.read()?.value, 3);
    assert_eq!(
        names(fs.path())?,
        ["counter.json", "counter.json.lock", FILLER]
    );
    // Every later attempt fails the same way and leaves nothing either.
    for _ in 0..3 {
        assert!(matches!(bump(&store), Err(Error::Write { .. })));
    }
    assert_eq!(names(fs.path())?.len(), 3);
    assert_eq!(store.read()?.value, 3);

    // Another process's store opens and reads fine on the full filesystem.
    assert_eq!(open(store.path())?.read()?.value, 3);

    fs.free()?;
    assert_eq!(bump(&store)?, 4);
    assert_eq!(open(store.path())?.read()?, store.read()?);
    assert!(store.read()?.is_consistent());
    Ok(())
}

#[test]
fn a_first_write_on_a_full_filesystem_creates_nothing() -> TestResult {
    let fs = Tmpfs::new(128 * 1024)?;
    fs.fill()?;
    let path = fs.path().join("state").join("counter.json");
    // The directory and the empty lock file need no data pages.
    let store = open(&path)?;
    let error = bump(&store).expect_err("the filesystem is full");
    assert!(
        chain(&error).contains("No space left on device"),
        "{error:?}"
    );
    assert!(!path.exists());
    assert_eq!(names(&fs.path().join("state"))?, ["counter.json.lock"]);
    assert_eq!(store.read()?, Counter::default());
    fs.free()?;
    assert_eq!(bump(&store)?, 1);
    Ok(())
}

#[test]
fn a_read_only_filesystem_fails_the_update_clearly_and_keeps_the_previous_version() -> TestResult {
    let fs = Tmpfs::new(256 * 1024)?;
    let path = fs.path().join("counter.json");
    let before = {
        let store = store_at_version_3(&fs)?;
        std::fs::read(store.path())?
    };
    // A remount to read-only needs every file on it closed for writing,
    // so the store above is gone; this one opens on the read-only
    // filesystem, as a new process would.
    fs.remount_read_only()?;
    let store = open(&path)?;
    assert_eq!(store.read()?.value, 3);

    let error = bump(&store).expect_err("the filesystem is read-only");
    let message = chain(&error);
    assert!(matches!(error, Error::Write { .. }), "{error:?}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("Read-only file system"), "{message}");
    assert!(message.contains("previous version is intact"), "{message}");
    assert_eq!(std::fs::read(&path)?, before);
    assert_eq!(store.read()?.value, 3);
    assert_eq!(names(fs.path())?, ["counter.json", "counter.json.lock"]);

    fs.remount_read_write()?;
    assert_eq!(bump(&store)?, 4);
    assert_eq!(open(&path)?.read()?.value, 4);
    Ok(())
}

#[test]
fn a_read_only_filesystem_without_a_lock_file_is_named_in_the_error() -> TestResult {
    let fs = Tmpfs::new(64 * 1024)?;
    fs.remount_read_only()?;
    let path = fs.path().join("counter.json");
    let error = open(&path).expect_err("no lock file can be created");
    let message = chain(&error);
    assert!(matches!(error, Error::Lock { .. }), "{error:?}");
    assert!(message.contains("counter.json.lock"), "{message}");
    assert!(message.contains("Read-only file system"), "{message}");
    Ok(())
}
