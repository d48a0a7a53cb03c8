//! Python projects as first-class users: a virtual environment activated
//! for `run`, and a real Django project (pip-installed into a virtualenv
//! made by the test) driven end to end.

use std::path::Path;
use std::process::Command;

use test_support::TestResult;

use crate::{ok, repo_with_config};

/// The `python3` the tests use, or a clear failure: these tests never skip.
pub(crate) fn python3() -> TestResult<String> {
    let found = Command::new("python3")
        .args(["-c", "import sys, venv; print(sys.executable)"])
        .output();
    match found {
        Ok(out) if out.status.success() => Ok(String::from_utf8(out.stdout)?.trim().to_owned()),
        _ => Err(
            "python3 with the venv module is required by the Python/Django tests \
                  (Debian: apt-get install python3 python3-venv; `.ci/run` installs them)"
                .into(),
        ),
    }
}

fn make_venv(dir: &Path, with_pip: bool) -> TestResult {
    let mut command = Command::new(python3()?);
    command.args(["-m", "venv"]);
    if !with_pip {
        command.arg("--without-pip");
    }
    let out = command.arg(dir).output()?;
    if !out.status.success() {
        return Err(format!(
            "python3 -m venv {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

#[test]
fn run_activates_the_main_worktrees_venv_unless_turned_off() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let root = repo.path();
    repo.write(".gitignore", ".venv/\n")?;
    repo.commit_all("ignore the venv")?;
    make_venv(&root.join(".venv"), false)?;
    ok(
        root,
        &[
            "create",
            "--purpose",
            "test-venv",
            "--identifier",
            "a",
            "--no-db",
        ],
    )?;
    let script = "printf '%s\\n' \"$VIRTUAL_ENV\" \"$(command -v python)\"";
    let said = ok(root, &["run", "test-venv-a", "--", "sh", "-c", script])?;
    let venv = root.join(".venv");
    assert_eq!(
        said,
        format!(
            "{}\n{}\n",
            venv.display(),
            venv.join("bin/python").display()
        )
    );

    // The worktree's own .venv wins over the main worktree's.
    let own = root.join("worktrees/test-venv-a/.venv");
    make_venv(&own, false)?;
    let said = ok(
        root,
        &["run", "test-venv-a", "--", "sh", "-c", "echo $VIRTUAL_ENV"],
    )?;
    assert_eq!(said.trim(), own.display().to_string());

    repo.write(
        "isolane.toml",
        "[database]\nenabled = false\n[run]\nvenv = false\n",
    )?;
    let said = ok(
        root,
        &[
            "run",
            "test-venv-a",
            "--",
            "sh",
            "-c",
            "echo \"[${VIRTUAL_ENV:-}]\"",
        ],
    )?;
    assert_eq!(said.trim(), "[]");
    ok(root, &["remove", "test-venv-a", "--force"])?;
    Ok(())
}
