//! The template a worktree's database is cloned from: the migrations
//! directory's (diesel, sqlx; built by pg-isolate's runner) or the one the
//! project's own command builds (`[database.template]`, any migration tool),
//! keyed by the command and the content of its inputs in the worktree.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::commands::progress;
use crate::config::TemplateCommand;
use crate::context::Repo;

/// How many lines of a failed command's output its error shows.
const TAIL_LINES: usize = 20;

/// The template command failed: its exit code becomes isolane's.
#[derive(Debug, thiserror::Error)]
#[error("template command `{command}` failed ({status}) in {dir}; its last output:\n{tail}")]
pub(crate) struct BuildFailed {
    pub(crate) command: String,
    pub(crate) status: std::process::ExitStatus,
    pub(crate) dir: PathBuf,
    pub(crate) tail: String,
}

impl BuildFailed {
    /// The exit code isolane passes on: the command's, else 1.
    pub(crate) fn code(&self) -> u8 {
        self.status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .filter(|&c| c != 0)
            .unwrap_or(1)
    }
}

/// What defines a command-built template in one worktree.
#[derive(Debug)]
pub(crate) struct Inputs {
    /// The hashed material: the command, then every input's path and bytes.
    pub(crate) material: Vec<u8>,
    /// The matched files, relative to the worktree, sorted.
    pub(crate) files: Vec<PathBuf>,
}

/// The key material of `template` in `worktree`: the command and, for
/// every file its globs match there (sorted, each once), its relative path
/// and its bytes, each length-prefixed so no two inputs hash alike.
pub(crate) fn inputs(template: &TemplateCommand, worktree: &Path) -> Result<Inputs> {
    let base = glob::Pattern::escape(&worktree.to_string_lossy());
    let mut files = std::collections::BTreeSet::new();
    for pattern in &template.inputs {
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        let matches = glob::glob_with(&format!("{base}/{pattern}"), options)
            .with_context(|| format!("database.template.inputs: bad glob {pattern:?}"))?;
        for found in matches {
            let path = found.with_context(|| format!("cannot read a match of {pattern:?}"))?;
            if path.is_file()
                && let Ok(relative) = path.strip_prefix(worktree)
            {
                files.insert(relative.to_owned());
            }
        }
    }
    let mut hasher = Sha256::new();
    let mut add = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    add(b"isolane template command");
    add(template.command.as_bytes());
    for file in &files {
        let path = worktree.join(file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        add(file.as_os_str().as_encoded_bytes());
        add(&bytes);
    }
    Ok(Inputs {
        material: hasher.finalize().to_vec(),
        files: files.into_iter().collect(),
    })
}

/// The template the database of the worktree at `worktree` is cloned from,
/// if the configuration has one: built (once on the host) when missing or
/// when `rebuild`.
pub(crate) fn for_worktree(
    repo: &Repo,
    server: &pg_isolate::Server,
    worktree: &Path,
    rebuild: bool,
) -> Result<Option<pg_isolate::Template>> {
    if let Some(command) = &repo.config.database.template {
        return command_template(repo, server, command, worktree, rebuild).map(Some);
    }
    let Some(migrations) = repo.migrations()? else {
        return Ok(None);
    };
    progress(format_args!(
        "preparing the template of {} migrations in {}",
        migrations.len(),
        migrations.dir().display()
    ));
    Ok(Some(migrations.template(server)?))
}

fn command_template(
    repo: &Repo,
    server: &pg_isolate::Server,
    template: &TemplateCommand,
    worktree: &Path,
    rebuild: bool,
) -> Result<pg_isolate::Template> {
    let inputs = inputs(template, worktree)?;
    let (key, _) = server.template_key(&inputs.material);
    progress(format_args!(
        "preparing the template {key} (`{}`, {} input file(s))",
        template.command,
        inputs.files.len()
    ));
    let mut options = pg_isolate::TemplateOptions::default();
    options.rebuild = rebuild;
    let built = server.template_with(&inputs.material, options, |url| {
        run_command(repo, template, worktree, url)
    })?;
    if let Some(took) = built.build_time() {
        progress(format_args!(
            "built template {} in {:.1} s",
            built.name(),
            took.as_secs_f64()
        ));
        record_build(repo, built.key(), took, &inputs.files);
    }
    Ok(built)
}

/// Runs the template command in `worktree` with the template database's
/// environment, its output (stdout and stderr) streamed to stderr.
fn run_command(
    repo: &Repo,
    template: &TemplateCommand,
    worktree: &Path,
    url: &str,
) -> Result<(), pg_isolate::SetupError> {
    progress(format_args!(
        "running `{}` in {}",
        template.command,
        worktree.display()
    ));
    let mut env = crate::envfile::pg_environment(url);
    env.insert("DATABASE_URL".to_owned(), url.to_owned());
    crate::envfile::activate_venv(&mut env, repo, worktree);
    let (reader, writer) = std::io::pipe()?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&template.command)
        .current_dir(worktree)
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .spawn()?;
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut stderr = std::io::stderr();
    for line in BufReader::new(reader).split(b'\n') {
        let Ok(line) = line else { break };
        // A tool may print the URL it was given: never its password.
        let line = crate::config::redact_urls(&String::from_utf8_lossy(&line));
        let _ = writeln!(stderr, "{line}");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait()?;
    if status.success() {
        return Ok(());
    }
    let tail: Vec<String> = tail.into();
    Err(Box::new(BuildFailed {
        command: template.command.clone(),
        status,
        dir: worktree.to_owned(),
        tail: tail.join("\n"),
    }))
}

/// What isolane remembers of a template it built (`db template` shows it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BuildRecord {
    /// Seconds since the epoch.
    pub(crate) built_at: u64,
    pub(crate) build_ms: u64,
    pub(crate) inputs: Vec<PathBuf>,
}

fn record_path(repo: &Repo, key: &str) -> PathBuf {
    repo.state_dir.join("templates").join(format!("{key}.json"))
}

/// Remembers how long building template `key` took (best effort: only a
/// report reads it).
fn record_build(repo: &Repo, key: &str, took: Duration, inputs: &[PathBuf]) {
    let record = BuildRecord {
        built_at: crate::state::now(),
        build_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        inputs: inputs.to_vec(),
    };
    let path = record_path(repo, key);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| serde_json::to_vec_pretty(&record).map_err(std::io::Error::other))
        .and_then(|bytes| registry::write_atomically(&path, &bytes, 0o644));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot record the template build");
    }
}

/// The recorded build of template `key`, if isolane built it here.
pub(crate) fn build_record(repo: &Repo, key: &str) -> Option<BuildRecord> {
    let bytes = std::fs::read(record_path(repo, key)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
