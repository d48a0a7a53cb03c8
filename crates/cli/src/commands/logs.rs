//! `isolane logs ID [SERVICE] [--follow]`: the output of a worktree's
//! services, as `isolane run` wrote it (the current or last run; the run
//! before is kept as `<service>.log.1`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{InputError, progress};
use crate::cli::LogsArgs;
use crate::context::Repo;
use crate::services::log_path;

/// How often `--follow` looks for new output.
const POLL: Duration = Duration::from_millis(200);

pub(super) fn run(args: &LogsArgs) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    repo.entry(&args.id)?;
    let dir = repo.log_dir(&args.id);
    let configured: Vec<&str> = repo
        .config
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let names: Vec<String> = match &args.service {
        Some(name) => {
            if !crate::config::looks_like_service_name(name)
                || (!configured.contains(&name.as_str()) && !log_path(&dir, name).is_file())
            {
                return Err(InputError(format!(
                    "no service {name:?} in isolane.toml (services: {})",
                    if configured.is_empty() {
                        "none".to_owned()
                    } else {
                        configured.join(", ")
                    }
                ))
                .into());
            }
            vec![name.clone()]
        }
        None if configured.is_empty() => {
            progress("no [[services]] in isolane.toml: there are no service logs");
            return Ok(ExitCode::SUCCESS);
        }
        None => configured.iter().map(|n| (*n).to_owned()).collect(),
    };
    let mut logs: Vec<Log> = names
        .iter()
        .map(|name| Log::new(name, log_path(&dir, name)))
        .collect();
    if !logs.iter().any(|log| log.path.is_file()) && !args.follow {
        progress(format_args!(
            "no service output for {} yet: `isolane run {}` writes it to {}",
            args.id,
            args.id,
            dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let prefixed = logs.len() > 1;
    let mut out = std::io::stdout().lock();
    loop {
        for log in &mut logs {
            log.print_new(&mut out, prefixed)?;
        }
        if !args.follow {
            for log in &mut logs {
                log.print_partial(&mut out)?;
            }
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        out.flush()?;
        std::thread::sleep(POLL);
    }
}

/// One log being read: how far, and which file (a new run starts a new one).
struct Log {
    name: String,
    path: PathBuf,
    inode: Option<u64>,
    offset: u64,
    /// The start of a line not finished yet.
    partial: Vec<u8>,
}

impl Log {
    fn new(name: &str, path: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            path,
            inode: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Prints an unfinished last line, prefixed, on a line of its own.
    fn print_partial(&mut self, out: &mut impl Write) -> Result<()> {
        if !self.partial.is_empty() {
            write!(out, "{} | ", self.name)?;
            out.write_all(&self.partial)?;
            writeln!(out)?;
            self.partial.clear();
        }
        Ok(())
    }

    /// Prints what was appended since the last call; a log replaced by a
    /// new run's, or truncated, is read again from its start.
    fn print_new(&mut self, out: &mut impl Write, prefixed: bool) -> Result<()> {
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(());
        };
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            self.inode = Some(meta.ino());
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        self.offset += bytes.len() as u64;
        if !prefixed {
            out.write_all(&bytes)?;
            return Ok(());
        }
        self.partial.extend_from_slice(&bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            write!(out, "{} | ", self.name)?;
            out.write_all(&line)?;
        }
        Ok(())
    }
}
