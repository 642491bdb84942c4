"""Through gunicorn with several workers: revocation, rotation and the failed-auth limit hold in every worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import requests

from southrock_api.data.db import get_database
from tests import databases, factories, servers
from tests.apiclient import basic

pytestmark = pytest.mark.e2e
SOUTHROCK = str(Path(sys.executable).parent / "southrock")


@pytest.fixture()
def site(backend: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A migrated database with one business unit; yields the env a server and the CLI use."""
    with databases.fresh_database(backend, tmp_path) as url:
        app = servers.migrated_app(url)
        with get_database(app).session_factory() as session:
            factories.business_unit(session, code="EDU", name="Education")
            session.commit()
        servers.dispose(app)
        yield {
            "SOUTHROCK_DATABASE_URL": url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
        }


def cli(env: dict[str, str], *args: str) -> dict[str, str]:
    result = subprocess.run([SOUTHROCK, *args], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(result.stdout) if "--json" in args else {}


def statuses(base_url: str, authorization: str, count: int = 8) -> set[int]:
    # A fresh connection per request, so the requests spread over the workers.
    return {requests.get(f"{base_url}/api/v1", headers={"Authorization": authorization}, timeout=10).status_code for _ in range(count)}


def test_revoke_and_rotate_take_effect_in_every_worker(site: dict[str, str], tmp_path: Path) -> None:
    first = cli(site, "tokens", "create", "--business-unit", "EDU", "--json")
    second = cli(site, "tokens", "create", "--business-unit", "EDU", "--json")
    with servers.gunicorn(site, workers=3, log_path=tmp_path / "gunicorn.log") as base_url:
        assert statuses(base_url, first["authorization"]) == {200}
        cli(site, "tokens", "revoke", first["public_key"])
        assert statuses(base_url, first["authorization"], 4) == {401}
        rotated = cli(site, "tokens", "rotate", second["public_key"], "--json")
        assert statuses(base_url, second["authorization"], 4) == {401}
        assert statuses(base_url, rotated["authorization"]) == {200}
    log = (tmp_path / "gunicorn.log").read_text()
    for secret in (first["private_key"], second["private_key"], rotated["private_key"], rotated["authorization"].split()[1]):
        assert secret not in log


def test_failed_authentications_are_limited_across_workers(site: dict[str, str], tmp_path: Path) -> None:
    issued = cli(site, "tokens", "create", "--business-unit", "EDU", "--json")
    bad = basic(f"{issued['public_key']}:srsk_guess")
    with servers.gunicorn(site, workers=2) as base_url:
        answers = [requests.get(f"{base_url}/api/v1", headers={"Authorization": bad}, timeout=10) for _ in range(12)]
        assert [a.status_code for a in answers] == [401] * 10 + [429] * 2
        assert answers[-1].json()["error"]["code"] == "E1030"
        assert int(answers[-1].headers["Retry-After"]) >= 1
        # None of the failures spent the site's bucket; the 429s describe the limit they hit.
        assert {a.headers["X-Rate-Limit-Remaining"] for a in answers[:10]} == {"60"}
        assert {a.headers["X-Rate-Limit-Limit"] for a in answers[10:]} == {"10"}


def test_the_command_offers_only_its_own_commands(site: dict[str, str]) -> None:
    env = {**os.environ, **site, "SOUTHROCK_RATELIMIT_STORAGE_URI": "redis://:hunter2@127.0.0.1:1/0"}
    listed = subprocess.run([SOUTHROCK, "--help"], env=env, capture_output=True, text=True, check=True).stdout
    commands = [line.split()[0] for line in listed.split("Commands:")[1].splitlines() if line.strip()]
    assert commands == ["db", "demo-data", "demo-setup", "export", "import", "mirror", "rtopilot", "tokens", "webhooks"]
    # flask-limiter plugs `limiter` into every Flask CLI; its `config` would print the store's password.
    plugged = subprocess.run([SOUTHROCK, "limiter", "config"], env=env, capture_output=True, text=True)
    assert plugged.returncode == 2
    assert "No such command 'limiter'" in plugged.stderr
    assert "hunter2" not in plugged.stdout + plugged.stderr
