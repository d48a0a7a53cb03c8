//! Python projects as first-class users: a virtual environment activated
//! for `run`, and a real Django project (pip-installed into a virtualenv
//! made by the test) driven end to end.

use std::path::Path;

use test_support::TestResult;

use crate::{ok, repo_with_config, url_of};

/// The pip cache of the suite, in the build directory (like its cluster):
/// only a machine's first run downloads from PyPI.
fn pip_cache() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("pip-cache")
}

#[test]
fn run_activates_the_main_worktrees_venv_unless_turned_off() -> TestResult {
    let repo = repo_with_config("[database]\nenabled = false\n")?;
    let root = repo.path();
    repo.write(".gitignore", ".venv/\n")?;
    repo.commit_all("ignore the venv")?;
    test_support::python::venv(&root.join(".venv"), &[], &pip_cache())?;
    ok(
        root,
        &[
            "create",
            "--purpose",
            "test-venv",
            "--identifier",
            "a",
            "--no-db",
        ],
    )?;
    let script = "printf '%s\\n' \"$VIRTUAL_ENV\" \"$(command -v python)\"";
    let said = ok(root, &["run", "test-venv-a", "--", "sh", "-c", script])?;
    let venv = root.join(".venv");
    assert_eq!(
        said,
        format!(
            "{}\n{}\n",
            venv.display(),
            venv.join("bin/python").display()
        )
    );

    // The worktree's own .venv wins over the main worktree's.
    let own = root.join("worktrees/test-venv-a/.venv");
    test_support::python::venv(&own, &[], &pip_cache())?;
    let said = ok(
        root,
        &["run", "test-venv-a", "--", "sh", "-c", "echo $VIRTUAL_ENV"],
    )?;
    assert_eq!(said.trim(), own.display().to_string());

    repo.write(
        "isolane.toml",
        "[database]\nenabled = false\n[run]\nvenv = false\n",
    )?;
    let said = ok(
        root,
        &[
            "run",
            "test-venv-a",
            "--",
            "sh",
            "-c",
            "echo \"[${VIRTUAL_ENV:-}]\"",
        ],
    )?;
    assert_eq!(said.trim(), "[]");
    ok(root, &["remove", "test-venv-a", "--force"])?;
    Ok(())
}

/// The example Django project (`examples/django`), copied into a fresh
/// repository by the test.
fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/django")
}

/// The pip packages of the Django test.
const PACKAGES: &[&str] = &[
    "django>=5.2,<6",
    "pytest-django",
    "pytest-xdist",
    "psycopg[binary]",
];

/// Runs isolane, requires success, returns (stdout, stderr).
fn ok_both(root: &Path, args: &[&str]) -> TestResult<(String, String)> {
    let out = crate::isolane(root)
        .env("ISOLANE", env!("CARGO_BIN_EXE_isolane"))
        .args(args)
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if !out.status.success() {
        return Err(format!(
            "isolane {args:?} failed ({}):\n{stdout}\n{stderr}",
            out.status
        )
        .into());
    }
    Ok((stdout, stderr))
}

fn count(url: &str, sql: &str) -> TestResult<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client.query_one(sql, &[])?.get(0))
}

const APPLIED: &str = "SELECT count(*) FROM django_migrations WHERE app = 'catalog'";

#[test]
fn a_real_django_project_with_pytest_django_and_xdist() -> TestResult {
    let repo = test_support::GitRepo::new()?;
    let root = repo.path();
    test_support::python::copy_tree(&example_dir(), root)?;
    // Templates are host-wide: a comment of this run's own keeps an earlier
    // run's template (same migrations) from being found.
    let run = format!(
        "\n# test run {} {:?}\n",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let first = root.join("catalog/migrations/0001_initial.py");
    let mut text = std::fs::read_to_string(&first)?;
    text.push_str(&run);
    std::fs::write(&first, text)?;
    repo.commit_all("the example shop")?;
    test_support::python::venv(&root.join(".venv"), PACKAGES, &pip_cache())?;

    // create: a database Django sees as fully migrated, built by its own
    // `manage.py migrate` once.
    let id = "test-django-a-long-identifier-for-a-feature-branch-with-xdist-workers";
    let (purpose, identifier) = id.split_at("test-django".len());
    let (_, said) = ok_both(
        root,
        &[
            "create",
            "--purpose",
            purpose,
            "--identifier",
            &identifier[1..],
        ],
    )?;
    assert!(said.contains("built template"), "{said}");
    let url = url_of(root, id)?;
    assert_eq!(count(&url, APPLIED)?, 3);
    let (shown, _) = ok_both(
        root,
        &[
            "run",
            id,
            "--",
            "python",
            "manage.py",
            "showmigrations",
            "catalog",
        ],
    )?;
    assert_eq!(shown.matches("[X]").count(), 3, "{shown}");
    assert!(!shown.contains("[ ]"), "{shown}");

    // db reset: migrated and empty.
    postgres::Client::connect(&url, postgres::NoTls)?
        .batch_execute("INSERT INTO catalog_product (name, price) VALUES ('left over', 1)")?;
    ok_both(root, &["db", "reset", id])?;
    assert_eq!(count(&url, "SELECT count(*) FROM catalog_product")?, 0);
    assert_eq!(count(&url, APPLIED)?, 3);

    // Unchanged migrations: the template is reused.
    let (_, said) = ok_both(
        root,
        &["create", "--purpose", "test-django", "--identifier", "same"],
    )?;
    assert!(!said.contains("built template"), "{said}");
    assert!(!said.contains("running `"), "{said}");

    // A changed migration file on a branch: a new template, built from the
    // branch's migrations.
    repo.git(["checkout", "-q", "-b", "feature/slug"])?;
    let migration = root.join("catalog/migrations/0003_category.py");
    let text = std::fs::read_to_string(&migration)?.replace(
        "(\"name\", models.CharField(max_length=100, unique=True)),",
        "(\"name\", models.CharField(max_length=100, unique=True)),\n                (\"slug\", models.SlugField(default=\"\")),",
    );
    std::fs::write(&migration, text)?;
    repo.commit_all("categories get a slug")?;
    repo.git(["checkout", "-q", "-"])?;
    let (_, said) = ok_both(
        root,
        &[
            "create",
            "--purpose",
            "test-django",
            "--identifier",
            "slug",
            "--branch",
            "feature/slug",
        ],
    )?;
    assert!(said.contains("built template"), "{said}");
    let slug = count(
        &url_of(root, "test-django-slug")?,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'catalog_category' AND column_name = 'slug'",
    )?;
    assert_eq!(slug, 1);

    // pytest-django under xdist, in test databases derived from the
    // worktree's (kept by --reuse-db), with a leased database per test too.
    let (out, _) = ok_both(
        root,
        &[
            "run",
            id,
            "--",
            "pytest",
            "-n",
            "2",
            "--reuse-db",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
    )?;
    assert!(out.contains("6 passed"), "{out}");
    let derived: Vec<String> = crate::json(root, &["db", "list"])?
        .as_array()
        .ok_or("db list")?
        .iter()
        .filter(|r| r["kind"] == "derived" && r["worktree"] == id)
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(derived.len(), 2, "{derived:?}");
    assert!(
        derived
            .iter()
            .all(|n| n.ends_with("_gw0") || n.ends_with("_gw1")),
        "{derived:?}"
    );

    // libpq's variables: psql with no arguments.
    let (out, _) = ok_both(
        root,
        &["run", id, "--", "psql", "-X", "-A", "-t", "-c", "select 1"],
    )?;
    assert_eq!(out.trim(), "1");

    // remove leaves no test_ database of the worktree behind.
    let database = url
        .rsplit('/')
        .next()
        .ok_or("no database in the url")?
        .to_owned();
    ok_both(root, &["remove", id, "--force"])?;
    let server = pg_isolate::Server::connect(crate::server_options())?;
    let left: Vec<String> = server
        .list_databases()?
        .into_iter()
        .map(|d| d.name)
        .filter(|n| n.starts_with(&format!("test_{database}")) || *n == database)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for other in ["test-django-same", "test-django-slug"] {
        ok_both(root, &["remove", other, "--force"])?;
    }
    Ok(())
}
