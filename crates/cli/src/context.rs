//! What every repository command needs: the repository, its configuration,
//! its registry, and handles on the libraries, opened lazily.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::state::{self, Entry, Worktrees as RegistryDoc};

/// The stem of worktree `id`'s database name (`<purpose>_<identifier>`):
/// the id with the characters database names refuse (`.`) and the ones
/// that need quoting in shells (`-`) made `_`.
pub(crate) fn database_stem(id: &str) -> String {
    id.replace(['-', '.'], "_")
}

/// Whether `dir` exists and belongs to the current user: another user's
/// repository is not ours to write into (as root, files written there
/// would be root's).
fn owned_by_us(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw())
}

/// Eight hex digits of the SHA-256 of `path`: a stable, short name for it.
fn short_hash(path: &Path) -> String {
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// One repository, as seen from the current directory.
pub(crate) struct Repo {
    /// The main worktree's root (where `isolane.toml` lives).
    pub(crate) root: PathBuf,
    pub(crate) config: Config,
    pub(crate) registry: registry::Store<RegistryDoc>,
    /// `<git common dir>/isolane`: the registry and the services' logs.
    pub(crate) state_dir: PathBuf,
    pub(crate) worktrees: worktree_core::Worktrees,
    /// `isolane-<hash of the git common dir>-`: what this repository's port
    /// lease owners and database labels start with. Ids are unique within
    /// a repository only; this makes them unique on the host.
    pub(crate) owner_prefix: String,
    /// The git common dir: recorded in the owner record of every database
    /// this repository creates, so that one left by a repository deleted
    /// without `isolane remove` can be told and reclaimed.
    pub(crate) common_dir: PathBuf,
}

impl Repo {
    /// Finds the repository containing the current directory (from any of
    /// its worktrees) and loads its configuration and registry.
    pub(crate) fn discover() -> Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        Self::discover_at(&cwd)
    }

    /// Like [`Repo::discover`], from `dir` (any directory of the
    /// repository, its git common dir included).
    pub(crate) fn discover_at(dir: &Path) -> Result<Self> {
        let paths = worktree_core::discover(dir)?;
        let root = paths.main_root.clone().with_context(|| {
            format!(
                "{} is a bare repository; isolane needs a main worktree",
                paths.common_dir.display()
            )
        })?;
        let config = Config::load(&root)?;
        // Every field named, and the rest defaulted for any added later.
        #[allow(clippy::needless_update)]
        let worktrees = worktree_core::Worktrees::open(
            &root,
            worktree_core::Options {
                worktrees_dir: Some(root.join(&config.worktrees_dir)),
                pool_size: config.worktrees.pool,
                ..worktree_core::Options::default()
            },
        )?;
        let registry = state::open(&paths.common_dir)
            .with_context(|| format!("cannot open the registry of {}", root.display()))?;
        let hash = short_hash(&paths.common_dir);
        Ok(Self {
            root,
            config,
            registry,
            state_dir: paths.common_dir.join("isolane"),
            worktrees,
            owner_prefix: format!("isolane-{hash}-"),
            common_dir: paths.common_dir.clone(),
        })
    }

    /// The host-wide owner name of worktree `id` (port leases, database
    /// labels).
    pub(crate) fn owner(&self, id: &str) -> String {
        format!("{}{id}", self.owner_prefix)
    }

    /// The worktree id of a host-wide owner name, if it is one of ours.
    pub(crate) fn id_of_owner<'a>(&self, owner: &'a str) -> Option<&'a str> {
        owner.strip_prefix(&self.owner_prefix)
    }

    /// The worktree of this repository that `database` belongs to: its
    /// owner record is a named database labelled with one of our worktree
    /// ids, and its name is the one `create` gives that worktree. A label
    /// alone is not proof: a record copied onto another database (a prefix
    /// match, say) must not make it ours to drop.
    pub(crate) fn worktree_of_database<'a>(
        &self,
        server: &pg_isolate::Server,
        database: &'a pg_isolate::DatabaseInfo,
    ) -> Option<&'a str> {
        let owner = database.owner.as_ref()?;
        let id = self.id_of_owner(owner.label.as_deref()?)?;
        (owner.kind == pg_isolate::DatabaseKind::Named
            && self.is_worktree_database_name(server, id, &database.name))
        .then_some(id)
    }

    /// Whether `name` is the name `create` gives worktree `id`'s database:
    /// today's (short enough for `test_<name>_gw99`), or the longer one
    /// earlier versions gave.
    pub(crate) fn is_worktree_database_name(
        &self,
        server: &pg_isolate::Server,
        id: &str,
        name: &str,
    ) -> bool {
        crate::worktree_db::name(server, id).is_ok_and(|n| n == name)
            || server
                .database_name(&database_stem(id))
                .is_ok_and(|n| n == name)
    }

    /// Refuses an entry whose path is not `<worktrees dir>/<id>`: a registry
    /// edited by hand (or an entry made under another `worktrees_dir`) must
    /// not steer the files, hooks and deletions of `run` and `remove`
    /// anywhere else.
    pub(crate) fn check_path(&self, entry: &Entry) -> Result<()> {
        let expected = self.worktrees.path_of(&entry.id);
        if entry.path == expected {
            return Ok(());
        }
        anyhow::bail!(
            "registry entry {} points at {}, not {}: refusing to touch it \
             (move the worktree back, or correct its path in the registry)",
            entry.id,
            entry.path.display(),
            expected.display()
        )
    }

    /// The directory of worktree `id`'s service logs.
    pub(crate) fn log_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("logs").join(id)
    }

    /// The registry entry `id`, or an input error listing what exists.
    pub(crate) fn entry(&self, id: &str) -> Result<Entry> {
        let doc = self.registry.read()?;
        if let Some(entry) = doc.entries.get(id) {
            return Ok(entry.clone());
        }
        let known: Vec<&str> = doc.entries.keys().map(String::as_str).collect();
        Err(crate::commands::InputError(if known.is_empty() {
            format!("no worktree {id:?}: this repository has none (isolane create ...)")
        } else {
            format!("no worktree {id:?}; known: {}", known.join(", "))
        })
        .into())
    }

    /// The environment of worktree `entry`, as its tests see it: its
    /// ports, its database's URL (from the server, which may have moved
    /// since the files were written) and its id.
    pub(crate) fn environment(&self, entry: &Entry) -> Result<BTreeMap<String, String>> {
        let url = match &entry.database {
            Some(database) => Some(self.server()?.url(database)),
            None => None,
        };
        Ok(crate::envfile::environment(entry, url.as_deref()))
    }

    /// The port allocator (host-wide state).
    pub(crate) fn ports(&self) -> Result<port_alloc::PortAllocator> {
        open_ports(&self.config)
    }

    /// The database server: configured URL, `PG_ISOLATE_URL`, or embedded.
    /// Worktree files holding a URL it no longer answers on are rewritten
    /// ([`Repo::refresh_urls`]).
    pub(crate) fn server(&self) -> Result<pg_isolate::Server> {
        self.server_with(Cleanup::Automatic)
    }

    /// Like [`Repo::server`], with pg-isolate's automatic cleanup on or
    /// off (off for dry runs and reports, which must drop nothing).
    pub(crate) fn server_with(&self, cleanup: Cleanup) -> Result<pg_isolate::Server> {
        let server = open_server(&self.config, None, cleanup)?;
        self.refresh_urls(&server);
        // Other repositories are not a dry run's or a report's to change.
        if cleanup == Cleanup::Automatic {
            self.follow_server_move(&server);
        }
        Ok(server)
    }

    /// When the embedded server listens elsewhere than where this user's
    /// isolane last saw it (its port was taken while it was stopped, and
    /// whoever started it next moved it), the URL files of other
    /// repositories' worktrees are stale too: rewrites those of every
    /// repository that has worktree databases on it (their owner records
    /// name the repository), or says which it could not. Remembers where
    /// the server was seen in the port leases' state directory.
    fn follow_server_move(&self, server: &pg_isolate::Server) {
        if server.embedded_pid().is_none() {
            return;
        }
        // Where `open_ports` keeps the leases, without opening them: this
        // runs for every command that opens the server.
        let (Ok(cluster), Ok(state)) = (
            pg_isolate::Server::embedded_dir(&pg_isolate::EmbeddedOptions::default()),
            port_alloc::default_state_dir(),
        ) else {
            return;
        };
        let seen_at = state.join(format!("embedded-server-{}.url", short_hash(&cluster)));
        let now = server.redacted_url();
        let before = std::fs::read_to_string(&seen_at).ok();
        if before.as_deref() == Some(now.as_str()) {
            return;
        }
        if before.is_some() {
            self.refresh_other_repositories(server);
        }
        if let Err(error) = registry::write_atomically(&seen_at, now.as_bytes(), 0o600) {
            tracing::debug!(path = %seen_at.display(), %error, "cannot remember where the server is");
        }
    }

    /// [`Repo::refresh_urls`] in every other repository with worktree
    /// databases on `server`.
    fn refresh_other_repositories(&self, server: &pg_isolate::Server) {
        let Ok(databases) = server.list_databases() else {
            return;
        };
        let repositories: std::collections::BTreeSet<PathBuf> = databases
            .into_iter()
            .filter_map(|database| database.owner)
            .filter(|owner| {
                owner.kind == pg_isolate::DatabaseKind::Named
                    && owner
                        .label
                        .as_deref()
                        .is_some_and(|l| l.starts_with("isolane-"))
            })
            .filter_map(|owner| owner.owner_path)
            .filter(|dir| *dir != self.common_dir && owned_by_us(dir))
            .collect();
        for dir in repositories {
            match Self::discover_at(&dir) {
                Ok(other) => other.refresh_urls(server),
                Err(error) => crate::commands::progress(format_args!(
                    "the database server moved to {}, but the worktrees of {} could not be \
                     updated: {error:#}",
                    server.redacted_url(),
                    dir.display()
                )),
            }
        }
    }

    /// When the server moved (the embedded server's port was taken by
    /// another program at a start), the `DATABASE_URL` written into this
    /// repository's worktrees is stale: rewrites `.env.test` and the
    /// metadata file of every ready worktree whose URL differs, and says
    /// so. A failure is said, not fatal (the command itself may still work).
    fn refresh_urls(&self, server: &pg_isolate::Server) {
        let Ok(doc) = self.registry.read() else {
            return;
        };
        let config = &self.config;
        for entry in doc.entries.values() {
            let Some(database) = entry.database.as_deref() else {
                continue;
            };
            // Not through a symlink: the file would land where it points.
            if entry.phase != state::Phase::Ready
                || self.check_path(entry).is_err()
                || !entry.has_real_dir()
            {
                continue;
            }
            let url = server.url(database);
            let Ok(text) = std::fs::read_to_string(entry.path.join(&config.env_file)) else {
                continue;
            };
            let written = text.lines().find_map(|l| l.strip_prefix("DATABASE_URL="));
            if written.is_none_or(|written| written == url) {
                continue;
            }
            let rewritten = crate::envfile::write_files(
                &entry.path,
                &config.env_file,
                &config.metadata_file,
                entry,
                Some(&url),
            );
            match rewritten {
                Ok(()) => crate::commands::progress(format_args!(
                    "the database server moved to {}; rewrote {} and {} in {}",
                    server.redacted_url(),
                    config.env_file,
                    config.metadata_file,
                    entry.path.display()
                )),
                Err(error) => crate::commands::progress(format_args!(
                    "the database server moved, but {} in {} could not be rewritten: {error}",
                    config.env_file,
                    entry.path.display()
                )),
            }
        }
    }

    /// The configured migrations, if any (relative to the repository root).
    pub(crate) fn migrations(&self) -> Result<Option<pg_isolate::Migrations>> {
        self.config
            .database
            .migrations
            .as_deref()
            .map(|dir| load_migrations(&self.root.join(dir), &self.config))
            .transpose()
    }
}

pub(crate) fn open_ports(config: &Config) -> Result<port_alloc::PortAllocator> {
    let range = config.ports.range.map(|(low, high)| low..=high);
    Ok(port_alloc::PortAllocator::open(port_alloc::Options {
        range,
        ..port_alloc::Options::default()
    })?)
}

/// Whether opening the server may run pg-isolate's automatic cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cleanup {
    /// As every program using pg-isolate does: at most once a minute.
    Automatic,
    /// Never: a dry run or a report must not drop anything.
    Off,
}

impl Cleanup {
    /// Off for a dry run, automatic otherwise.
    pub(crate) fn unless(dry_run: bool) -> Self {
        if dry_run { Self::Off } else { Self::Automatic }
    }
}

/// Connects to `url`, else the configured URL, else `PG_ISOLATE_URL`, else
/// the embedded server (started if needed, which can take a moment).
pub(crate) fn open_server(
    config: &Config,
    url: Option<&str>,
    cleanup: Cleanup,
) -> Result<pg_isolate::Server> {
    let mut options = pg_isolate::ServerOptions {
        url: url
            .map(str::to_owned)
            .or_else(|| config.database.url.clone()),
        prefix: config.database.prefix.clone(),
        template_budget: pg_isolate::TemplateBudget {
            max_templates: config.database.template_budget,
            max_bytes: config.database.template_budget_mb.saturating_mul(1 << 20),
        },
        ..pg_isolate::ServerOptions::default()
    };
    if cleanup == Cleanup::Off {
        options.auto_gc = None;
    }
    let server = pg_isolate::Server::connect(options)?;
    if let Some(recovery) = server.recovery() {
        // Someone's server died without shutting down: say what was done.
        crate::commands::progress(format_args!("recovered: {recovery}"));
    }
    Ok(server)
}

pub(crate) fn load_migrations(dir: &Path, config: &Config) -> Result<pg_isolate::Migrations> {
    let format = match config.database.format {
        crate::config::MigrationFormat::Auto => pg_isolate::Format::Auto,
        crate::config::MigrationFormat::Diesel => pg_isolate::Format::Diesel,
        crate::config::MigrationFormat::Sqlx => pg_isolate::Format::Sqlx,
    };
    pg_isolate::Migrations::load(dir, format).map_err(|source| {
        // What the directory holds (or that it is missing) is the user's
        // input: exit code 2. Other I/O failures are the environment's.
        let input = match &source {
            pg_isolate::MigrateError::Io { source: io, .. } => matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ),
            _ => true,
        };
        if input {
            anyhow::Error::new(crate::config::ConfigError::Migrations {
                dir: dir.to_owned(),
                source,
            })
        } else {
            anyhow::Error::new(source)
        }
    })
}
