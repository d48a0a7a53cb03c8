//! `isolane init`: a commented `isolane.toml` at the repository root.

use std::process::ExitCode;

use anyhow::{Context as _, Result};

use super::InputError;
use crate::config::{FILE_NAME, TEMPLATE};
use crate::context::Repo;

pub(super) fn run() -> Result<ExitCode> {
    let repo = Repo::discover()?;
    let path = repo.root.join(FILE_NAME);
    if path.exists() {
        return Err(InputError(format!(
            "{} exists already; edit it, or delete it first",
            path.display()
        ))
        .into());
    }
    std::fs::write(&path, TEMPLATE).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
