"""docs/deployment.md §9: backups private to their owner, and restores that serve the same tokens and rows."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from flask import Flask

from southrock_api import create_app
from southrock_api.data import migrations
from tests import factories, guide
from tests.servers import dispose

pytestmark = pytest.mark.slow


def run_shell(script: str, env: dict[str, str] | None = None) -> None:
    """Run a guide's shell lines, under the usual umask (022) they must not rely on."""
    previous = os.umask(0o022)
    try:
        result = subprocess.run(["sh", "-ec", script], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stdout + result.stderr


def served_total(app: Flask, authorization: str) -> int:
    """X-Total-Count of the token's enrolments, through the app."""
    try:
        response = app.test_client().get("/api/v1/enrolments", headers={"Authorization": authorization})
    finally:
        dispose(app)
    assert response.status_code == 200
    return int(response.headers["X-Total-Count"])


def mode(path: Path) -> int:
    """A file's permission bits."""
    return path.stat().st_mode & 0o777


@pytest.mark.postgres
@pytest.mark.e2e
def test_a_postgresql_backup_is_private_and_restores_as_documented(tmp_path: Path) -> None:
    with guide.documented_postgres() as names:
        assert guide.southrock(names, tmp_path, names.owner, "db", "upgrade").returncode == 0
        assert guide.southrock(names, tmp_path, names.app, "demo-data", "--enrolments", "100").returncode == 0
        token = json.loads(guide.southrock(names, tmp_path, names.app, "tokens", "create", "--business-unit", "SOUTHROCK", "--json").stdout)
        settings = {"RATELIMIT_STORAGE_URI": "memory://"}
        total = served_total(create_app({"DATABASE_URL": names.url(names.app), **settings}), token["authorization"])

        backups = tmp_path / "backups"
        dump = guide.code_block("sh", "pg_dump --format=custom")
        run_shell(dump.replace("/var/backups/southrock", str(backups)).replace("postgresql://southrock_owner@db.internal:5432/southrock", names.url(names.owner, driver="")))
        [backup] = backups.iterdir()
        assert (mode(backups), mode(backup)) == (0o700, 0o600)

        # A new database with the same roles and grants: §4's SQL from CREATE DATABASE on.
        restored = names.database + "_restored"
        names.databases.append(restored)
        setup = guide.roles_setup()
        guide.run_as_superuser(names.apply(setup[setup.index("CREATE DATABASE"):], restored))
        restore = "\n".join(line for line in guide.code_block("sh", "pg_restore").splitlines() if not line.startswith("systemctl"))
        for text, ours in (
            ("postgresql://southrock_owner@db.internal:5432/southrock", names.url(names.owner, restored, driver="")),
            ("postgresql+psycopg://southrock_owner:…@db.internal:5432/southrock", names.url(names.owner, restored)),
            ("/var/backups/southrock/southrock-2026-11-22.dump", str(backup)),
            (" southrock db upgrade", f" {guide.SOUTHROCK} db upgrade"),
        ):
            assert text in restore
            restore = restore.replace(text, ours)
        run_shell(restore, {"SOUTHROCK_INSTANCE_PATH": str(tmp_path), "SOUTHROCK_RATELIMIT_STORAGE_URI": "memory://"})

        # The servers' role reads and writes the restored database: the same token, the same rows.
        assert served_total(create_app({"DATABASE_URL": names.url(names.app, restored), **settings}), token["authorization"]) == total
        rotated = guide.southrock(names, tmp_path, names.app, "tokens", "rotate", token["public_key"], database=restored)
        assert rotated.returncode == 0, rotated.stderr


def test_a_sqlite_backup_is_private_and_restores_as_documented(tmp_path: Path) -> None:
    instance, backups = tmp_path / "instance", tmp_path / "backups"
    instance.mkdir()
    backups.mkdir(mode=0o700)
    database = instance / "southrock.sqlite"
    app = create_app({"DATABASE_URL": f"sqlite:///{database}", "RATELIMIT_STORAGE_URI": "memory://"})
    migrations.upgrade(app)
    from southrock_api.data.db import get_database

    with get_database(app).session_factory() as session:
        organisation = factories.organisation(session)
        token = factories.token(session, organisation.business_unit)
        session.commit()
    dispose(app)

    backup_lines = guide.code_block("sh", "sqlite3.connect(sys.argv[1]).backup")
    run_shell(backup_lines.replace("/var/lib/southrock", str(instance)).replace("/var/backups/southrock", str(backups)))
    [backup] = backups.iterdir()
    assert mode(backup) == 0o600

    # The guide's restore, without systemctl, sudo and a service user this test has not got.
    restore = guide.code_block("sh", "install -o southrock -m 0600")
    assert "rm -f /var/lib/southrock/southrock.sqlite-wal /var/lib/southrock/southrock.sqlite-shm" in restore
    database.write_bytes(b"the damaged file")
    for name in ("southrock.sqlite-wal", "southrock.sqlite-shm"):
        (instance / name).write_bytes(b"left by the damaged file")
    run_shell(
        f"rm -f {instance}/southrock.sqlite-wal {instance}/southrock.sqlite-shm\n"
        f"install -m 0600 {backup} {database}\n"
        f"SOUTHROCK_INSTANCE_PATH={instance} {guide.SOUTHROCK} db upgrade\n"
    )
    assert mode(database) == 0o600
    restored = create_app({"DATABASE_URL": f"sqlite:///{database}", "RATELIMIT_STORAGE_URI": "memory://"})
    assert served_total(restored, token.authorization) == 1
