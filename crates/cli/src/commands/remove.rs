//! `isolane remove`: the worktree, its database and its ports taken back
//! ([`crate::lifecycle::teardown`]).

use std::process::ExitCode;

use anyhow::Result;

use super::print_json;
use crate::cli::RemoveArgs;
use crate::context::Repo;
use crate::lifecycle::{Teardown, teardown};

pub(super) fn run(args: &RemoveArgs) -> Result<ExitCode> {
    let repo = Repo::discover()?;
    crate::runs::stop_leftovers(&repo)?;
    let entry = repo.entry(&args.id)?;
    let done = teardown(
        &repo,
        &entry,
        Teardown {
            force: args.force,
            keep_branch: args.keep_branch,
            hooks: true,
        },
    )?;
    if args.json {
        print_json(&done)?;
    } else {
        println!("removed {}", done.id);
    }
    Ok(ExitCode::SUCCESS)
}
