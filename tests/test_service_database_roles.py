"""docs/deployment.md's PostgreSQL set-up, run as written: the owner migrates, the application's role only reads and writes rows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
import requests

from tests import databases
from tests.fake_rtopilot import running
from tests.servers import ROOT, gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]

SOUTHROCK = str(Path(sys.executable).with_name("southrock"))
GUIDE = ROOT / "docs" / "deployment.md"
RTOPILOT_KEY = "rtop_" + "0123456789abcdef" * 4


def documented_setup() -> tuple[str, str]:
    """The guide's SQL block for the database and its roles, and its statement for the counters' database."""
    text = GUIDE.read_text(encoding="utf-8")
    [block] = [block for block in re.findall(r"```sql\n(.*?)```", text, re.DOTALL) if "CREATE ROLE southrock_owner" in block]
    [counters] = re.findall(r"CREATE DATABASE southrock_ratelimit OWNER southrock_app;", text)
    return block, counters


class Names:
    """The guide's names made unique to this run: roles are shared by every database of the server."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.owner, self.app, self.database, self.counters = (f"{name}_{suffix}" for name in ("sr_owner", "sr_app", "sr_db", "sr_rl"))

    def apply(self, sql: str) -> str:
        """The SQL with the guide's names replaced by these."""
        for guide, ours in (("southrock_owner", self.owner), ("southrock_app", self.app), ("southrock_ratelimit", self.counters)):
            sql = sql.replace(guide, ours)
        return re.sub(r"\bsouthrock\b", self.database, sql)

    def url(self, role: str, database: str | None = None) -> str:
        """A SQLAlchemy URL logging in as role (the test server trusts local connections: no password)."""
        host = databases.POSTGRES_ADMIN_URL.split("@", 1)[1].rsplit("/", 1)[0]
        return f"postgresql+psycopg://{role}@{host}/{database or self.database}"


def run_as_superuser(sql: str) -> None:
    """Run a psql script of plain statements, `\\connect` and `\\password` (skipped: the test server trusts local logins)."""
    base = databases.POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    connection = psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True)
    statement: list[str] = []
    try:
        for line in sql.splitlines():
            if line.startswith("\\connect "):
                connection.close()
                connection = psycopg.connect(f"{base}/{line.split()[1]}", autocommit=True)
            elif line.startswith("\\password ") or line.startswith("--") or not line.strip():
                continue
            else:
                statement.append(line)
                if line.rstrip().endswith(";"):
                    connection.execute("\n".join(statement))
                    statement = []
        assert not statement, statement
    finally:
        connection.close()


@pytest.fixture()
def names() -> Iterator[Names]:
    """The guide's database and roles, created as it says; dropped afterwards."""
    if not databases.postgres_available():
        if databases.REQUIRE_SERVICES:
            pytest.fail("PostgreSQL is not reachable at " + databases.POSTGRES_ADMIN_URL)
        pytest.skip("PostgreSQL is not reachable at " + databases.POSTGRES_ADMIN_URL)
    setup, counters = documented_setup()
    names = Names()
    try:
        run_as_superuser(names.apply(setup))
        run_as_superuser(names.apply(counters))
        yield names
    finally:
        with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
            for database in (names.database, names.counters):
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in (names.app, names.owner):
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def southrock(names: Names, tmp_path: Path, role: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run a `southrock` command logged in as role."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SOUTHROCK_")}
    env.update({"SOUTHROCK_INSTANCE_PATH": str(tmp_path), "SOUTHROCK_DATABASE_URL": names.url(role), "SOUTHROCK_RATELIMIT_STORAGE_URI": "memory://", **settings})
    return subprocess.run([SOUTHROCK, *args], env=env, capture_output=True, text=True, timeout=300)


def test_the_documented_roles_migrate_import_administer_and_serve(names: Names, tmp_path: Path) -> None:
    # The application's role cannot create the schema ...
    refused = southrock(names, tmp_path, names.app, "db", "upgrade")
    assert refused.returncode == 1 and "permission denied for schema public" in refused.stderr
    # ... its owner does.
    migrated = southrock(names, tmp_path, names.owner, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    # Everything else runs as the application's role: imports (twice: inserts, then updates) ...
    for _ in range(2):
        imported = southrock(names, tmp_path, names.app, "demo-data", "--enrolments", "200")
        assert imported.returncode == 0, imported.stderr
    # ... token administration ...
    created = southrock(names, tmp_path, names.app, "tokens", "create", "--business-unit", "SOUTHROCK", "--json")
    assert created.returncode == 0, created.stderr
    spare = json.loads(southrock(names, tmp_path, names.app, "tokens", "create", "--business-unit", "SOUTHROCK", "--json").stdout)
    assert southrock(names, tmp_path, names.app, "tokens", "revoke", spare["public_key"]).returncode == 0
    token = json.loads(southrock(names, tmp_path, names.app, "tokens", "rotate", json.loads(created.stdout)["public_key"], "--json").stdout)
    # ... the RTOPilot push ...
    with running(RTOPILOT_KEY) as fake:
        pushed = southrock(names, tmp_path, names.app, "rtopilot", "sync", "--no-progress", SOUTHROCK_RTOPILOT_URL=fake.url, SOUTHROCK_RTOPILOT_API_KEY=RTOPILOT_KEY)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert fake.accepted()
    # ... and the server, counting the site's bucket in the counters' own database.
    env = {
        "SOUTHROCK_INSTANCE_PATH": str(tmp_path),
        "SOUTHROCK_DATABASE_URL": names.url(names.app),
        "SOUTHROCK_RATELIMIT_STORAGE_URI": names.url(names.app, names.counters),
    }
    with gunicorn(env, workers=1) as base_url:
        assert requests.get(base_url + "/readyz", timeout=10).json()["status"] == "ok"
        headers = {"Authorization": token["authorization"]}
        pages = [requests.get(base_url + "/api/v1/enrolments?limit=5", headers=headers, timeout=10) for _ in range(2)]
        assert [page.status_code for page in pages] == [200, 200]
        assert [int(page.headers["X-Rate-Limit-Remaining"]) for page in pages] == [59, 58]
        assert len(pages[0].json()) == 5
        with psycopg.connect(names.url(names.owner).replace("+psycopg", "")) as owner:
            deadline = time.monotonic() + 10
            while owner.execute("SELECT count(*) FROM api_tokens WHERE last_used_at IS NOT NULL").fetchone() != (1,):
                assert time.monotonic() < deadline, "the token's last use was never recorded"
                time.sleep(0.1)
                owner.rollback()


@pytest.mark.parametrize(
    "statement",
    ["CREATE TABLE intruder (id integer)", "DROP TABLE enrolments", "ALTER TABLE api_tokens ADD COLUMN note text", "DELETE FROM api_tokens", "TRUNCATE enrolments"],
)
def test_the_applications_role_can_change_nothing_but_rows(names: Names, tmp_path: Path, statement: str) -> None:
    assert southrock(names, tmp_path, names.owner, "db", "upgrade").returncode == 0
    with psycopg.connect(names.url(names.app).replace("+psycopg", "")) as connection:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute(statement)
