//! `isolane compare`: verdicts on generated repositories whose revisions
//! differ by a deliberate sleep (or not at all), CMD failures, bad input,
//! and what it leaves behind. Verdicts are asserted, never timings: the
//! sleeps differ by 3x and the figures CMD writes are exact, so the
//! verdicts hold on a loaded machine.

use std::path::Path;
use std::time::{Duration, Instant};

use test_support::{GitRepo, TestResult};

use crate::{database_names, json, leases, ok, output, repo_with_config};

const NO_DB: &str = "[database]\nenabled = false\n";

/// The script CMD runs: sleeps `sleep` seconds and reports the figure
/// `work` as `work` seconds.
fn script(sleep: &str, work: &str) -> String {
    format!(
        "#!/bin/sh\nsleep {sleep}\nprintf '{{\"work\": {work}}}' > \"$ISOLANE_COMPARE_OUTPUT\"\n"
    )
}

/// A repository whose `main` runs `bench.sh` in 0.1 s, and a branch
/// `slow` whose HEAD adds a deliberate 0.2 s sleep, and `same` whose HEAD
/// changes only the README.
fn fixture(config: &str) -> TestResult<GitRepo> {
    let repo = repo_with_config(config)?;
    repo.write("bench.sh", script("0.1", "0.1"))?;
    repo.commit_all("a benchmark")?;
    branch(&repo, "slow", "bench.sh", &script("0.1; sleep 0.2", "0.3"))?;
    branch(&repo, "same", "README.md", "# fixture, reworded\n")?;
    Ok(repo)
}

/// Commits `contents` to `file` on a new branch off `main`, and goes back
/// to `main`.
fn branch(repo: &GitRepo, name: &str, file: &str, contents: &str) -> TestResult {
    repo.git(["checkout", "--quiet", "-b", name, "main"])?;
    repo.write(file, contents)?;
    repo.commit_all(&format!("{file} on {name}"))?;
    repo.git(["checkout", "--quiet", "main"])?;
    Ok(())
}

/// Runs `isolane compare ... --json`: the exit code and the report.
fn compare(dir: &Path, args: &[&str]) -> TestResult<(Option<i32>, serde_json::Value)> {
    let mut all = vec!["compare", "--json"];
    all.extend_from_slice(args);
    let out = output(dir, &all)?;
    let report = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "no JSON report ({e}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code(), report))
}

/// The verdict on figure `name`.
fn verdict<'a>(report: &'a serde_json::Value, name: &str) -> TestResult<&'a str> {
    report["figures"]
        .as_array()
        .ok_or("no figures")?
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["verdict"].as_str())
        .ok_or_else(|| format!("no verdict on {name}: {report:#}").into())
}

/// The ids of the repository's worktrees, as `isolane list` shows them.
fn worktree_ids(repo: &GitRepo) -> TestResult<Vec<String>> {
    Ok(json(repo.path(), &["list"])?
        .as_array()
        .ok_or("list is not an array")?
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect())
}

/// Nothing the comparison made is left: no registry entry, no git
/// worktree besides the main one, no port lease of this repository.
fn nothing_left(repo: &GitRepo) -> TestResult {
    let ids: Vec<String> = worktree_ids(repo)?
        .into_iter()
        .filter(|id| id.starts_with("test-compare-"))
        .collect();
    assert!(ids.is_empty(), "left behind: {ids:?}");
    let worktrees = repo.git(["worktree", "list", "--porcelain"])?;
    assert!(
        !worktrees.contains("test-compare-"),
        "git still lists: {worktrees}"
    );
    Ok(())
}

#[test]
fn a_deliberate_sleep_is_slower() -> TestResult {
    let repo = fixture(NO_DB)?;
    let (code, report) = compare(
        repo.path(),
        &["main", "slow", "--runs", "8", "--", "sh", "bench.sh"],
    )?;
    assert_eq!(verdict(&report, "wall")?, "slower", "{report:#}");
    assert_eq!(verdict(&report, "work")?, "slower", "{report:#}");
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["slower"], serde_json::json!(["wall", "work"]));
    // Every run is in the report: 8 timed rounds and 1 warm-up, both sides,
    // in ABBA order.
    let samples = report["samples"].as_array().ok_or("no samples")?;
    assert_eq!(samples.len(), 18);
    let order: Vec<&str> = samples
        .iter()
        .take(6)
        .filter_map(|s| s["side"].as_str())
        .collect();
    assert_eq!(order, ["base", "head", "head", "base", "base", "head"]);
    assert_eq!(samples.iter().filter(|s| s["warmup"] == true).count(), 2);
    let work = report["figures"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "work"))
        .ok_or("no work figure")?;
    assert_eq!(work["base_samples"].as_array().map(Vec::len), Some(8));
    let ratio = work["ratio"].as_f64().ok_or("no ratio")?;
    assert!((ratio - 3.0).abs() < 1e-9, "{ratio}");
    nothing_left(&repo)?;

    // The other way round, HEAD is faster: exit 0.
    let (code, report) = compare(
        repo.path(),
        &["slow", "main", "--runs", "8", "--", "sh", "bench.sh"],
    )?;
    assert_eq!(verdict(&report, "work")?, "faster", "{report:#}");
    assert_eq!(verdict(&report, "wall")?, "faster", "{report:#}");
    assert_eq!(code, Some(0));
    nothing_left(&repo)
}

#[test]
fn identical_sides_show_no_difference() -> TestResult {
    let repo = fixture(NO_DB)?;
    for attempt in 1..=3 {
        let (code, report) = compare(
            repo.path(),
            &["main", "same", "--runs", "8", "--", "sh", "bench.sh"],
        )?;
        assert_eq!(
            verdict(&report, "wall")?,
            "no-difference",
            "attempt {attempt}: {report:#}"
        );
        assert_eq!(verdict(&report, "work")?, "no-difference");
        assert_eq!(code, Some(0), "attempt {attempt}: {report:#}");
        assert_eq!(report["slower"], serde_json::json!([]));
    }
    // The text report names the verdict and the method.
    let text = ok(
        repo.path(),
        &[
            "compare", "main", "same", "--runs", "3", "--", "sh", "bench.sh",
        ],
    )?;
    assert!(text.contains("no difference at this noise"), "{text}");
    assert!(text.contains("bootstrap"), "{text}");
    assert!(text.contains("no figure slower beyond 5%"), "{text}");
    nothing_left(&repo)
}

#[test]
fn a_failing_command_stops_with_its_output_and_code() -> TestResult {
    let repo = fixture(NO_DB)?;
    branch(
        &repo,
        "broken",
        "bench.sh",
        "#!/bin/sh\necho out of order\necho no such table >&2\nexit 3\n",
    )?;
    let out = output(
        repo.path(),
        &["compare", "main", "broken", "--", "sh", "bench.sh"],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("out of order"), "{stdout}");
    assert!(stderr.contains("no such table"), "{stderr}");
    assert!(stderr.contains("CMD failed on head"), "{stderr}");
    nothing_left(&repo)
}

#[test]
fn bad_input_is_refused_before_anything_is_made() -> TestResult {
    let repo = fixture(NO_DB)?;
    for (args, needle) in [
        (
            &["compare", "main", "no-such-rev", "--", "true"][..],
            "HEAD \"no-such-rev\" is neither a worktree of this repository nor a revision",
        ),
        (
            &["compare", "nope", "main", "--", "true"][..],
            "BASE \"nope\" is neither",
        ),
        (
            &["compare", "main", "slow", "--runs", "0", "--", "true"][..],
            "--runs",
        ),
        (
            &["compare", "main", "slow", "--threshold", "5", "--", "true"][..],
            "not a percentage",
        ),
        (
            &[
                "compare",
                "main",
                "slow",
                "--threshold",
                "-3%",
                "--",
                "true",
            ][..],
            "--threshold",
        ),
        (&["compare", "main", "slow"][..], "<COMMAND>"),
    ] {
        let out = output(repo.path(), args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    nothing_left(&repo)
}

const WITH_DB: &str = r#"
[ports]
names = ["APP_PORT"]

[database]
migrations = "migrations"

[[services]]
name = "web"
command = "exec python3 -m http.server $APP_PORT --bind 127.0.0.1"
ready = "APP_PORT"
timeout = "30s"
"#;

/// CMD asks the side's service for a page: it fails unless the service
/// is up on the side's own port.
const ASK_SERVICE: &str = "import os, urllib.request\n\
    urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['APP_PORT']).read()\n";

fn count_rows(url: &str) -> TestResult<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client.query_one("SELECT count(*) FROM notes", &[])?.get(0))
}

#[test]
fn databases_services_and_existing_worktrees() -> TestResult {
    let repo = fixture(WITH_DB)?;
    repo.write(
        "migrations/2024-01-01-000000_notes/up.sql",
        "CREATE TABLE notes (id serial PRIMARY KEY, body text);\n",
    )?;
    repo.write(
        "migrations/2024-01-01-000000_notes/down.sql",
        "DROP TABLE notes;\n",
    )?;
    repo.commit_all("migrations")?;
    // Database names are server-wide: one of its own per test process, so
    // that nothing a failed run left can stand in the way.
    let identifier = format!("mine-{}", std::process::id());
    let mine = format!("test-cmp-{identifier}");
    let created = json(
        repo.path(),
        &[
            "create",
            "--purpose",
            "test-cmp",
            "--identifier",
            &identifier,
        ],
    )?;
    let database = created["database"].as_str().ok_or("no database")?;
    let url = ok(repo.path(), &["env", &mine, "--format", "json"])?;
    let url: serde_json::Value = serde_json::from_str(&url)?;
    let url = url["DATABASE_URL"].as_str().ok_or("no url")?.to_owned();
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.execute("INSERT INTO notes (body) VALUES ('mine')", &[])?;
    drop(client);

    // Two runs a side give no interval, so in this test the exit code
    // cannot depend on the timings.
    // --no-reset: the existing worktree's data is used as it is.
    let (code, report) = compare(
        repo.path(),
        &[
            &mine,
            "main",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--no-reset",
            "--keep",
            "--",
            "python3",
            "-c",
            ASK_SERVICE,
        ],
    )?;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["base"]["worktree"], mine.as_str());
    assert_eq!(report["base"]["created"], false);
    assert_eq!(count_rows(&url)?, 1);
    // --keep: the worktree made for HEAD is still there, with its database.
    let kept = report["head"]["worktree"]
        .as_str()
        .ok_or("no head worktree")?
        .to_owned();
    assert!(kept.starts_with("test-compare-head-"), "{kept}");
    let kept_database = format!("testdb_{}", kept.replace('-', "_"));
    assert!(database_names(repo.path())?.contains(&kept_database));
    ok(repo.path(), &["remove", "--force", &kept])?;

    // By default each run starts from the template: the row is gone.
    let (code, report) = compare(
        repo.path(),
        &[
            &mine,
            "main",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--",
            "python3",
            "-c",
            ASK_SERVICE,
        ],
    )?;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(count_rows(&url)?, 0);
    nothing_left(&repo)?;
    let made = report["head"]["worktree"]
        .as_str()
        .ok_or("no head worktree")?;
    let made_database = format!("testdb_{}", made.replace('-', "_"));

    // The existing worktree is untouched otherwise: still there, ready,
    // not locked, with its database and ports; the made one's are gone.
    let shown = json(repo.path(), &["show", &mine])?;
    assert_eq!(shown["state"], "ready", "{shown:#}");
    let databases = database_names(repo.path())?;
    assert!(databases.iter().any(|d| d == database), "{databases:?}");
    // (The server is shared by every test: only this repository's names.)
    assert!(!databases.contains(&made_database), "{databases:?}");
    // Leases are host-wide (other tests run beside this one): only this
    // repository's owners, `isolane-<repo hash>-<id>`, count.
    let owners: Vec<String> = leases(repo.path())?.into_iter().map(|(o, _)| o).collect();
    let prefix = owners
        .iter()
        .find_map(|o| o.strip_suffix(mine.as_str()))
        .ok_or("no lease of the existing worktree")?;
    let made = format!("{prefix}test-compare-");
    assert!(!owners.iter().any(|o| o.starts_with(&made)), "{owners:?}");
    ok(repo.path(), &["remove", "--force", &mine])?;
    Ok(())
}

/// Starts `isolane compare BASE HEAD` with a CMD that runs for a minute,
/// and returns once CMD runs on the first side: isolane's process (stderr
/// piped) and CMD's pid.
fn compare_with_a_long_cmd(
    repo: &GitRepo,
    base: &str,
    head: &str,
    marks: &Path,
) -> TestResult<(std::process::Child, i32)> {
    // CMD writes its pid, then becomes a long sleep.
    let cmd = format!(
        "echo $$ > '{}'/pid.tmp && mv '{0}'/pid.tmp '{0}'/pid; exec sleep 60",
        marks.display()
    );
    let mut child = crate::isolane(repo.path())
        .args(["compare", base, head, "--", "sh", "-c", &cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid_file = marks.join("pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pid_file.exists() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("CMD never started: {stderr}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, std::fs::read_to_string(&pid_file)?.trim().parse()?))
}

#[test]
fn a_stop_signal_removes_what_it_made_and_nothing_else() -> TestResult {
    let repo = fixture(NO_DB)?;
    ok(
        repo.path(),
        &["create", "--purpose", "test-cmp", "--identifier", "kept"],
    )?;
    let same = output(
        repo.path(),
        &["compare", "test-cmp-kept", "test-cmp-kept", "--", "true"],
    )?;
    assert_eq!(same.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&same.stderr).contains("the same worktree"));
    let marks = tempfile::tempdir()?;
    let (child, cmd_pid) = compare_with_a_long_cmd(&repo, "test-cmp-kept", "slow", marks.path())?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // CMD got the signal too (it was isolane's child, and is reaped).
    let cmd = nix::unistd::Pid::from_raw(cmd_pid);
    assert!(nix::sys::signal::kill(cmd, None).is_err(), "CMD still runs");
    nothing_left(&repo)?;
    let shown = json(repo.path(), &["show", "test-cmp-kept"])?;
    assert_eq!(shown["state"], "ready", "{shown:#}");
    ok(repo.path(), &["remove", "test-cmp-kept"])?;
    Ok(())
}

#[test]
fn revisions_are_read_where_the_user_stands() -> TestResult {
    let repo = fixture(NO_DB)?;
    let created = json(
        repo.path(),
        &[
            "create",
            "--purpose",
            "test-cmp",
            "--identifier",
            "here",
            "--branch",
            "slow",
        ],
    )?;
    let inside = Path::new(created["path"].as_str().ok_or("no path")?).to_owned();
    let (code, report) = compare(
        &inside,
        &[
            "main", "HEAD", "--runs", "1", "--warmup", "0", "--", "sh", "bench.sh",
        ],
    )?;
    assert_eq!(code, Some(0), "{report:#}");
    let slow = repo.git(["rev-parse", "slow"])?;
    let main = repo.git(["rev-parse", "main"])?;
    assert_eq!(report["head"]["commit"].as_str(), Some(slow.trim()));
    assert_eq!(report["base"]["commit"].as_str(), Some(main.trim()));
    // One run per side gives no interval, and so no verdict beyond "no
    // difference", even on a 3x figure.
    assert_eq!(verdict(&report, "work")?, "no-difference");
    nothing_left(&repo)?;
    ok(repo.path(), &["remove", "--force", "test-cmp-here"])?;
    Ok(())
}

#[test]
fn what_a_killed_comparison_made_is_taken_back_by_the_next() -> TestResult {
    let repo = fixture(NO_DB)?;
    let marks = tempfile::tempdir()?;
    let (mut child, cmd_pid) = compare_with_a_long_cmd(&repo, "main", "slow", marks.path())?;
    child.kill()?; // SIGKILL: no cleanup at all
    child.wait()?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cmd_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let left = worktree_ids(&repo)?;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|id| id.starts_with("test-compare-")));

    // The next comparison takes them back (and keeps its own, on purpose).
    let out = output(
        repo.path(),
        &[
            "compare", "main", "same", "--runs", "1", "--warmup", "0", "--keep", "--json", "--",
            "true",
        ],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("made by a comparison that was killed"),
        "{stderr}"
    );
    let kept: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let kept_ids = [
        kept["base"]["worktree"].as_str().ok_or("no base")?,
        kept["head"]["worktree"].as_str().ok_or("no head")?,
    ];
    // Worktrees kept on purpose are not taken back by the one after.
    let out = output(
        repo.path(),
        &[
            "compare", "main", "same", "--runs", "1", "--warmup", "0", "--", "true",
        ],
    )?;
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("taking back"), "{stderr}");
    let mut now = worktree_ids(&repo)?;
    now.sort_unstable();
    let mut expected = kept_ids.map(str::to_owned).to_vec();
    expected.sort_unstable();
    assert_eq!(now, expected);
    for id in kept_ids {
        ok(repo.path(), &["remove", "--force", id])?;
    }
    nothing_left(&repo)
}
