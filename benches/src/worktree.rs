//! `worktree`: creating a worktree of the generated large repository
//! (parallel checkout) and handing out a pooled one, each beside
//! `git worktree add` of the same commit, interleaved. Worktrees are
//! removed between iterations, untimed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use worktree_core::{CreateRequest, Options, RemoveOptions, Worktrees};

use crate::fixtures::{PREVIOUS_BRANCH, Rng, content, large_repo};
use crate::{BenchResult, Config, Report, Row, Samples, ms, ratio, time};

/// Runs the group.
pub fn run(config: &Config, report: &mut Report) -> BenchResult {
    let fixtures = config.scratch.join("fixtures");
    std::fs::create_dir_all(&fixtures)?;
    let repo = large_repo(&fixtures, config.quick)?;
    forget_leftovers(&repo)?;
    let dir = tempfile::tempdir_in(&config.scratch)?;
    let head = test_support::git(&repo, ["rev-parse", "main"])?
        .trim()
        .to_owned();
    let previous = test_support::git(&repo, ["rev-parse", PREVIOUS_BRANCH])?
        .trim()
        .to_owned();

    let worktrees = Worktrees::open(
        &repo,
        Options {
            worktrees_dir: Some(dir.path().join("wt")),
            pool_size: 1,
        },
    )?;
    let git_dir = dir.path().join("git");
    std::fs::create_dir_all(&git_dir)?;
    let mut round = 0usize;
    let mut git_add = |commit: &str| -> BenchResult<Duration> {
        round += 1;
        git_worktree_add(&repo, &git_dir.join(format!("g{round}")), commit)
    };

    // Full create beside `git worktree add`.
    let iterations = iterations_of(config);
    let warmup = 1;
    let (create, git) = create_vs_git(&worktrees, &head, "c", iterations, &mut git_add)?;

    // Pooled hand-out, alternating between two commits that differ in a few
    // files, beside `git worktree add` of the same commit.
    let mut seed = CreateRequest::new("bench", "seed").branch("bench/seed");
    seed.base = Some(previous.clone());
    let seeded = worktrees.create(&seed)?;
    worktrees.release_to_pool(&seeded.id)?;
    let iterations = config.iterations(16, 8);
    let mut pool_times = Vec::new();
    let mut pool_git_times = Vec::new();
    for i in 0..warmup + iterations {
        let commit = if i % 2 == 0 { &head } else { &previous };
        let pooled = || -> BenchResult<Duration> {
            let mut request =
                CreateRequest::new("bench", format!("p{i}")).branch(format!("bench/p{i}"));
            request.base = Some(commit.clone());
            let (elapsed, created) = time(|| Ok(worktrees.create(&request)?))?;
            if !created.from_pool {
                return Err("the pooled worktree was not handed out".into());
            }
            worktrees.release_to_pool(&created.id)?;
            test_support::git(&repo, ["branch", "-D", "-q", &format!("bench/p{i}")])?;
            Ok(elapsed)
        };
        let (a, b) = if i % 2 == 0 {
            let a = pooled()?;
            (a, git_add(commit)?)
        } else {
            let b = git_add(commit)?;
            (pooled()?, b)
        };
        if i >= warmup {
            pool_times.push(a);
            pool_git_times.push(b);
        }
    }
    let pool = Samples::new(pool_times);
    let pool_git = Samples::new(pool_git_times);
    cleanup(&worktrees, &repo)?;

    // Trees with attributes: a generated one shaped like a real repository
    // and a real one (libgit2's sources as its crate ships them).
    let others = [
        ("realistic", realistic_repo(&fixtures, config.quick)?),
        ("public", public_repo(&fixtures)?),
    ];
    for (key, repo) in others {
        forget_leftovers(&repo)?;
        let worktrees = Worktrees::open(
            &repo,
            Options {
                worktrees_dir: Some(dir.path().join(format!("wt-{key}"))),
                pool_size: 0,
            },
        )?;
        let head = test_support::git(&repo, ["rev-parse", "main"])?
            .trim()
            .to_owned();
        let files = test_support::git(&repo, ["ls-files"])?.lines().count();
        let mut round = 0usize;
        let mut git_add = |commit: &str| -> BenchResult<Duration> {
            round += 1;
            git_worktree_add(&repo, &git_dir.join(format!("{key}{round}")), commit)
        };
        let (ours, git) =
            create_vs_git(&worktrees, &head, key, iterations_of(config), &mut git_add)?;
        report.figure(
            format!("worktree.create_{key}_ms_p50"),
            ms(ours.percentile(50.0)),
        );
        report.figure(
            format!("worktree.create_vs_git_{key}"),
            ratio(ours.percentile(50.0), git.percentile(50.0)),
        );
        let subject = match key {
            "realistic" => {
                format!("create ({files} files, nested .gitattributes, eol rules, filters)")
            }
            _ => format!("create (libgit2 sources, {files} files)"),
        };
        report.row(Row {
            group: "worktree",
            subject,
            samples: ours,
            baseline: Some(("git worktree add".to_owned(), git)),
        });
    }

    report.figure("worktree.create_ms_p50", ms(create.percentile(50.0)));
    report.figure("worktree.git_cli_ms_p50", ms(git.percentile(50.0)));
    report.figure(
        "worktree.create_vs_git",
        ratio(create.percentile(50.0), git.percentile(50.0)),
    );
    report.figure("worktree.pool_handout_ms_p50", ms(pool.percentile(50.0)));
    report.figure(
        "worktree.pool_vs_git",
        ratio(pool.percentile(50.0), pool_git.percentile(50.0)),
    );
    let files = if config.quick { "1k files" } else { "5k files" };
    report.row(Row {
        group: "worktree",
        subject: format!("create (parallel checkout, {files})"),
        samples: create,
        baseline: Some(("git worktree add".to_owned(), git)),
    });
    report.row(Row {
        group: "worktree",
        subject: format!("pooled hand-out ({files}, ~20 differ)"),
        samples: pool,
        baseline: Some(("git worktree add".to_owned(), pool_git)),
    });
    Ok(())
}

/// Times `git worktree add` of `commit` at `path` (on a new branch, as
/// isolane makes one), then removes it, untimed.
fn git_worktree_add(repo: &Path, path: &Path, commit: &str) -> BenchResult<Duration> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("non-UTF-8 scratch path")?;
    let branch = format!("bench/git-{name}");
    let path_arg = path.to_str().ok_or("non-UTF-8 scratch path")?;
    let (elapsed, _) = time(|| {
        test_support::git(
            repo,
            ["worktree", "add", "-q", "-b", &branch, path_arg, commit],
        )?;
        Ok(())
    })?;
    test_support::git(repo, ["worktree", "remove", "--force", path_arg])?;
    test_support::git(repo, ["branch", "-D", "-q", &branch])?;
    Ok(elapsed)
}

/// `iterations` creates of `commit` (worktree ids `bench-<prefix><n>`),
/// each beside `git_add` of the same commit, interleaved, after one
/// untimed warm-up round; the worktrees are removed between rounds.
fn create_vs_git(
    worktrees: &Worktrees,
    commit: &str,
    prefix: &str,
    iterations: usize,
    git_add: &mut dyn FnMut(&str) -> BenchResult<Duration>,
) -> BenchResult<(Samples, Samples)> {
    let warmup = 1;
    let mut create_times = Vec::new();
    let mut git_times = Vec::new();
    for i in 0..warmup + iterations {
        let ours = || -> BenchResult<Duration> {
            let id = format!("{prefix}{i}");
            let mut request = CreateRequest::new("bench", &id).branch(format!("bench/{id}"));
            request.base = Some(commit.to_owned());
            request.use_pool = false;
            let (elapsed, created) = time(|| Ok(worktrees.create(&request)?))?;
            remove(worktrees, &created.id)?;
            Ok(elapsed)
        };
        let (a, b) = if i % 2 == 0 {
            let a = ours()?;
            (a, git_add(commit)?)
        } else {
            let b = git_add(commit)?;
            (ours()?, b)
        };
        if i >= warmup {
            create_times.push(a);
            git_times.push(b);
        }
    }
    Ok((Samples::new(create_times), Samples::new(git_times)))
}

fn remove(worktrees: &Worktrees, id: &str) -> BenchResult {
    worktrees.remove(
        id,
        RemoveOptions {
            force: true,
            delete_branch: true,
        },
    )?;
    Ok(())
}

/// Removes what the run left (the pooled worktree), so the reused fixture
/// repository stays as generated.
fn cleanup(worktrees: &Worktrees, repo: &Path) -> BenchResult {
    for info in worktrees.list()? {
        if info.main {
            continue;
        }
        test_support::git(
            repo,
            [
                "worktree",
                "remove",
                "--force",
                "--force",
                info.path.to_str().ok_or("non-UTF-8 path")?,
            ],
        )?;
    }
    test_support::git(repo, ["branch", "-D", "-q", "bench/seed"])?;
    Ok(())
}

/// Forgets what an interrupted earlier run left in the reused fixture: every
/// linked worktree (they all lived in that run's deleted temp dir) and every
/// `bench/` branch but the fixture's own.
fn forget_leftovers(repo: &Path) -> BenchResult {
    let admin = repo.join(".git").join("worktrees");
    if admin.exists() {
        std::fs::remove_dir_all(&admin)?;
    }
    let branches = test_support::git(
        repo,
        [
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/bench/",
        ],
    )?;
    for branch in branches.lines().filter(|b| *b != PREVIOUS_BRANCH) {
        test_support::git(repo, ["branch", "-D", "-q", branch])?;
    }
    Ok(())
}

fn iterations_of(config: &Config) -> usize {
    config.iterations(8, 4)
}

/// Bumped whenever [`realistic_repo`] or [`public_repo`] changes.
const FIXTURE_VERSION: u32 = 2;

/// A generated repository shaped like a real one, under `parent`: about
/// 4,000 files (1,000 when `quick`) of 1-16 KB in nested directories, a
/// root `.gitattributes` with `text=auto`, `binary` and eol rules, nested
/// ones in `docs/` and `vendor/`, binary assets, and a few files through a
/// smudge filter (`rot13`, configured in the repository). Built once.
fn realistic_repo(parent: &Path, quick: bool) -> BenchResult<PathBuf> {
    let (name, files) = if quick {
        ("realistic-quick", 1_000usize)
    } else {
        ("realistic", 4_000usize)
    };
    let repo = parent.join(name);
    let marker = repo
        .join(".git")
        .join(format!("isolane-fixture-v{FIXTURE_VERSION}"));
    if marker.exists() {
        return Ok(repo);
    }
    if repo.exists() {
        std::fs::remove_dir_all(&repo)?;
    }
    std::fs::create_dir_all(&repo)?;
    test_support::git(&repo, ["init", "--quiet", "--initial-branch=main"])?;
    let mut rng = Rng(0x7ea1_1571);
    let mut entries: Vec<(String, &str, Vec<u8>)> = vec![
        (
            ".gitattributes".to_owned(),
            "100644",
            b"* text=auto\n*.png binary\n*.bat text eol=crlf\n*.sh text eol=lf\n\
              *.rot filter=rot13\n*.lock -diff\n"
                .to_vec(),
        ),
        (
            "docs/.gitattributes".to_owned(),
            "100644",
            b"*.md text\n*.svg -text\n".to_vec(),
        ),
        (
            "vendor/.gitattributes".to_owned(),
            "100644",
            b"*.c text eol=lf\n*.h text eol=lf\n*.dat binary\n".to_vec(),
        ),
    ];
    for i in 0..files {
        let (path, mode) = match i % 20 {
            0 => (format!("docs/guide{:02}/page{i:05}.md", i % 37), "100644"),
            1 => (format!("assets/img{:02}/icon{i:05}.png", i % 11), "100644"),
            2 => (
                format!("vendor/lib{:02}/src/unit{i:05}.c", i % 23),
                "100644",
            ),
            3 => (
                format!("vendor/lib{:02}/include/unit{i:05}.h", i % 23),
                "100644",
            ),
            4 if i % 80 == 4 => (format!("scripts/tool{i:05}.sh"), "100755"),
            5 if i % 200 == 5 => (format!("win/setup{i:05}.bat"), "100644"),
            6 if i % 400 == 6 => (format!("secrets/key{i:05}.rot"), "100644"),
            _ => (
                format!(
                    "crates/c{:02}/src/m{:02}/s{:02}/file{i:05}.rs",
                    i % 29,
                    i % 7,
                    i % 5
                ),
                "100644",
            ),
        };
        let size = 1_000 + rng.below(15_000) as usize;
        let mut body = content(&mut rng, size);
        if path.ends_with(".png") {
            for byte in body.iter_mut().step_by(7) {
                *byte = 0;
            }
        }
        entries.push((path, mode, body));
    }
    let mut child = test_support::git_command(&repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let stdin = child.stdin.take().ok_or("fast-import has no stdin")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdin);
        writeln!(out, "commit refs/heads/main")?;
        writeln!(out, "committer Bench <bench@example.com> 1700000000 +0000")?;
        writeln!(out, "data 9\nrealistic")?;
        for (path, mode, body) in &entries {
            writeln!(out, "M {mode} inline {path}")?;
            writeln!(out, "data {}", body.len())?;
            out.write_all(body)?;
            writeln!(out)?;
        }
        writeln!(out)?;
        writeln!(out, "done")?;
        out.flush()?;
    }
    if !child.wait()?.success() {
        return Err("git fast-import failed".into());
    }
    for (key, value) in [
        ("filter.rot13.smudge", "tr a-zA-Z n-za-mN-ZA-M"),
        ("filter.rot13.clean", "tr a-zA-Z n-za-mN-ZA-M"),
    ] {
        test_support::git(&repo, ["config", key, value])?;
    }
    test_support::git(&repo, ["reset", "--hard", "--quiet", "main"])?;
    std::fs::write(&marker, "")?;
    Ok(repo)
}

/// libgit2-sys's crate sources from the local cargo registry (libgit2's C
/// sources with their own `.gitattributes`: a real public tree that every
/// build of this workspace has) committed into a fresh repository under
/// `parent`, packed as a clone is. Built once.
fn public_repo(parent: &Path) -> BenchResult<PathBuf> {
    let repo = parent.join("public-libgit2-sys");
    let marker = repo
        .join(".git")
        .join(format!("isolane-fixture-v{FIXTURE_VERSION}"));
    if marker.exists() {
        return Ok(repo);
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok_or("no CARGO_HOME or HOME")?;
    let mut sources = Vec::new();
    for index in std::fs::read_dir(home.join("registry").join("src"))? {
        for krate in std::fs::read_dir(index?.path())? {
            let path = krate?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("libgit2-sys-") && path.join("libgit2").is_dir() {
                sources.push(path);
            }
        }
    }
    sources.sort();
    let source = sources
        .pop()
        .ok_or("no libgit2-sys sources in the cargo registry (build the workspace first)")?;
    if repo.exists() {
        std::fs::remove_dir_all(&repo)?;
    }
    std::fs::create_dir_all(&repo)?;
    test_support::run(
        std::process::Command::new("cp")
            .arg("-R")
            .arg(format!("{}/.", source.display()))
            .arg(&repo),
    )?;
    test_support::git(&repo, ["init", "--quiet", "--initial-branch=main"])?;
    test_support::git(&repo, ["add", "--all", "--force"])?;
    test_support::git(&repo, ["commit", "--quiet", "-m", "libgit2-sys sources"])?;
    // Packed, as a clone is.
    test_support::git(&repo, ["repack", "-a", "-d", "-q"])?;
    test_support::git(&repo, ["prune"])?;
    std::fs::write(&marker, "")?;
    Ok(repo)
}
