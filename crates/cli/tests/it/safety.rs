//! The safety properties of DESIGN.md, each tried end to end against the
//! `isolane` binary, real git and the embedded PostgreSQL server:
//!
//! 1. A database without our owner record is never dropped (remove, gc,
//!    `db clean`, a prefix match, `doctor --fix`). Ours means: a pg-isolate
//!    owner record of a named database labelled with this repository's
//!    owner prefix and a worktree id, on the very name `create` gives that
//!    worktree. A record copied onto another name is not ours. (A record
//!    forged byte for byte on the exact name is indistinguishable from the
//!    leftover of a create killed after its database step, and is dropped
//!    as such by `doctor --fix` and `db clean`: writing it takes the rights
//!    to drop the database anyway.)
//! 2. A dirty or unmerged worktree is never deleted without `--force`.
//! 3. A process we did not start is never signalled. Services are stopped by
//!    their process group; a daemon that leaves the group (`setsid`) is no
//!    longer provably ours and is left running, never hunted by name. The
//!    embedded server's stale `postmaster.pid` naming a foreign live process
//!    is covered by pg-isolate's
//!    `server::stale_pid_file_naming_a_foreign_process_is_never_signalled`.
//! 4. Files outside the repository's worktrees dir are never created or
//!    deleted: names and configs that point outside are refused, and
//!    symlinks (a worktree path, the worktrees dir, a committed link) are
//!    never followed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::{GitRepo, TestResult, tree_snapshot};

use crate::{alive, json, ok, output, repo_with_config};

// ----- helpers ---------------------------------------------------------------

/// The registry document of `repo`, as JSON.
fn registry_path(repo: &GitRepo) -> PathBuf {
    repo.path().join(".git/isolane/registry.json")
}

/// Changes the registry entry `id` by hand (as a user, a crash or an
/// attacker could), writing the file atomically.
fn edit_entry(repo: &GitRepo, id: &str, change: impl FnOnce(&mut serde_json::Value)) -> TestResult {
    let path = registry_path(repo);
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let entry = doc["data"]["entries"]
        .get_mut(id)
        .ok_or_else(|| format!("no registry entry {id}"))?;
    change(entry);
    let tmp = path.with_extension("json.edit");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Removes the registry entry `id` by hand.
fn drop_entry(repo: &GitRepo, id: &str) -> TestResult {
    let path = registry_path(repo);
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    doc["data"]["entries"]
        .as_object_mut()
        .ok_or("no entries")?
        .remove(id)
        .ok_or_else(|| format!("no registry entry {id}"))?;
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    Ok(())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs isolane and requires it to fail with `code` and `needle` in its
/// stderr.
fn refused(dir: &Path, args: &[&str], code: i32, needle: &str) -> TestResult {
    let out = output(dir, args)?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    Ok(())
}

/// A process the test starts itself, outside isolane: `sleep 300`, the same
/// command line the services below run, so a kill by name would hit it.
struct Foreign(Child);

impl Foreign {
    fn start(dir: &Path) -> TestResult<Self> {
        Ok(Self(
            Command::new("sleep")
                .arg("300")
                .current_dir(dir)
                .stdin(Stdio::null())
                .spawn()?,
        ))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn assert_alive(&mut self, context: &str) -> TestResult {
        assert!(
            self.0.try_wait()?.is_none() && alive(self.pid()),
            "{context}: the foreign process {} was signalled",
            self.pid()
        );
        Ok(())
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> TestResult<u32> {
    let mut child = Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

/// A directory with files in it, outside every repository.
fn outside_tree(base: &Path) -> TestResult<PathBuf> {
    let outside = base.join("outside");
    std::fs::create_dir_all(outside.join("keep/nested"))?;
    std::fs::write(outside.join("precious.txt"), "not isolane's\n")?;
    std::fs::write(outside.join("keep/nested/deep.txt"), "deep\n")?;
    Ok(outside)
}

/// Everything beside the repository (in its temporary directory), the
/// repository itself left out.
fn beside(repo: &GitRepo) -> TestResult<BTreeMap<PathBuf, String>> {
    let base = repo.path().parent().ok_or("no parent")?;
    let mut all = tree_snapshot(base)?;
    all.retain(|path, _| !path.starts_with("repo"));
    Ok(all)
}

// ----- 1. databases ----------------------------------------------------------

/// The admin URL of the server a worktree's database lives on.
fn admin_url(repo: &GitRepo, id: &str) -> TestResult<String> {
    let env = ok(repo.path(), &["env", id])?;
    let url = env
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .ok_or("no DATABASE_URL")?
        .trim_matches(['\'', '"']);
    let (base, rest) = url.rsplit_once('/').ok_or("no database in the URL")?;
    let query = rest.find('?').map_or("", |at| &rest[at..]);
    Ok(format!("{base}/postgres{query}"))
}

fn comment_of(client: &mut postgres::Client, name: &str) -> TestResult<Option<Option<String>>> {
    Ok(client
        .query_opt(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&name],
        )?
        .map(|row| row.get(0)))
}

#[test]
fn databases_without_our_owner_record_survive_remove_gc_db_clean_and_doctor() -> TestResult {
    let repo = repo_with_config("")?;
    let root = repo.path();
    // Names unique to this run: databases are host-wide, and a run that
    // failed midway must not make the next one fail.
    let purpose = format!("test-s{}", std::process::id());
    let stem = purpose.replace('-', "_");
    let id = |name: &str| format!("{purpose}-{name}");
    let db = |name: &str| format!("testdb_{stem}_{name}");
    for identifier in ["keep", "victim", "stale"] {
        ok(
            root,
            &["create", "--purpose", &purpose, "--identifier", identifier],
        )?;
    }
    let mut admin = postgres::Client::connect(&admin_url(&repo, &id("keep"))?, postgres::NoTls)?;
    let rows = json(root, &["db", "list"])?;
    let keep = rows
        .as_array()
        .ok_or("not an array")?
        .iter()
        .find(|r| r["worktree"] == id("keep").as_str())
        .ok_or("no database of the keep worktree")?;
    let label = keep["label"].as_str().ok_or("no label")?;
    let our_prefix = label.strip_suffix(&id("keep")).ok_or("odd label")?;
    let record = |tool: &str, label: &str| {
        serde_json::json!({
            "tool": tool, "kind": "named", "host": "elsewhere", "boot_id": "",
            "pid": 1, "start_time": 0, "created": 0, "label": label,
        })
        .to_string()
    };

    // Every name matches the configured prefix (`testdb_`) and looks like a
    // test worktree's database.
    let ghost = format!("{our_prefix}{}", id("ghost"));
    let foreign: Vec<(String, Option<String>)> = vec![
        (db("plain"), None),
        (db("free_text"), Some("hand-made, keep".to_owned())),
        (
            db("other_repo"),
            Some(record(
                "pg-isolate",
                &format!("isolane-00000000-{}", id("other")),
            )),
        ),
        (db("other_tool"), Some(record("other-tool", &ghost))),
        // Our label for a worktree this repository does not have, on a name
        // that is not the one isolane gives it.
        (db("forged"), Some(record("pg-isolate", &ghost))),
        // Our label of a live worktree, copied onto another name.
        (db("keep_copy"), Some(record("pg-isolate", label))),
        (db("registered"), None),
    ];
    for (name, comment) in &foreign {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))?;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        if let Some(comment) = comment {
            let quoted = comment.replace('\'', "''");
            admin.batch_execute(&format!("COMMENT ON DATABASE \"{name}\" IS '{quoted}'"))?;
        }
    }
    // A registry entry whose database field names a foreign database.
    edit_entry(&repo, &id("victim"), |e| {
        e["database"] = db("registered").into();
    })?;

    // Nothing foreign is listed as ours.
    let listed = json(root, &["db", "list"])?;
    for (name, _) in &foreign {
        let row = listed
            .as_array()
            .ok_or("not an array")?
            .iter()
            .find(|r| r["name"] == name.as_str());
        assert!(
            row.is_none_or(|r| r["worktree"].is_null()),
            "{name} is listed as a worktree's: {row:?}"
        );
    }

    ok(root, &["remove", &id("victim")])?;
    ok(
        root,
        &["gc", "--max-age", "0s", "--purpose-prefix", &purpose],
    )?;
    ok(root, &["db", "clean"])?;
    ok(
        root,
        &["db", "clean", "--prefix", &format!("testdb_{stem}")],
    )?;
    ok(root, &["db", "clean", "--prefix", "testdb_"])?;
    // Ours and unreferenced (what the victim's remove left, as its entry
    // pointed elsewhere) is found; nothing foreign is.
    let _ = output(root, &["doctor", "--fix"])?;

    for (name, comment) in &foreign {
        assert_eq!(
            comment_of(&mut admin, name)?,
            Some(comment.clone()),
            "foreign database {name} was dropped or changed"
        );
    }
    // The databases isolane did create are gone: the commands really ran.
    for name in [db("keep"), db("victim"), db("stale")] {
        assert_eq!(comment_of(&mut admin, &name)?, None, "{name} is left over");
    }
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    for (name, _) in &foreign {
        admin.batch_execute(&format!("DROP DATABASE \"{name}\""))?;
    }
    Ok(())
}

// ----- 2. work ---------------------------------------------------------------

#[test]
fn dirty_or_unmerged_worktrees_are_never_deleted_without_force() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let root = repo.path();
    // Two branches that change README.md differently, for a merge conflict.
    for (branch, text) in [("conflict-a", "a\n"), ("conflict-b", "b\n")] {
        repo.git(["checkout", "--quiet", "-b", branch, "main"])?;
        repo.write("README.md", text)?;
        repo.commit_all(branch)?;
    }
    repo.git(["checkout", "--quiet", "main"])?;

    type Spoil = fn(&Path) -> TestResult;
    let cases: [(&str, Spoil, &str); 6] = [
        (
            "modified",
            |wt| Ok(std::fs::write(wt.join("README.md"), "changed\n")?),
            "README.md",
        ),
        (
            "untracked",
            |wt| Ok(std::fs::write(wt.join("notes.txt"), "mine\n")?),
            "notes.txt",
        ),
        (
            "staged",
            |wt| {
                std::fs::write(wt.join("staged.txt"), "staged\n")?;
                test_support::git(wt, ["add", "staged.txt"])?;
                Ok(())
            },
            "staged.txt",
        ),
        (
            "deleted",
            |wt| Ok(std::fs::remove_file(wt.join("README.md"))?),
            "README.md",
        ),
        (
            "unpushed",
            |wt| {
                std::fs::write(wt.join("feature.txt"), "committed\n")?;
                test_support::git(wt, ["add", "feature.txt"])?;
                test_support::git(wt, ["commit", "--quiet", "-m", "only here"])?;
                Ok(())
            },
            "commit(s) exist nowhere else",
        ),
        (
            "conflict",
            |wt| {
                test_support::git(wt, ["reset", "--quiet", "--hard", "conflict-a"])?;
                let merge = test_support::git_command(wt)
                    .args(["merge", "--no-edit", "conflict-b"])
                    .output()?;
                assert!(!merge.status.success(), "the merge did not conflict");
                Ok(())
            },
            "README.md",
        ),
    ];

    let mut snapshots = BTreeMap::new();
    for (identifier, spoil, _) in &cases {
        ok(
            root,
            &[
                "create",
                "--purpose",
                "test-work",
                "--identifier",
                identifier,
            ],
        )?;
        let path = root.join(format!("worktrees/test-work-{identifier}"));
        spoil(&path)?;
        snapshots.insert(*identifier, tree_snapshot(&path)?);
    }
    let intact = |context: &str| -> TestResult {
        for (identifier, before) in &snapshots {
            let path = root.join(format!("worktrees/test-work-{identifier}"));
            assert_eq!(
                &tree_snapshot(&path)?,
                before,
                "{context}: test-work-{identifier} was touched"
            );
        }
        Ok(())
    };

    for (identifier, _, reason) in &cases {
        let id = format!("test-work-{identifier}");
        let out = output(root, &["remove", &id])?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "remove {id}: {err}");
        assert!(
            err.contains("was kept") && err.contains("--force"),
            "{id}: {err}"
        );
        assert!(err.contains(reason), "{id}: expected {reason:?} in {err}");
    }
    intact("remove")?;

    let gc = json(root, &["gc", "--max-age", "0s"])?;
    assert_eq!(gc["removed"], serde_json::json!([]), "{gc}");
    assert_eq!(
        gc["skipped"].as_array().map(Vec::len),
        Some(cases.len()),
        "{gc}"
    );
    intact("gc")?;

    // Work found by the repairs: an interrupted remove (its process gone)
    // is carried on without force, and a worktree the registry lost is
    // reported, not deleted.
    let dead = dead_pid()?;
    edit_entry(&repo, "test-work-modified", |e| {
        e["phase"] = "removing".into();
        e["actor"] = serde_json::json!({ "pid": dead, "start_time": 1 });
    })?;
    drop_entry(&repo, "test-work-untracked")?;
    let doctor = output(root, &["doctor", "--fix"])?;
    assert_eq!(doctor.status.code(), Some(1), "{}", stderr(&doctor));
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains("it holds work"), "{report}");
    intact("doctor --fix")?;
    let gc = output(root, &["gc", "--max-age", "0s"])?;
    assert_eq!(gc.status.code(), Some(1), "{}", stderr(&gc));
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("was kept"),
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
    intact("gc of an interrupted remove")?;

    // With --force it goes (the lost entry is registered again by hand:
    // only git knows it now).
    for (identifier, _, _) in &cases {
        let id = format!("test-work-{identifier}");
        if *identifier == "untracked" {
            continue;
        }
        ok(root, &["remove", "--force", &id])?;
        assert!(!root.join("worktrees").join(&id).exists(), "{id}");
    }
    let untracked = root.join("worktrees/test-work-untracked");
    assert!(untracked.join("notes.txt").exists());
    repo.git([
        "worktree",
        "remove",
        "--force",
        untracked.to_str().ok_or("path")?,
    ])?;
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    Ok(())
}

// ----- 3. processes ----------------------------------------------------------

#[test]
fn a_registry_actor_naming_a_foreign_live_process_is_never_signalled() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let root = repo.path();
    let mut foreign = Foreign::start(root.parent().ok_or("no parent")?)?;
    let real = registry::ProcessIdentity::of_pid(foreign.pid()).ok_or("sleep is gone")?;
    for identifier in ["reused", "live"] {
        ok(
            root,
            &[
                "create",
                "--purpose",
                "test-actor",
                "--identifier",
                identifier,
            ],
        )?;
    }
    // The foreign pid with a wrong start time: a recycled pid, so the
    // remove that recorded it is over (abandoned). With the right start
    // time: that process is at work on it, so it is left alone.
    edit_entry(&repo, "test-actor-reused", |e| {
        e["phase"] = "removing".into();
        e["actor"] = serde_json::json!({ "pid": real.pid, "start_time": real.start_time + 1 });
    })?;
    edit_entry(&repo, "test-actor-live", |e| {
        e["phase"] = "removing".into();
        e["actor"] = serde_json::json!({ "pid": real.pid, "start_time": real.start_time });
    })?;

    let doctor = output(root, &["doctor", "--fix"])?;
    assert!(doctor.status.success(), "{}", stderr(&doctor));
    foreign.assert_alive("doctor --fix")?;
    let gc = json(root, &["gc", "--max-age", "0s"])?;
    foreign.assert_alive("gc")?;
    assert_eq!(gc["errors"], serde_json::json!([]), "{gc}");
    let listed = json(root, &["list"])?;
    let ids: Vec<&str> = listed
        .as_array()
        .ok_or("not an array")?
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["test-actor-live"], "{listed}");
    assert!(!root.join("worktrees/test-actor-reused").exists());
    assert!(root.join("worktrees/test-actor-live/README.md").exists());

    // Once that process is done with it, it is finished like any other.
    let dead = dead_pid()?;
    edit_entry(&repo, "test-actor-live", |e| {
        e["actor"] = serde_json::json!({ "pid": dead, "start_time": 1 });
    })?;
    ok(root, &["gc"])?;
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    foreign.assert_alive("the end")?;
    Ok(())
}

fn read_pid(path: &Path) -> TestResult<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(format!("{} was never written", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_daemon_that_leaves_its_service_group_is_stopped_and_foreign_processes_survive() -> TestResult {
    let repo = GitRepo::new()?;
    let pids = repo.path().parent().ok_or("no parent")?.join("pids");
    std::fs::create_dir_all(&pids)?;
    let p = pids.display();
    // The service: a child in its group, a daemon that double-forks out of
    // it into its own session, and the leader; all three run `sleep 300`.
    repo.write(
        "isolane.toml",
        format!(
            "[database]\nenabled = false\n\n[[services]]\nname = \"svc\"\n\
             command = \"sleep 300 & echo $! > {p}/child.pid; \
             (setsid sh -c 'echo $$ > {p}/daemon.pid; exec sleep 300' &); \
             echo $$ > {p}/leader.pid; exec sleep 300\"\n\
             ready = \"test -s {p}/daemon.pid && test -s {p}/leader.pid\"\n"
        ),
    )?;
    repo.commit_all("configure isolane")?;
    let root = repo.path();
    ok(
        root,
        &["create", "--purpose", "test-proc", "--identifier", "a"],
    )?;
    let worktree = root.join("worktrees/test-proc-a");
    // Started by the test in the worktree itself, with the same command
    // line as the service's processes.
    let mut foreign = Foreign::start(&worktree)?;

    ok(root, &["run", "test-proc-a", "--", "true"])?;
    let (child, leader, daemon) = (
        read_pid(&pids.join("child.pid"))?,
        read_pid(&pids.join("leader.pid"))?,
        read_pid(&pids.join("daemon.pid"))?,
    );
    foreign.assert_alive("run")?;
    assert!(
        !alive(leader),
        "the service leader {leader} outlived the run"
    );
    assert!(
        !alive(child),
        "the service's child {child} outlived the run"
    );
    // The daemon left the group isolane started, but still carries the
    // run's token: it is stopped too, by its verified identity. The
    // foreign process, with the same command line, is not.
    let daemon_survived = alive(daemon);
    // Never left running, whatever the outcome.
    let _ = kill(Pid::from_raw(i32::try_from(daemon)?), Signal::SIGKILL);
    assert!(!daemon_survived, "the daemon {daemon} outlived the run");

    ok(root, &["remove", "--force", "test-proc-a"])?;
    foreign.assert_alive("remove")?;
    Ok(())
}

// ----- 4. files --------------------------------------------------------------

#[test]
fn names_and_configs_pointing_outside_never_touch_files_there() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let root = repo.path();
    let base = root.parent().ok_or("no parent")?;
    let outside = outside_tree(base)?;
    let before = beside(&repo)?;
    let abs = outside.join("abs");
    let abs = abs.to_str().ok_or("path")?;

    for (purpose, identifier) in [
        ("..", "x"),
        ("test", "../../outside"),
        ("../outside", "x"),
        ("test", "a/../../x"),
        ("test/..", "x"),
        (abs, "x"),
        ("test", abs),
    ] {
        refused(
            root,
            &["create", "--purpose", purpose, "--identifier", identifier],
            2,
            "invalid",
        )?;
        assert_eq!(beside(&repo)?, before, "{purpose} {identifier}");
    }

    let worktrees_dir = |value: &str| -> TestResult {
        std::fs::write(
            root.join("isolane.toml"),
            format!("worktrees_dir = {value:?}\n[database]\nenabled = false\n"),
        )?;
        Ok(())
    };
    for value in ["../outside", "..", abs, "a/../../outside"] {
        worktrees_dir(value)?;
        refused(
            root,
            &["create", "--purpose", "test", "--identifier", "x"],
            2,
            "inside the repository",
        )?;
        assert_eq!(beside(&repo)?, before, "worktrees_dir = {value}");
    }
    // Inside the repository on paper, outside through a symlink: refused
    // before anything is made.
    std::os::unix::fs::symlink(&outside, root.join("escape"))?;
    worktrees_dir("escape/wt")?;
    refused(
        root,
        &["create", "--purpose", "test", "--identifier", "x"],
        1,
        "refusing to follow",
    )?;
    std::fs::remove_file(root.join("escape"))?;
    worktrees_dir("worktrees")?;
    std::fs::remove_dir_all(root.join("worktrees")).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    std::os::unix::fs::symlink(&outside, root.join("worktrees"))?;
    refused(
        root,
        &["create", "--purpose", "test", "--identifier", "x"],
        1,
        "refusing to follow",
    )?;
    refused(root, &["gc", "--max-age", "0s"], 1, "refusing to follow")?;
    refused(root, &["doctor", "--fix"], 1, "refusing to follow")?;
    assert_eq!(beside(&repo)?, before, "symlinked worktrees dir");
    Ok(())
}

#[test]
fn symlinks_in_the_worktrees_dir_are_never_followed() -> TestResult {
    let repo = GitRepo::new()?;
    let base = repo.path().parent().ok_or("no parent")?.to_owned();
    let outside = outside_tree(&base)?;
    // A committed symlink out of the tree, and a hook that would leave a
    // file wherever it runs.
    std::os::unix::fs::symlink(&outside, repo.path().join("link"))?;
    repo.write(
        "isolane.toml",
        "[database]\nenabled = false\n\n[hooks]\npre_remove = [\"touch hook-ran-here\"]\n",
    )?;
    repo.commit_all("configure isolane, link out")?;
    let root = repo.path();
    let before = beside(&repo)?;

    // A symlink where a new worktree would go: create refuses.
    std::fs::create_dir_all(root.join("worktrees"))?;
    std::os::unix::fs::symlink(&outside, root.join("worktrees/test-sym-x"))?;
    refused(
        root,
        &["create", "--purpose", "test-sym", "--identifier", "x"],
        2,
        "already exists",
    )?;
    std::fs::remove_file(root.join("worktrees/test-sym-x"))?;
    assert_eq!(beside(&repo)?, before, "create over a symlink");

    // A registered worktree whose directory was replaced by a symlink out.
    ok(
        root,
        &["create", "--purpose", "test-sym", "--identifier", "swapped"],
    )?;
    let swapped = root.join("worktrees/test-sym-swapped");
    let parked = base.join("parked");
    std::fs::rename(&swapped, &parked)?;
    std::os::unix::fs::symlink(&outside, &swapped)?;
    let before_parked = beside(&repo)?;
    for args in [
        &["remove", "test-sym-swapped"][..],
        &["remove", "--force", "test-sym-swapped"],
        &["run", "test-sym-swapped", "--", "true"],
    ] {
        let out = output(root, args)?;
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(beside(&repo)?, before_parked, "{args:?}: {}", stderr(&out));
    }
    let _ = output(root, &["gc", "--max-age", "0s"])?;
    let _ = output(root, &["doctor", "--fix"])?;
    assert_eq!(beside(&repo)?, before_parked, "gc / doctor --fix");
    assert_eq!(
        json(root, &["list"])?.as_array().map(Vec::len),
        Some(1),
        "the entry is kept until the link is sorted out"
    );
    // The real worktree moved outside and linked back (its `.git` file
    // still names its admin entry): still never followed.
    std::fs::remove_file(&swapped)?;
    std::os::unix::fs::symlink(&parked, &swapped)?;
    let with_link = beside(&repo)?;
    refused(
        root,
        &["remove", "--force", "test-sym-swapped"],
        1,
        "refusing to follow",
    )?;
    assert_eq!(
        beside(&repo)?,
        with_link,
        "remove of a linked-back worktree"
    );
    // The user removes the link: the entry goes, the files stay.
    std::fs::remove_file(&swapped)?;
    ok(root, &["remove", "--force", "test-sym-swapped"])?;
    assert_eq!(beside(&repo)?, with_link, "after the link was removed");
    std::fs::remove_dir_all(&parked)?;

    // A worktree holding the committed link: removing it unlinks, never
    // deletes through it.
    ok(
        root,
        &["create", "--purpose", "test-sym", "--identifier", "link"],
    )?;
    let linked = root.join("worktrees/test-sym-link");
    assert!(
        std::fs::symlink_metadata(linked.join("link"))?
            .file_type()
            .is_symlink()
    );
    ok(root, &["run", "test-sym-link", "--", "ls", "link/keep"])?;
    std::fs::write(linked.join("scratch.txt"), "dirty\n")?;
    ok(root, &["remove", "--force", "test-sym-link"])?;
    assert!(!linked.exists());
    assert_eq!(
        beside(&repo)?,
        before,
        "remove of a worktree with a link out"
    );
    assert_eq!(json(root, &["list"])?, serde_json::json!([]));
    Ok(())
}
