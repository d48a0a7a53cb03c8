//! `registry::write_atomically` on its own: the mode asked for, the content
//! replaced whole, and no temp file left behind when the rename fails.

use std::os::unix::fs::PermissionsExt as _;

use test_support::TestResult;

#[test]
fn replaces_content_with_the_mode_asked_for() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("password");
    std::fs::write(&path, "a much longer previous content")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    registry::write_atomically(&path, b"secret", 0o600)?;
    assert_eq!(std::fs::read(&path)?, b"secret");
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
    Ok(())
}

#[test]
fn a_failed_rename_leaves_no_temp_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A non-empty directory where the file should go: the rename fails.
    let path = dir.path().join("taken");
    std::fs::create_dir(&path)?;
    std::fs::write(path.join("inside"), "x")?;
    let Err(error) = registry::write_atomically(&path, b"new", 0o644) else {
        return Err("writing over a non-empty directory succeeded".into());
    };
    assert_ne!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, ["taken"]);
    Ok(())
}

#[test]
fn a_path_without_a_file_name_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Err(error) = registry::write_atomically(&dir.path().join(".."), b"x", 0o644) else {
        return Err("writing to `..` succeeded".into());
    };
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}
