"""A command that writes waits, saying so, while another (an import) holds SQLite's write lock."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import make_url

from southrock_api.admin.cli import main
from southrock_api.data import db
from southrock_api.data.demo import write_demo_csvs
from tests import databases, factories
from tests.servers import dispose, migrated_app

WAITING = "waiting for the database's write lock, which another command (an import?) holds"


class WriteLock:
    """Holds a SQLite database's write lock from another connection, as a running import does."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._timer: threading.Timer | None = None

    def take(self) -> None:
        """Take the lock now."""
        self._connection.execute("BEGIN IMMEDIATE")

    def release_after(self, seconds: float) -> None:
        """Give the lock up after `seconds`, from another thread."""
        self._timer = threading.Timer(seconds, self.release)
        self._timer.start()

    def release(self) -> None:
        """Give the lock up now (once)."""
        if self._connection.in_transaction:
            self._connection.execute("COMMIT")

    def close(self) -> None:
        """Stop any pending release and close the connection."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
        self.release()
        self._connection.close()


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict[str, str], str]]:
    """A migrated SQLite database with a business unit and one token; the environment naming it."""
    with databases.fresh_database("sqlite", tmp_path) as url:
        app = migrated_app(url)
        with db.get_database(app).session_factory() as session:
            issued = factories.token(session, factories.business_unit(session, code="EDU"))
            session.commit()
        dispose(app)
        # Waiting messages every 0.2 s instead of every 5 s keep the test short.
        monkeypatch.setattr(db, "WRITE_LOCK_STEP", 0.2)
        env = {"SOUTHROCK_DATABASE_URL": url, "SOUTHROCK_INSTANCE_PATH": str(tmp_path / "instance")}
        yield env, issued.public_key


@pytest.fixture()
def lock(site: tuple[dict[str, str], str]) -> Iterator[WriteLock]:
    """The site's write lock, held by another connection."""
    holder = WriteLock(str(make_url(site[0]["SOUTHROCK_DATABASE_URL"]).database))
    holder.take()
    yield holder
    holder.close()


def _southrock(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _tokens(env: dict[str, str]) -> list[str]:
    result = _southrock(env, "tokens", "list", "--json")
    assert result.exit_code == 0, result.output
    return [row["state"] for row in json.loads(result.stdout)]


@pytest.mark.parametrize(
    ("command", "done"),
    [
        (("tokens", "create", "--business-unit", "EDU"), "Public key:"),
        (("tokens", "revoke", "{key}"), "revoked"),
        (("tokens", "rotate", "{key}"), "Private key:"),
    ],
)
def test_a_token_command_waits_for_a_running_import_then_succeeds(
    site: tuple[dict[str, str], str], lock: WriteLock, command: tuple[str, ...], done: str
) -> None:
    """Revoking a leaked key is never refused because an import is running: it waits, and says so."""
    env, public_key = site
    lock.release_after(1.0)
    result = _southrock(env, *(part.format(key=public_key) for part in command))
    assert result.exit_code == 0, result.output
    assert done in result.stdout
    assert WAITING in result.stderr
    assert "s so far, giving up after 900 s (--wait)" in result.stderr


def test_a_command_gives_up_after_its_wait_and_changes_nothing(site: tuple[dict[str, str], str], lock: WriteLock) -> None:
    """With a short --wait the command fails naming the cause and what to do; the token is untouched."""
    env, public_key = site
    result = _southrock(env, "tokens", "revoke", public_key, "--wait", "0.5")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: gave up after ")
    assert last.endswith(
        " s waiting for the database's write lock, which another command (an import?) holds; nothing was "
        "changed. Run this again when it has finished, or wait longer with --wait SECONDS."
    )
    lock.release()
    assert _tokens(env) == ["active"]


def test_the_default_wait_is_the_command_timeout(site: tuple[dict[str, str], str], lock: WriteLock) -> None:
    """SOUTHROCK_COMMAND_TIMEOUT bounds the wait when --wait is not given."""
    env, public_key = site
    result = _southrock({**env, "SOUTHROCK_COMMAND_TIMEOUT": "0.5"}, "tokens", "revoke", public_key)
    assert result.exit_code == 1
    assert "giving up after 0.5 s (--wait)" in result.stderr
    assert "waiting for the database's write lock" in result.stderr.splitlines()[-1]


def test_reading_commands_do_not_wait(site: tuple[dict[str, str], str], lock: WriteLock) -> None:
    """Listing tokens reads beside the running import (WAL), without waiting."""
    env, _public_key = site
    result = _southrock(env, "tokens", "list")
    assert result.exit_code == 0
    assert WAITING not in result.stderr


def _write_locked(path: str) -> bool:
    """Whether another connection holds the database's write lock right now."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


@pytest.mark.slow
def test_revoking_a_key_during_a_real_import_waits_for_it_and_both_succeed(
    site: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    """A nightly-import-sized write holds the lock; the revoke waits, says so, and lands after it."""
    env, public_key = site
    write_demo_csvs(tmp_path / "big", enrolments=100_000, seed=5)
    path = str(make_url(env["SOUTHROCK_DATABASE_URL"]).database)
    process = subprocess.Popen(
        [sys.executable, "-c", "from southrock_api.admin.cli import main; main()", "import", "--no-progress", str(tmp_path / "big")],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _write_locked(path):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the import never took the write lock"
            time.sleep(0.05)
        result = _southrock(env, "tokens", "revoke", public_key)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert b"imported" in out
    assert result.exit_code == 0, result.output
    assert "revoked" in result.stdout
    assert WAITING in result.stderr
    assert _tokens(env) == ["revoked"]
