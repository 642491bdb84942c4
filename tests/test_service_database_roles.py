"""docs/deployment.md's PostgreSQL set-up, run as written: the owner migrates, the application's role only reads and writes rows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
import requests

from tests.fake_rtopilot import running
from tests.guide import Names, documented_postgres, southrock
from tests.servers import gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]

RTOPILOT_KEY = "rtop_" + "0123456789abcdef" * 4


@pytest.fixture()
def names() -> Iterator[Names]:
    """The guide's database and roles, created as it says; dropped afterwards."""
    with documented_postgres() as names:
        yield names


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
        with psycopg.connect(names.url(names.owner, driver="")) as owner:
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
    with psycopg.connect(names.url(names.app, driver="")) as connection:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute(statement)
