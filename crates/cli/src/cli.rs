//! The command line, as clap reads it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Isolated test worktrees with their own ports and PostgreSQL database.
///
/// Run from anywhere inside a git repository (its test worktrees included).
/// Set ISOLANE_LOG=debug for a trace on stderr.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a test worktree with leased ports and its own database.
    Create(CreateArgs),
    /// List the test worktrees of this repository.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one test worktree.
    Show {
        /// The worktree id (`<purpose>-<identifier>`).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a worktree's environment (ports, DATABASE_URL, ...).
    Env {
        /// The worktree id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EnvFormat::Dotenv)]
        format: EnvFormat,
    },
    /// Run a command in a worktree with its environment and services.
    Run(RunArgs),
    /// Show the output of a worktree's services (written by `isolane run`).
    Logs(LogsArgs),
    /// Remove a worktree, its database and its ports.
    Remove(RemoveArgs),
    /// Time a command at two revisions, in rounds of ABBA order, and tell
    /// whether HEAD is faster, slower or no different from BASE.
    ///
    /// Each side runs in its own worktree (made at the revision and removed
    /// afterwards, or an existing one named by id) with its own ports, a
    /// database from the same template (reset before every run) and its
    /// services. Figures: CMD's wall time, and any that CMD writes to the
    /// file $ISOLANE_COMPARE_OUTPUT names, as {"name": seconds, ...} or
    /// pytest-benchmark's JSON (--benchmark-json=$ISOLANE_COMPARE_OUTPUT).
    /// Per figure: the medians, the ratio HEAD/BASE with a 95% bootstrap
    /// interval, and a verdict. Exit 1 when a figure is slower beyond the
    /// threshold; CMD's own exit code, and its output, when it fails on
    /// either side (the output of runs that succeed is not shown).
    Compare(CompareArgs),
    /// Remove old test worktrees and finish interrupted operations.
    Gc(GcArgs),
    /// Port leases on this host.
    Ports {
        #[command(subcommand)]
        command: Option<PortsCommand>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The warm pool of worktrees (`[worktrees] pool` in isolane.toml):
    /// list it, or drain it.
    Pool {
        #[command(subcommand)]
        command: Option<PoolCommand>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Databases: reset, migrate, verify rollbacks, list, clean.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Check registry, worktrees, ports and databases against each other.
    Doctor {
        /// Repair what is inconsistent.
        #[arg(long)]
        fix: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented isolane.toml at the repository root.
    Init,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// What the worktree is for, e.g. test-migration.
    // Values starting with `-` reach validation, which names the problem.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) purpose: String,
    /// Which one, e.g. add-user-roles.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) identifier: String,
    /// The branch to check out; created from --base if it does not exist.
    #[arg(long, value_parser = branch_name, allow_hyphen_values = true)]
    pub(crate) branch: Option<String>,
    /// Where a new branch starts (default HEAD).
    #[arg(long)]
    pub(crate) base: Option<String>,
    /// Do not create a database.
    #[arg(long)]
    pub(crate) no_db: bool,
    /// Port names to lease (repeatable); default from isolane.toml.
    #[arg(long = "port", value_name = "NAME")]
    pub(crate) ports: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The worktree id.
    pub(crate) id: String,
    /// Do not start the configured services.
    #[arg(long)]
    pub(crate) no_services: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub(crate) command: Vec<String>,
}

/// `isolane compare` (see `Command::Compare`).
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// The baseline: a revision, or the id of an existing worktree.
    pub(crate) base: String,
    /// The candidate: a revision, or the id of an existing worktree.
    pub(crate) head: String,
    /// Timed rounds; each runs CMD once on each side.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) runs: u32,
    /// Rounds run first and discarded.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub(crate) warmup: u32,
    /// The smallest change that gets a verdict, as a percentage.
    #[arg(long, default_value = "5%", value_parser = percentage, allow_hyphen_values = true)]
    pub(crate) threshold: f64,
    /// Print every sample and the comparison as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep the worktrees made for the comparison.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Do not reset the databases before each run of CMD.
    #[arg(long)]
    pub(crate) no_reset: bool,
    /// Do not start the configured services.
    #[arg(long)]
    pub(crate) no_services: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The worktree id.
    pub(crate) id: String,
    /// Only this service's log (default: every service's, each line
    /// prefixed with its name).
    pub(crate) service: Option<String>,
    /// Keep printing what is appended, across runs, until interrupted.
    #[arg(long, short)]
    pub(crate) follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The worktree id.
    pub(crate) id: String,
    /// Remove even with uncommitted or unpushed work.
    #[arg(long)]
    pub(crate) force: bool,
    /// Keep the worktree's branch.
    #[arg(long)]
    pub(crate) keep_branch: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Remove worktrees older than this (default from isolane.toml, 24h).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) max_age: Option<Duration>,
    /// Only worktrees whose purpose starts with this (default "test-").
    #[arg(long)]
    pub(crate) purpose_prefix: Option<String>,
    /// Report what would be done without doing it.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PortsCommand {
    /// Every lease on this host (the default).
    List,
    /// Release the ports of a worktree (or any lease owner).
    Release {
        /// The owner (a worktree id).
        owner: String,
    },
    /// Free the leases of dead processes and expired TTLs.
    Reclaim,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PoolCommand {
    /// The pooled worktrees (the default).
    List,
    /// Delete every pooled worktree (one made dirty by hand is kept).
    Drain,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Drop and recreate a worktree's database from the template.
    Reset {
        /// The worktree id.
        id: String,
    },
    /// The template worktree databases are cloned from: its key, the input
    /// files matched and its build time; `--rebuild` builds it again.
    Template {
        /// Whose files key it (default: the main worktree).
        id: Option<String>,
        /// Drop it and build it again.
        #[arg(long)]
        rebuild: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A private database cloned from worktree ID's template (from the warm
    /// pool when a clone is ready), leased to the calling process: prints
    /// its URL; `db release NAME` drops it, and gc does once that process
    /// is gone.
    Lease {
        /// The worktree whose template to clone.
        id: String,
        /// The process holding the lease (default: the one that runs isolane).
        #[arg(long)]
        pid: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// (internal) Fill the warm pool of ID's template and exit.
        #[arg(long, hide = true)]
        refill: bool,
    },
    /// Drop a database `db lease` handed out.
    Release {
        /// The leased database's name.
        name: String,
    },
    /// Migrate a database up or down to a version.
    Migrate(MigrateArgs),
    /// Verify that every migration's down undoes its up.
    CheckRollback(CheckRollbackArgs),
    /// Databases created by isolane on the server.
    List {
        /// Only ours that no worktree of this repository refers to.
        #[arg(long)]
        orphans: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// pg-isolate's leak cleanup on the server, by hand (it also runs by
    /// itself, at most once a minute, whenever isolane opens the server):
    /// half-created databases and test databases of dead processes, orphaned
    /// pool clones, half-built, unused and over-budget templates.
    Gc {
        /// Report what would be dropped without dropping it.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop databases that carry isolane's owner record.
    Clean {
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Report what would be dropped.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The worktree whose database to migrate.
    #[arg(conflicts_with = "url", required_unless_present = "url")]
    pub(crate) id: Option<String>,
    /// A database URL instead of a worktree.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// The migrations directory (default from isolane.toml).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// The target: a version, `latest` or `none`.
    #[arg(long)]
    pub(crate) to: String,
}

#[derive(Debug, Args)]
pub(crate) struct CheckRollbackArgs {
    /// The admin URL of the server to use (default: configured or embedded).
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// The migrations directory (default from isolane.toml).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// The first version to check.
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// The last version to check.
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Treat notes (column order, whitespace) as failures.
    #[arg(long)]
    pub(crate) strict: bool,
    /// Print the JSON report.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EnvFormat {
    /// KEY=VALUE lines.
    Dotenv,
    /// export KEY='VALUE' lines, for eval.
    Shell,
    /// A JSON object.
    Json,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration like 30m or 24h: {e}"))
}

/// A percentage like `5%` (or `2.5%`), as a fraction.
fn percentage(raw: &str) -> Result<f64, String> {
    let refuse = || format!("{raw:?} is not a percentage like 5% (0% to 1000%)");
    let number = raw.trim().strip_suffix('%').ok_or_else(refuse)?;
    let percent: f64 = number.trim().parse().map_err(|_| refuse())?;
    if !(0.0..=1000.0).contains(&percent) {
        return Err(refuse());
    }
    Ok(percent / 100.0)
}

/// A branch name worktree-core accepts (git's rules, and nothing that could
/// pass for an option, a revision or a full ref name). Checked while
/// parsing, so a refused name never reaches the registry.
fn branch_name(raw: &str) -> Result<String, String> {
    worktree_core::validate_branch(raw)
        .map(|()| raw.to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{branch_name, percentage};

    #[test]
    fn thresholds_are_percentages() {
        assert_eq!(percentage("5%"), Ok(0.05));
        assert_eq!(percentage("0%"), Ok(0.0));
        assert_eq!(percentage(" 12.5 %"), Ok(0.125));
        for bad in ["5", "0.05", "%", "-1%", "x%", "NaN%", "inf%", "1001%", ""] {
            assert!(percentage(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn branch_names_follow_git() {
        for good in [
            "main",
            "feature/user-roles",
            "fix-1.2",
            "café",
            "a@b",
            "x.lockx",
        ] {
            assert_eq!(branch_name(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "-x",
            "a..b",
            "x.lock",
            "a/x.lock/b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "@{",
            "@",
            "feature/",
            "/x",
            "a//b",
            ".hidden",
            "a/.hidden",
            "a\\b",
            "a*b",
            "a?b",
            "a[b",
            "a\nb",
            "a\tb",
            "a.",
            "HEAD",
            "refs/heads/x",
        ] {
            assert!(branch_name(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(branch_name(&"a".repeat(256)).is_err());
    }
}
