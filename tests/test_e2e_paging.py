"""End to end through gunicorn: following `next` links returns every visible row exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from southrock_api.data.db import get_database
from tests import databases, hierarchies, servers

pytestmark = pytest.mark.e2e
# More pages than any plan here makes: a next link that never ends fails instead of looping.
MAX_PAGES = 1000


@pytest.fixture(scope="module")
def served(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    """A gunicorn server with two workers on its own database; yields (base URL, arranging app)."""
    directory = tmp_path_factory.mktemp("e2e")
    with databases.fresh_database(backend, directory) as url:
        app = servers.migrated_app(url)
        env = {
            "SOUTHROCK_DATABASE_URL": url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{directory / 'ratelimit.sqlite'}",
            "SOUTHROCK_RATE_LIMIT": "100000 per minute",
        }
        with servers.gunicorn(env, workers=2, log_path=Path(directory) / "gunicorn.log") as base_url:
            yield base_url, app
        servers.dispose(app)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=hierarchies.plans(max_rows=40), limit=st.integers(1, 6))
def test_following_next_links_over_http(served: tuple[str, Flask], plan: hierarchies.Plan, limit: int) -> None:
    base_url, app = served
    with get_database(app).session_factory() as session:
        built = hierarchies.build(session, plan, uuid.uuid4().hex[:6])
    http = requests.Session()
    http.auth = (built.token.public_key, built.token.private_key)  # what `curl -u` sends
    rows: list[dict[str, str]] = []
    url: str | None = f"{base_url}/api/v1/enrolments?limit={limit}"
    totals = set()
    pages = 0
    while url:
        assert pages < MAX_PAGES, "the next links never end"
        pages += 1
        response = http.get(url, timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        rows.extend(response.json())
        totals.add(response.headers["X-Total-Count"])
        url = response.links.get("next", {}).get("url")
    assert rows == built.expected
    assert totals == {str(len(built.expected))}
    # Nothing from any other organisation in the database ever comes back.
    assert {row["ORG_CODE"] for row in rows} <= built.all_org_codes
