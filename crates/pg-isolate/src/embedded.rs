//! The embedded server: finding the binaries, a cached initialised cluster,
//! a shared detached server started under a file lock, an idle watchdog.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Where the embedded server's binaries and cluster live and how it runs.
///
/// The defaults are safe: a per-host shared cluster in the cache directory
/// (see the crate docs for where), stopped after five idle minutes.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The directory holding `postgres` and `initdb`. When unset:
    /// `PG_ISOLATE_BINDIR`, then `pg_config --bindir`, then `PATH`, then the
    /// newest `/usr/lib/postgresql/<major>/bin`.
    pub bindir: Option<PathBuf>,
    /// The directory holding one cluster per major version. When unset:
    /// `PG_ISOLATE_CACHE_DIR`, then (as root) `/var/tmp/isolane-pg-0`, else
    /// `$XDG_CACHE_HOME/isolane/pg` (`~/.cache/isolane/pg`).
    pub cache_dir: Option<PathBuf>,
    /// The server stops itself after this long without any client
    /// connection. Applied by the process that starts the server.
    pub idle_timeout: Duration,
    /// `max_connections` of a server started by this process.
    pub max_connections: u32,
    /// How long to wait for a starting server to accept connections.
    pub start_timeout: Duration,
    /// The account the server runs as when the caller is root.
    pub server_account: String,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            bindir: None,
            cache_dir: None,
            idle_timeout: Duration::from_secs(300),
            max_connections: 300,
            start_timeout: Duration::from_secs(60),
            server_account: "postgres".to_owned(),
        }
    }
}

/// The superuser of the embedded cluster.
pub(crate) const SUPERUSER: &str = "postgres";

/// What a start of the embedded server found left behind by a previous
/// server that did not shut down (killed with SIGKILL, by the OOM killer, a
/// power loss), and cleaned up before starting a new one. PostgreSQL then
/// replays its write-ahead log on its own; committed data survives.
///
/// Returned by [`Server::recovery`](crate::Server::recovery) and announced
/// with a `WARN` tracing event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The cluster's data directory.
    pub data_dir: PathBuf,
    /// The pid the stale `postmaster.pid` named, if there was one.
    pub stale_pid: Option<u32>,
    /// Whether that pid now belongs to another process (the pid was
    /// reused). That process was left alone: only a process running the
    /// cluster's `postgres` binary in the cluster's data directory is ever
    /// taken for its server.
    pub pid_reused: bool,
    /// The stale files removed: `postmaster.pid`, the unix socket
    /// `.s.PGSQL.<port>` and its `.lock` file.
    pub removed: Vec<PathBuf>,
    /// The pid of the server started in its place.
    pub new_pid: u32,
    /// From finding the stale files to the new server accepting
    /// connections (including PostgreSQL's own crash recovery).
    pub elapsed: Duration,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the embedded server in {} had not shut down cleanly",
            self.data_dir.display()
        )?;
        match (self.stale_pid, self.pid_reused) {
            (Some(pid), false) => write!(f, " (its pid {pid} is gone)")?,
            (Some(pid), true) => write!(
                f,
                " (its pid {pid} now belongs to another process, which was left alone)"
            )?,
            (None, _) => {}
        }
        write!(
            f,
            "; removed {} stale pid and socket files and started a new server (pid {}) in {} ms",
            self.removed.len(),
            self.new_pid,
            self.elapsed.as_millis()
        )
    }
}

/// Stale state found by one start, before the new server's pid is known.
#[derive(Debug, Default)]
struct Stale {
    found: bool,
    pid: Option<u32>,
    pid_reused: bool,
    removed: Vec<PathBuf>,
}

/// A running embedded server, with the start lock still held (shared or
/// exclusive) until the caller has connected, so the idle watchdog cannot
/// stop it in between.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) url: String,
    /// The same server over its unix socket in `run/`, when it listens
    /// there: no TCP and (with [`trust_local_socket`]) no password
    /// exchange, whose SCRAM rounds cost tens of milliseconds in an
    /// unoptimised test binary.
    pub(crate) socket_url: Option<String>,
    pub(crate) dir: PathBuf,
    /// The `psql` beside the server's binaries (else the one on `PATH`).
    pub(crate) psql: PathBuf,
    pub(crate) pid: u32,
    pub(crate) major: u32,
    /// Set when this attach cleaned up after a server that had crashed.
    pub(crate) recovery: Option<Recovery>,
    pub(crate) _lock: File,
}

/// The account the server runs as, when it differs from the caller.
#[derive(Debug, Clone, Copy)]
struct Account {
    uid: Uid,
    gid: Gid,
}

fn account(options: &EmbeddedOptions) -> Result<Option<Account>, Error> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name(&options.server_account)
        .ok()
        .flatten()
        .ok_or_else(|| Error::NoServerAccount {
            account: options.server_account.clone(),
        })?;
    if user.uid.is_root() {
        return Err(Error::NoServerAccount {
            account: options.server_account.clone(),
        });
    }
    Ok(Some(Account {
        uid: user.uid,
        gid: user.gid,
    }))
}

/// Finds the server binaries (see [`EmbeddedOptions::bindir`]).
pub(crate) fn find_bindir(options: &EmbeddedOptions, base: &Path) -> Result<PathBuf, Error> {
    let complete = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    let mut searched = Vec::new();
    let explicit = options
        .bindir
        .clone()
        .or_else(|| std::env::var_os("PG_ISOLATE_BINDIR").map(PathBuf::from));
    if let Some(dir) = explicit {
        if complete(&dir) {
            return Ok(dir);
        }
        return Err(Error::NoBinaries {
            searched: dir.display().to_string(),
        });
    }
    searched.push("`pg_config --bindir`".to_owned());
    if let Some(dir) = pg_config_bindir(base)? {
        if complete(&dir) {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    searched.push("PATH".to_owned());
    if let Some(path) = std::env::var_os("PATH") {
        for entry in std::env::split_paths(&path) {
            let candidate = entry.join("postgres");
            if candidate.is_file()
                && let Ok(real) = candidate.canonicalize()
                && let Some(dir) = real.parent()
                && complete(dir)
            {
                return Ok(dir.to_owned());
            }
        }
    }
    let debian = Path::new("/usr/lib/postgresql");
    searched.push(format!("{}/<major>/bin", debian.display()));
    if let Ok(entries) = fs::read_dir(debian) {
        let newest = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let major: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                complete(&bin).then_some((major, bin))
            })
            .max_by_key(|(major, _)| *major);
        if let Some((_, bin)) = newest {
            return Ok(bin);
        }
    }
    Err(Error::NoBinaries {
        searched: searched.join(", "),
    })
}

/// The cache directory holding one cluster per major version.
fn base_dir(options: &EmbeddedOptions, account: Option<Account>) -> Result<PathBuf, Error> {
    if let Some(dir) = options
        .cache_dir
        .clone()
        .or_else(|| std::env::var_os("PG_ISOLATE_CACHE_DIR").map(PathBuf::from))
    {
        create_dir(&dir, 0o755)?;
        return Ok(dir);
    }
    if account.is_some() {
        // Root's home is usually mode 700, so the server account could not
        // reach a cluster under /root/.cache.
        let dir = PathBuf::from("/var/tmp/isolane-pg-0");
        create_dir(&dir, 0o755)?;
        let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io("inspecting", &dir, e))?;
        if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(Error::UnusableDirectory {
                path: dir,
                reason: "it must be a real directory owned by root and writable only by root"
                    .to_owned(),
            });
        }
        return Ok(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .ok_or_else(|| Error::UnusableDirectory {
            path: PathBuf::from("~/.cache"),
            reason: "neither XDG_CACHE_HOME nor HOME is set; set PG_ISOLATE_CACHE_DIR".to_owned(),
        })?;
    let dir = cache.join("isolane").join("pg");
    create_dir(&dir, 0o755)?;
    Ok(dir)
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("setting permissions of", dir, e))
}

/// Makes `path` (a directory) owned by the server account, mode 0700.
fn own_dir(path: &Path, account: Option<Account>) -> Result<(), Error> {
    if let Some(account) = account {
        std::os::unix::fs::chown(path, Some(account.uid.as_raw()), Some(account.gid.as_raw()))
            .map_err(|e| Error::io("changing owner of", path, e))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("setting permissions of", path, e))
}

/// Checks that every ancestor of `dir` can be traversed by the server account.
fn check_reachable(dir: &Path, account: Option<Account>) -> Result<(), Error> {
    let Some(account) = account else {
        return Ok(());
    };
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let traversable = mode & 0o001 != 0
            || (meta.uid() == account.uid.as_raw() && mode & 0o100 != 0)
            || (meta.gid() == account.gid.as_raw() && mode & 0o010 != 0);
        if !traversable {
            return Err(Error::UnusableDirectory {
                path: dir.to_owned(),
                reason: format!(
                    "the server account (uid {}) cannot enter {}; choose a cache directory outside it (PG_ISOLATE_CACHE_DIR)",
                    account.uid,
                    ancestor.display()
                ),
            });
        }
    }
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct VersionCache {
    /// bindir -> (postgres binary mtime and size, major version)
    entries: BTreeMap<PathBuf, (i64, u64, u32)>,
    /// pg_config path -> (its mtime and size, the bindir it reports)
    #[serde(default)]
    pg_config: BTreeMap<PathBuf, (i64, u64, PathBuf)>,
}

fn read_cache(base: &Path) -> VersionCache {
    fs::read(base.join("versions.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_cache(base: &Path, cache: &VersionCache) {
    if let Ok(json) = serde_json::to_vec(cache) {
        // A cache: losing a write race costs one more lookup later.
        let _ = write_atomic(&base.join("versions.json"), &json, 0o644);
    }
}

fn stamp(path: &Path) -> Option<(i64, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.mtime(), meta.size()))
}

/// What `pg_config --bindir` says, for the `pg_config` first on `PATH`;
/// cached by that file's mtime and size, because running it takes ~6 ms.
fn pg_config_bindir(base: &Path) -> Result<Option<PathBuf>, Error> {
    let Some(path) = std::env::var_os("PATH") else {
        return Ok(None);
    };
    let Some(pg_config) = std::env::split_paths(&path)
        .map(|dir| dir.join("pg_config"))
        .find(|candidate| candidate.is_file())
    else {
        return Ok(None);
    };
    let Some(now) = stamp(&pg_config) else {
        return Ok(None);
    };
    let mut cache = read_cache(base);
    if let Some((mtime, size, dir)) = cache.pg_config.get(&pg_config)
        && (*mtime, *size) == now
    {
        return Ok(Some(dir.clone()));
    }
    let Ok(output) = Command::new(&pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Ok(None);
    };
    if !output.status.success() {
        return Ok(None);
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    cache
        .pg_config
        .insert(pg_config, (now.0, now.1, dir.clone()));
    write_cache(base, &cache);
    Ok(Some(dir))
}

/// The major version of the server in `bindir`, cached by the binary's
/// mtime and size because `postgres --version` takes ~20 ms.
pub(crate) fn major_version(base: &Path, bindir: &Path) -> Result<u32, Error> {
    let binary = bindir.join("postgres");
    let meta = fs::metadata(&binary).map_err(|e| Error::io("inspecting", &binary, e))?;
    let stamp = (meta.mtime(), meta.size());
    let mut cache = read_cache(base);
    if let Some(&(mtime, size, major)) = cache.entries.get(bindir)
        && (mtime, size) == stamp
    {
        return Ok(major);
    }
    let output = Command::new(&binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("running", &binary, e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"
    let major = text
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.split(['.', 'b', 'r']).next())
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| Error::Program {
            program: binary.clone(),
            status: output.status.to_string(),
            output: format!("unexpected version output {:?}", text.trim()),
        })?;
    cache
        .entries
        .insert(bindir.to_owned(), (stamp.0, stamp.1, major));
    write_cache(base, &cache);
    Ok(major)
}

/// Replaces `path` with `contents` atomically and durably, created with
/// `mode` (see [`registry::write_atomically`]).
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    registry::write_atomically(path, contents, mode).map_err(|e| Error::io("replacing", path, e))
}

/// The cluster directory for `options` and its major version.
fn cluster_dir(
    options: &EmbeddedOptions,
) -> Result<(PathBuf, PathBuf, Option<Account>, u32), Error> {
    let account = account(options)?;
    let base = base_dir(options, account)?;
    let bindir = find_bindir(options, &base)?;
    let major = major_version(&base, &bindir)?;
    let dir = base.join(major.to_string());
    if !dir.is_dir() {
        create_dir(&dir, 0o700)?;
        own_dir(&dir, account)?;
    }
    check_reachable(&dir, account)?;
    Ok((dir, bindir, account, major))
}

fn open_lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join("server.lock");
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(|e| Error::io("opening lock file", path, e))
}

fn lock(file: &File, exclusive: bool, dir: &Path) -> Result<(), Error> {
    let result = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    result.map_err(|e| Error::io("locking", dir.join("server.lock"), e))
}

/// What `postmaster.pid` says about a server that is running and ours.
struct Running {
    pid: u32,
    port: u16,
}

/// Reads `data/postmaster.pid`; `Ok(None)` when no live server of ours
/// (see [`is_our_postgres`]) is ready in `data`.
fn running(data: &Path, bindir: &Path) -> Option<Running> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: u32 = lines.first()?.trim().parse().ok()?;
    if !is_our_postgres(pid, bindir, data) {
        return None;
    }
    let port: u16 = lines.get(3)?.trim().parse().ok()?;
    (lines.get(7)?.trim() == "ready").then_some(Running { pid, port })
}

/// Whether `pid` is the postmaster of the cluster in `data`: it runs our
/// `postgres` binary (`/proc/<pid>/exe`, which also rules out a zombie) and
/// its working directory is `data` (the postmaster changes into its data
/// directory). The binary alone is not enough: another cluster on the host
/// (the system one, another cache directory) runs the same binary and may
/// have been given the pid of a stale `postmaster.pid`. A process whose
/// working directory cannot be read is not ours, so it is never signalled.
fn is_our_postgres(pid: u32, bindir: &Path, data: &Path) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let expected = bindir.join("postgres");
    if exe != expected && !expected.canonicalize().is_ok_and(|real| real == exe) {
        return false;
    }
    let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    cwd == data || data.canonicalize().is_ok_and(|real| real == cwd)
}

/// Whether process `pid` still runs (not a zombie).
fn process_alive(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe")).is_ok()
}

/// Attaches to the host's embedded server, starting it when none runs.
pub(crate) fn attach(options: &EmbeddedOptions) -> Result<Attached, Error> {
    let (dir, bindir, account, major) = cluster_dir(options)?;
    let data = dir.join("data");
    let lock_file = open_lock(&dir)?;
    lock(&lock_file, false, &dir)?;
    if let Some(run) = running(&data, &bindir) {
        return attached(&dir, &bindir, run, lock_file, major, None);
    }
    drop(lock_file);
    let lock_file = open_lock(&dir)?;
    lock(&lock_file, true, &dir)?;
    if let Some(run) = running(&data, &bindir) {
        return attached(&dir, &bindir, run, lock_file, major, None);
    }
    let (run, recovery) = start(options, &dir, &bindir, account)?;
    attached(&dir, &bindir, run, lock_file, major, recovery)
}

fn attached(
    dir: &Path,
    bindir: &Path,
    run: Running,
    lock: File,
    major: u32,
    recovery: Option<Recovery>,
) -> Result<Attached, Error> {
    let password = read_password(dir)?;
    let run_dir = dir.join("run");
    let socket_url = run_dir
        .join(format!(".s.PGSQL.{}", run.port))
        .exists()
        .then(|| {
            format!(
                "postgresql://{SUPERUSER}:{password}@{}:{}",
                crate::url::percent_encode(&run_dir.display().to_string()),
                run.port
            )
        });
    Ok(Attached {
        socket_url,
        url: format!("postgresql://{SUPERUSER}:{password}@127.0.0.1:{}", run.port),
        dir: dir.to_owned(),
        psql: psql_path(bindir),
        pid: run.pid,
        major,
        recovery,
        _lock: lock,
    })
}

fn read_password(dir: &Path) -> Result<String, Error> {
    let path = dir.join("password");
    fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io("reading", path, e))
}

fn new_password() -> Result<String, Error> {
    let mut bytes = [0u8; 24];
    let path = Path::new("/dev/urandom");
    let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    std::io::Read::read_exact(&mut file, &mut bytes).map_err(|e| Error::io("reading", path, e))?;
    Ok(crate::names::hex(&bytes))
}

fn as_account(command: &mut Command, account: Option<Account>, dir: &Path) {
    if let Some(account) = account {
        command.uid(account.uid.as_raw()).gid(account.gid.as_raw());
    }
    command.current_dir(dir).stdin(Stdio::null());
}

fn run_program(command: &mut Command, program: &Path) -> Result<(), Error> {
    let output = command
        .output()
        .map_err(|e| Error::io("running", program, e))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    Err(Error::Program {
        program: program.to_owned(),
        status: output.status.to_string(),
        output: tail(&text, 20),
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Creates the pristine initialised cluster (once per major version) and the
/// superuser password beside it.
fn ensure_pristine(dir: &Path, bindir: &Path, account: Option<Account>) -> Result<(), Error> {
    let pristine = dir.join("pristine");
    if pristine.join("PG_VERSION").is_file() && dir.join("password").is_file() {
        return Ok(());
    }
    let started = Instant::now();
    let password = new_password()?;
    let tmp = dir.join("pristine.tmp");
    remove_tree(&tmp)?;
    remove_tree(&pristine)?;
    create_dir(&tmp, 0o700)?;
    own_dir(&tmp, account)?;
    let pwfile = dir.join("initdb-password");
    let _ = fs::remove_file(&pwfile);
    write_atomic(&pwfile, password.as_bytes(), 0o600)?;
    if let Some(account) = account {
        std::os::unix::fs::chown(
            &pwfile,
            Some(account.uid.as_raw()),
            Some(account.gid.as_raw()),
        )
        .map_err(|e| Error::io("changing owner of", &pwfile, e))?;
    }
    let initdb = bindir.join("initdb");
    let mut command = Command::new(&initdb);
    command
        .arg("-D")
        .arg(&tmp)
        .args([
            "-U",
            SUPERUSER,
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    as_account(&mut command, account, dir);
    let result = run_program(&mut command, &initdb);
    let _ = fs::remove_file(&pwfile);
    result?;
    write_atomic(&dir.join("password"), password.as_bytes(), 0o600)?;
    fs::rename(&tmp, &pristine).map_err(|e| Error::io("renaming", &tmp, e))?;
    tracing::info!(dir = %dir.display(), elapsed_ms = started.elapsed().as_millis(), "initialised pristine cluster");
    Ok(())
}

fn remove_tree(path: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path, e)),
    }
}

/// The first line of `pg_hba.conf` that lets clients of the unix socket in
/// `run/` in without a password: that directory is the server account's,
/// mode 700, so only it (and root) can reach the socket, as only they can
/// read the `password` file. TCP connections still need the password.
const TRUST_LOCAL: &str = "local all all trust # pg-isolate: the socket directory is private\n";

/// Puts [`TRUST_LOCAL`] first in the cluster's `pg_hba.conf` (once; while
/// no server runs, under the start lock), for clusters made before it was
/// there. Replaced atomically (a crash leaves the old file or the new one),
/// then given back to the server account.
fn trust_local_socket(data: &Path, account: Option<Account>) -> Result<(), Error> {
    let path = data.join("pg_hba.conf");
    let text = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    if text.starts_with(TRUST_LOCAL) {
        return Ok(());
    }
    write_atomic(&path, format!("{TRUST_LOCAL}{text}").as_bytes(), 0o600)?;
    if let Some(account) = account {
        std::os::unix::fs::chown(
            &path,
            Some(account.uid.as_raw()),
            Some(account.gid.as_raw()),
        )
        .map_err(|e| Error::io("changing owner of", &path, e))?;
    }
    Ok(())
}

/// Copies the pristine cluster to `data` when there is no cluster yet.
fn ensure_data(dir: &Path, bindir: &Path, account: Option<Account>) -> Result<(), Error> {
    let data = dir.join("data");
    if data.join("PG_VERSION").is_file() && dir.join("password").is_file() {
        return Ok(());
    }
    ensure_pristine(dir, bindir, account)?;
    remove_tree(&data)?;
    let tmp = dir.join("data.tmp");
    remove_tree(&tmp)?;
    let cp = Path::new("cp");
    let mut command = Command::new(cp);
    command.arg("-a").arg(dir.join("pristine")).arg(&tmp);
    as_account(&mut command, account, dir);
    run_program(&mut command, cp)?;
    fs::rename(&tmp, &data).map_err(|e| Error::io("renaming", &tmp, e))
}

/// The idle watchdog and launcher, run by `sh` as the server account.
///
/// It starts the server in the background (so the server is reparented and
/// outlives the caller), prints its pid, and leaves a detached loop that
/// counts client connections every `interval` seconds; after `checks`
/// consecutive idle checks (no client connection, and no named database of
/// pg-isolate's, such as a worktree's, whose URL someone may use at any
/// moment without a pg-isolate process around) it takes the start lock without waiting (so no
/// process is attaching), checks once more and shuts the server down
/// (SIGINT, PostgreSQL's fast shutdown), holding the lock until it is gone.
const LAUNCHER: &str = r#"
log=$1; lock=$2; psql=$3; port=$4; checks=$5; interval=$6; shift 6
"$@" </dev/null >"$log" 2>&1 &
pm=$!
echo "$pm"
[ "$checks" -gt 0 ] || exit 0
(
  trap '' HUP INT
  count() {
    "$psql" -X -A -t -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c \
      "select (select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid())
        + (select count(*) from pg_database where shobj_description(oid, 'pg_database') like '{\"tool\":\"pg-isolate\",\"kind\":\"named\"%')" 2>/dev/null || echo busy
  }
  idle=0
  while sleep "$interval"; do
    [ -e "/proc/$pm/exe" ] || exit 0
    if [ "$(count)" = 0 ]; then idle=$((idle + 1)); else idle=0; fi
    if [ "$idle" -ge "$checks" ]; then
      exec 9<"$lock"
      if flock -n 9 && [ "$(count)" = 0 ]; then
        kill -INT "$pm"
        while [ -e "/proc/$pm/exe" ]; do sleep 0.05; done
        exit 0
      fi
      exec 9<&-
      idle=0
    fi
  done
) </dev/null >/dev/null 2>&1 &
"#;

/// The file remembering the port the cluster last ran on, so a restarted
/// server (after an idle stop, a crash or a reboot) keeps the URL that
/// callers may have written down (an `.env` file, say).
const PORT_FILE: &str = "port";

pub(crate) fn remembered_port(dir: &Path) -> Option<u16> {
    fs::read_to_string(dir.join(PORT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|port| *port != 0)
}

fn remember_port(dir: &Path, port: u16) {
    if remembered_port(dir) == Some(port) {
        return;
    }
    if let Err(error) = write_atomic(&dir.join(PORT_FILE), port.to_string().as_bytes(), 0o644) {
        tracing::warn!(port, dir = %dir.display(), %error, "could not remember the embedded server's port");
    }
}

/// Whether the server could listen on `port` (std sets `SO_REUSEADDR`, as
/// PostgreSQL does, so connections in `TIME_WAIT` do not count).
fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The port to start on, held as a port-alloc lease of the cluster (so no
/// other cluster on the host, of any user, and no isolane worktree lease
/// takes it while this server is stopped): the leased one when free, else a
/// new lease. Without a working allocator (an unwritable cluster directory,
/// say) the remembered port when free, else any free one.
fn choose_port(dir: &Path) -> Result<u16, Error> {
    let remembered = remembered_port(dir);
    let port = match lease_port(dir, remembered) {
        Ok(port) => port,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot lease the embedded server's port; choosing one without a lease");
            match remembered {
                Some(port) if port_free(port) => port,
                _ => free_port(dir)?,
            }
        }
    };
    if let Some(taken) = remembered.filter(|r| *r != port) {
        tracing::warn!(
            taken,
            port,
            dir = %dir.display(),
            "the embedded server's previous port is taken; starting on a new port (URLs written down earlier no longer work)"
        );
    }
    Ok(port)
}

/// The owner and port name of the embedded server's lease, in the port-alloc
/// document `<cluster dir>/ports/ports.json`.
const LEASE_OWNER: &str = "pg-isolate-embedded-server";
const LEASE_NAME: &str = "PGPORT";

/// The cluster's leased port, free to listen on: the one it holds, else
/// (a cluster from before leases) `remembered` when free, else a new one
/// from [`SERVER_PORTS`]. A held port that another program took while the
/// server was stopped is given up for a new one.
fn lease_port(dir: &Path, remembered: Option<u16>) -> Result<u16, port_alloc::Error> {
    let open = |range: std::ops::RangeInclusive<u16>| {
        port_alloc::PortAllocator::open(port_alloc::Options {
            state_dir: Some(dir.join("ports")),
            range: Some(range),
            ..port_alloc::Options::default()
        })
    };
    let holder = || port_alloc::Holder::Path(dir.to_owned());
    let all = open(SERVER_PORTS)?;
    let held = all
        .list()?
        .into_iter()
        .find(|lease| lease.owner == LEASE_OWNER)
        .and_then(|lease| lease.ports.get(LEASE_NAME).copied());
    match held {
        Some(port) if port_free(port) => return Ok(port),
        Some(_) => {
            all.release_owner(LEASE_OWNER)?;
        }
        None => {
            // Keep the port URLs written down earlier name, if it is free.
            if let Some(port) = remembered.filter(|p| port_free(*p))
                && let Ok(lease) = open(port..=port)
                    .and_then(|one| one.lease(LEASE_OWNER, &[LEASE_NAME], holder()))
                && let Some(port) = lease.port(LEASE_NAME)
            {
                return Ok(port);
            }
        }
    }
    let lease = all.lease(LEASE_OWNER, &[LEASE_NAME], holder())?;
    Ok(lease
        .port(LEASE_NAME)
        .expect("a lease holds every name it was asked for"))
}

/// Where a new embedded server's port is chosen: below the range port-alloc
/// leases from by default (20000-29999), and below the kernel's ephemeral
/// range (from which outgoing connections take their local ports, which
/// could otherwise hold the port while the server is stopped).
const SERVER_PORTS: std::ops::RangeInclusive<u16> = 17000..=19999;

/// A free port for a new server: in [`SERVER_PORTS`] outside the kernel's
/// ephemeral range, starting at a place derived from the cluster directory
/// (so clusters spread out, and one cluster tends to get the same port
/// back); one from the kernel only when all of those are taken.
fn free_port(dir: &Path) -> Result<u16, Error> {
    let ephemeral = port_alloc::ephemeral_range();
    let span = SERVER_PORTS.end() - SERVER_PORTS.start() + 1;
    let seed = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)));
    let start = u16::try_from(seed % u32::from(span)).unwrap_or(0);
    let found = (0..span)
        .map(|i| SERVER_PORTS.start() + (start + i) % span)
        .find(|port| !ephemeral.contains(port) && port_free(*port));
    if let Some(port) = found {
        return Ok(port);
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::io("finding a free port on", "127.0.0.1", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port on", "127.0.0.1", e))
}

fn psql_path(bindir: &Path) -> PathBuf {
    let local = bindir.join("psql");
    if local.is_file() {
        return local;
    }
    PathBuf::from("psql")
}

/// Starts the server (the caller holds the exclusive start lock); also
/// returns what it cleaned up after a crashed server, if anything.
fn start(
    options: &EmbeddedOptions,
    dir: &Path,
    bindir: &Path,
    account: Option<Account>,
) -> Result<(Running, Option<Recovery>), Error> {
    let started = Instant::now();
    ensure_data(dir, bindir, account)?;
    let data = dir.join("data");
    trust_local_socket(&data, account)?;
    let run_dir = dir.join("run");
    let log_dir = dir.join("log");
    for sub in [&run_dir, &log_dir] {
        create_dir(sub, 0o700)?;
        // At every start, not only the first: the socket in run/ lets its
        // clients in without a password, so nobody but the server account
        // (and root) may reach it, whatever mode a restored cache left.
        own_dir(sub, account)?;
    }
    let password = read_password(dir)?;
    let deadline = started + options.start_timeout;
    let log = log_dir.join("server.log");
    let mut stale = Stale::default();
    // Only the first pass finds what a crashed server left; later passes
    // clean up after our own failed attempts.
    let mut first_pass = true;
    loop {
        // A server killed with SIGKILL leaves its postmaster.pid behind; the
        // pid in it may since have been reused (even by another cluster's
        // postmaster), so remove it once we know (through /proc/<pid>/exe
        // and /proc/<pid>/cwd) that no server of ours runs.
        let pid_file = data.join("postmaster.pid");
        if let Ok(text) = fs::read_to_string(&pid_file) {
            let pid = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok());
            if pid.is_none_or(|pid| !is_our_postgres(pid, bindir, &data)) {
                let removed = fs::remove_file(&pid_file).is_ok();
                if first_pass {
                    stale.found = true;
                    stale.pid = pid;
                    stale.pid_reused = pid.is_some_and(process_alive);
                    if removed {
                        stale.removed.push(pid_file.clone());
                    }
                }
            } else if let Some(pid) = pid {
                // Ours but not ready: starting or stopping; wait below.
                if let Some(run) = wait_ready(&data, bindir, pid, deadline, &log)? {
                    return Ok((run, None));
                }
                first_pass = false;
                continue;
            }
        }
        // No server runs (we hold the start lock and found none), so any
        // socket and socket lock file left in run/ is stale.
        if let Ok(entries) = fs::read_dir(&run_dir) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.")
                    && fs::remove_file(entry.path()).is_ok()
                    && first_pass
                {
                    stale.found = true;
                    stale.removed.push(entry.path());
                }
            }
        }
        first_pass = false;
        let port = choose_port(dir)?;
        let socket_dir = if run_dir.as_os_str().len() + 20 < 107 {
            run_dir.display().to_string()
        } else {
            String::new()
        };
        let idle_ms = options.idle_timeout.as_millis();
        let interval_ms = (idle_ms / 4).clamp(100, 10_000);
        let checks = if idle_ms == 0 {
            0
        } else {
            idle_ms.div_ceil(interval_ms).max(1)
        };
        let postgres = bindir.join("postgres");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(LAUNCHER)
            .arg("sh")
            .arg(&log)
            .arg(dir.join("server.lock"))
            .arg(psql_path(bindir))
            .arg(port.to_string())
            .arg(checks.to_string())
            .arg(format!("{}.{:03}", interval_ms / 1000, interval_ms % 1000))
            .arg(&postgres)
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&socket_dir);
        for setting in [
            "listen_addresses=127.0.0.1".to_owned(),
            // The socket itself, too: its directory is private, and so is it.
            "unix_socket_permissions=0700".to_owned(),
            format!("max_connections={}", options.max_connections),
            "fsync=off".to_owned(),
            "synchronous_commit=off".to_owned(),
            "full_page_writes=off".to_owned(),
            "wal_level=minimal".to_owned(),
            "max_wal_senders=0".to_owned(),
            "max_wal_size=4GB".to_owned(),
            "checkpoint_timeout=1h".to_owned(),
            "log_min_messages=warning".to_owned(),
            "log_checkpoints=off".to_owned(),
            // Loaded once by the postmaster instead of by every backend
            // on its first `DO` block (a pool claim is one).
            "shared_preload_libraries=plpgsql".to_owned(),
        ] {
            command.arg("-c").arg(setting);
        }
        command
            .env("PGPASSWORD", &password)
            .env("PGCONNECT_TIMEOUT", "5")
            // Shared by the whole host: not one `isolane run`'s to stop,
            // even when a test inside a run started it.
            .env_remove(registry::RUN_TOKEN_ENV)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        as_account(&mut command, account, dir);
        let output = command
            .output()
            .map_err(|e| Error::io("starting", &postgres, e))?;
        let pid: u32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| Error::ServerStart {
                data_dir: data.clone(),
                reason: format!(
                    "the launcher failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                log_tail: String::new(),
            })?;
        if let Some(run) = wait_ready(&data, bindir, pid, deadline, &log)? {
            remember_port(dir, run.port);
            tracing::info!(
                pid = run.pid,
                port = run.port,
                dir = %dir.display(),
                elapsed_ms = started.elapsed().as_millis(),
                "started embedded PostgreSQL"
            );
            let recovery = stale.found.then(|| Recovery {
                data_dir: data.clone(),
                stale_pid: stale.pid,
                pid_reused: stale.pid_reused,
                removed: std::mem::take(&mut stale.removed),
                new_pid: run.pid,
                elapsed: started.elapsed(),
            });
            if let Some(recovery) = &recovery {
                tracing::warn!(
                    dir = %dir.display(),
                    stale_pid = recovery.stale_pid,
                    pid_reused = recovery.pid_reused,
                    removed = recovery.removed.len(),
                    pid = recovery.new_pid,
                    elapsed_ms = recovery.elapsed.as_millis(),
                    "recovered the embedded server: {recovery}"
                );
            }
            return Ok((run, recovery));
        }
        tracing::debug!(dir = %dir.display(), "embedded server start failed; retrying");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until server `pid` is ready (`Some`), or has exited with a
/// retryable cause (`None`: a port taken meanwhile, or shared memory still
/// held by the backends of a killed server).
fn wait_ready(
    data: &Path,
    bindir: &Path,
    pid: u32,
    deadline: Instant,
    log: &Path,
) -> Result<Option<Running>, Error> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(run) = running(data, bindir)
            && run.pid == pid
        {
            return Ok(Some(run));
        }
        if !process_alive(pid) {
            let log_text = fs::read_to_string(log).unwrap_or_default();
            let retryable = [
                "already in use",
                "could not bind",
                "could not create any TCP/IP sockets",
                "lock file",
                "shared memory",
            ]
            .iter()
            .any(|needle| log_text.contains(needle));
            if retryable && Instant::now() < deadline {
                return Ok(None);
            }
            return Err(Error::ServerStart {
                data_dir: data.to_owned(),
                reason: "the server exited".to_owned(),
                log_tail: tail(&log_text, 20),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::ServerStart {
                data_dir: data.to_owned(),
                reason: "it was not ready before the start timeout".to_owned(),
                log_tail: tail(&fs::read_to_string(log).unwrap_or_default(), 20),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Stops the host's embedded server for `options` (fast shutdown) and waits
/// until it is gone; `Ok(false)` when none was running.
pub(crate) fn stop(options: &EmbeddedOptions) -> Result<bool, Error> {
    let (dir, bindir, _, _) = cluster_dir(options)?;
    let data = dir.join("data");
    let lock_file = open_lock(&dir)?;
    lock(&lock_file, true, &dir)?;
    let text = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return Ok(false);
    };
    if !is_our_postgres(pid, &bindir, &data) {
        return Ok(false);
    }
    let raw = i32::try_from(pid).map_err(|_| Error::ServerStart {
        data_dir: data.clone(),
        reason: format!("pid {pid} out of range"),
        log_tail: String::new(),
    })?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGINT,
    );
    let mut deadline = Instant::now() + options.start_timeout;
    let mut quit_sent = false;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            if quit_sent {
                return Err(Error::ServerStart {
                    data_dir: data,
                    reason: format!("server {pid} did not stop"),
                    log_tail: String::new(),
                });
            }
            // Immediate shutdown, then one more period to exit.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGQUIT,
            );
            quit_sent = true;
            deadline = Instant::now() + Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::info!(pid, dir = %dir.display(), "stopped embedded PostgreSQL");
    Ok(true)
}

/// The cluster directory the embedded server for `options` uses (creating
/// the cache directory when needed).
pub(crate) fn dir(options: &EmbeddedOptions) -> Result<PathBuf, Error> {
    cluster_dir(options).map(|(dir, ..)| dir)
}
