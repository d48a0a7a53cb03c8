"""pytest fixtures for a project that isolane manages; copy this file.

`leased_db` gives one test a private, fully migrated database of its own: a
clone of the worktree's template (the one `[database.template]` builds), taken
from isolane's warm pool when a clone is ready, so it costs milliseconds
rather than a `createdb` and a `migrate`. It is dropped after the test, and
should this process die first, isolane's automatic cleanup drops it once the
process is gone. Run the tests with `isolane run ID -- pytest` (which sets
ISOLANE_WORKTREE); set ISOLANE to the binary if it is not on PATH.
"""
import json
import os
import subprocess

import pytest

ISOLANE = os.environ.get("ISOLANE", "isolane")


def _worktree():
    if "ISOLANE_WORKTREE" in os.environ:
        return os.environ["ISOLANE_WORKTREE"]
    with open(".worktree-metadata.json") as f:
        return json.load(f)["id"]


@pytest.fixture
def leased_db():
    """The URL of a private, migrated database for this test."""
    lease = subprocess.run(
        [ISOLANE, "db", "lease", _worktree(), "--json", "--pid", str(os.getpid())],
        check=True,
        capture_output=True,
        text=True,
    )
    leased = json.loads(lease.stdout)
    try:
        yield leased["url"]
    finally:
        subprocess.run(
            [ISOLANE, "db", "release", leased["name"]], check=True, capture_output=True
        )
