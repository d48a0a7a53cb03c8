//! Two real unix users on one host: each with their own repository and
//! their own state directory, leasing at the same time, never share a port.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use test_support::{GitRepo, TestResult};

/// How many worktrees each user creates, and in how many parallel streams.
const PER_USER: usize = 20;
const STREAMS: usize = 4;
/// The first port of the range both users lease from: below Linux's usual
/// ephemeral start (32768), away from the other tests' ranges.
const FIRST_PORT: u16 = 32300;

/// A unix account made for the test and deleted afterwards.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

impl Account {
    fn create() -> TestResult<Self> {
        let name = format!("isolane-t{}", std::process::id());
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .status()?;
        if !status.success() {
            return Err(format!("useradd {name} failed: {status}").into());
        }
        let user = nix::unistd::User::from_name(&name)?.ok_or("the new account is not found")?;
        Ok(Self {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// One user's side: who runs, where the repository and the state are.
struct Side {
    account: Option<(u32, u32)>,
    repo: PathBuf,
    state: PathBuf,
    home: PathBuf,
}

impl Side {
    fn command(&self, binary: &Path, claims: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .current_dir(&self.repo)
            .env("ISOLANE_STATE_DIR", &self.state)
            .env("ISOLANE_PORT_CLAIMS_DIR", claims)
            .env("HOME", &self.home)
            .env_remove("XDG_STATE_HOME")
            .env_remove("ISOLANE_FAULT")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        if let Some((uid, gid)) = self.account {
            command.uid(uid).gid(gid);
        }
        command
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> TestResult {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()?;
    if !status.success() {
        return Err(format!("chown -R {} failed", path.display()).into());
    }
    Ok(())
}

#[test]
fn two_users_leasing_at_once_get_disjoint_ports() -> TestResult {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "\n!!! users::two_users_leasing_at_once_get_disjoint_ports NOT RUN: it needs root \
             to create a second unix account (CI runs it as root) !!!\n"
        );
        return Ok(());
    }
    let other = Account::create()?;
    // Everything the other user needs, readable by them: the binary, their
    // repository and state, and the host-wide claims directory.
    let shared = tempfile::tempdir()?;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755))?;
    let binary = shared.path().join("isolane");
    std::fs::copy(env!("CARGO_BIN_EXE_isolane"), &binary)?;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))?;
    // Made by root, as the README asks of a multi-user host (the first
    // user's isolane could not create it in a directory of root's).
    let claims = shared.path().join("claims");
    std::fs::create_dir(&claims)?;
    std::fs::set_permissions(&claims, std::fs::Permissions::from_mode(0o1777))?;

    // Exactly the ports both users need between them: a port leased to
    // both would leave one of them short.
    let config = format!(
        "[database]\nenabled = false\n\n[ports]\nrange = [{FIRST_PORT}, {}]\n",
        FIRST_PORT + 4 * PER_USER as u16 - 1
    );
    let mine = GitRepo::new()?;
    let theirs = GitRepo::new()?;
    for repo in [&mine, &theirs] {
        repo.write("isolane.toml", &config)?;
        repo.commit_all("configure isolane")?;
    }
    let their_base = theirs.path().parent().ok_or("no parent")?;
    std::fs::create_dir(their_base.join("state"))?;
    std::fs::create_dir(their_base.join("home"))?;
    chown_tree(their_base, other.uid, other.gid)?;
    let my_base = mine.path().parent().ok_or("no parent")?;
    let sides = [
        Side {
            account: None,
            repo: mine.path().to_owned(),
            state: my_base.join("state"),
            home: my_base.to_owned(),
        },
        Side {
            account: Some((other.uid, other.gid)),
            repo: theirs.path().to_owned(),
            state: their_base.join("state"),
            home: their_base.join("home"),
        },
    ];

    // Both users at once, each in several parallel streams.
    std::thread::scope(|scope| -> TestResult {
        let mut handles = Vec::new();
        for (who, side) in sides.iter().enumerate() {
            for stream in 0..STREAMS {
                let (side, binary, claims) = (side, &binary, &claims);
                handles.push(scope.spawn(move || -> Result<(), String> {
                    for n in (stream..PER_USER).step_by(STREAMS) {
                        let out = side
                            .command(binary, claims)
                            .args(["create", "--purpose", "test-users"])
                            .args(["--identifier", &format!("u{who}-{n}")])
                            .output()
                            .map_err(|e| e.to_string())?;
                        if !out.status.success() {
                            return Err(format!(
                                "user {who}, create {n}: {}",
                                String::from_utf8_lossy(&out.stderr)
                            ));
                        }
                    }
                    Ok(())
                }));
            }
        }
        for handle in handles {
            handle.join().map_err(|_| "a create stream panicked")??;
        }
        Ok(())
    })?;

    let mut ports: Vec<BTreeSet<u16>> = Vec::new();
    for side in &sides {
        let out = side
            .command(&binary, &claims)
            .args(["list", "--json"])
            .output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rows = list.as_array().ok_or("list --json is not an array")?;
        assert_eq!(rows.len(), PER_USER);
        ports.push(
            rows.iter()
                .flat_map(|row| row["ports"].as_object().into_iter().flatten())
                .filter_map(|(_, port)| port.as_u64())
                .map(|port| port as u16)
                .collect(),
        );
    }
    // APP_PORT and API_PORT each: 40 distinct ports per user.
    assert_eq!(
        (ports[0].len(), ports[1].len()),
        (2 * PER_USER, 2 * PER_USER)
    );
    let shared_ports: Vec<&u16> = ports[0].intersection(&ports[1]).collect();
    assert!(
        shared_ports.is_empty(),
        "leased to both users: {shared_ports:?}"
    );

    // Neither user can take the other's claims away: the directory is
    // sticky, and each claim belongs to its user.
    let mode = std::fs::metadata(&claims)?.permissions().mode();
    assert_eq!(mode & 0o1777, 0o1777);
    let mine = claims.join(ports[0].first().ok_or("no port")?.to_string());
    let deleted = Command::new("rm")
        .arg("-f")
        .arg(&mine)
        .stderr(std::process::Stdio::null())
        .uid(other.uid)
        .gid(other.gid)
        .status()?;
    assert!(!deleted.success(), "the other user deleted root's claim");
    assert!(mine.exists());

    // A user pointed at the other's state directory is refused at once,
    // before anything is recorded.
    let out = sides[1]
        .command(&binary, &claims)
        .env("ISOLANE_STATE_DIR", &sides[0].state)
        .args([
            "create",
            "--purpose",
            "test-users",
            "--identifier",
            "intruder",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("belongs to uid 0"), "{stderr}");
    let list = sides[1]
        .command(&binary, &claims)
        .args(["list", "--json"])
        .output()?;
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(PER_USER),
        "an entry was recorded"
    );

    for (who, side) in sides.iter().enumerate() {
        for n in 0..PER_USER {
            let out = side
                .command(&binary, &claims)
                .args(["remove", &format!("test-users-u{who}-{n}")])
                .output()?;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Every claim went with its lease.
    let left: Vec<_> = std::fs::read_dir(&claims)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u16>().is_ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "claims left: {left:?}");
    Ok(())
}
