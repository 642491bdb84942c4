"""/healthz and /readyz: outside /api, unauthenticated, never rate limited, honest about outages."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import requests

from southrock_api import create_app
from southrock_api.data import migrations
from southrock_api.data.db import get_database
from southrock_api.admin.tokens import IssuedToken
from tests import databases
from tests.servers import dispose, free_port, gunicorn, seeded_token

SITE_LIMIT = 5


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, IssuedToken]]:
    """A gunicorn server with a small site bucket, and a token for it."""
    directory = tmp_path_factory.mktemp("health")
    with databases.fresh_database(backend, directory) as database_url:
        issued = seeded_token(database_url)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{directory / 'ratelimit.sqlite'}",
            "SOUTHROCK_RATE_LIMIT": f"{SITE_LIMIT} per minute",
        }
        with gunicorn(env, workers=2) as base_url:
            yield base_url, issued


def _remaining(base_url: str, issued: IssuedToken) -> int:
    response = requests.get(base_url + "/api/v1", headers={"Authorization": issued.authorization}, timeout=10)
    assert response.status_code == 200
    return int(response.headers["X-Rate-Limit-Remaining"])


def _probe_many(base_url: str) -> None:
    for number in range(100):
        response = requests.get(base_url + ("/healthz", "/readyz")[number % 2], timeout=10)
        assert response.status_code == 200
        assert "X-Rate-Limit-Remaining" not in response.headers


@pytest.mark.e2e
def test_probes_answer_without_credentials(server: tuple[str, IssuedToken]) -> None:
    base_url, _ = server
    health = requests.get(base_url + "/healthz", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = requests.get(base_url + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": True, "schema": True, "ratelimit_store": True}}
    assert ready.headers["Content-Type"] == "application/json"


@pytest.mark.e2e
def test_probes_never_spend_or_meet_the_site_bucket(server: tuple[str, IssuedToken]) -> None:
    base_url, issued = server
    before = _remaining(base_url, issued)
    _probe_many(base_url)
    assert _remaining(base_url, issued) == before - 1
    # Empty the bucket: the API says 429, the probes still say 200.
    statuses = [
        requests.get(base_url + "/api/v1", headers={"Authorization": issued.authorization}, timeout=10).status_code
        for _ in range(SITE_LIMIT)
    ]
    assert statuses[-1] == 429
    _probe_many(base_url)


@pytest.mark.parametrize(
    ("config", "failing"),
    [
        ({"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:{port}/0"}, "ratelimit_store"),
        ({"RATELIMIT_STORAGE_URI": "postgresql+psycopg://postgres@127.0.0.1:{port}/none"}, "ratelimit_store"),
        ({"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:{port}/none"}, "database"),
    ],
)
def test_readyz_is_503_while_a_dependency_is_unreachable(
    config: dict[str, str], failing: str, database_url: str
) -> None:
    """Each dependency on a port where nothing listens; liveness stays 200."""
    port = free_port()
    settings = {"DATABASE_URL": database_url, "RATELIMIT_STORAGE_URI": "memory://", "TESTING": True}
    settings.update({name: value.format(port=port) for name, value in config.items()})
    app = create_app(settings)
    try:
        client = app.test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["status"] == "unavailable"
        assert response.get_json()["checks"][failing] is False
        assert client.get("/healthz").status_code == 200
    finally:
        dispose(app)


def test_readyz_is_503_until_the_database_is_migrated_to_this_release(backend: str, tmp_path: Path) -> None:
    """A mistyped SQLite path (a new empty file) or a skipped `southrock db upgrade` is not ready."""
    with databases.fresh_database(backend, tmp_path) as url:
        app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://", "TESTING": True})
        try:
            client = app.test_client()

            def readiness() -> dict[str, bool]:
                return client.get("/readyz").get_json()["checks"]

            assert readiness() == {"database": True, "schema": False, "ratelimit_store": True}
            migrations.upgrade(app, "0005")
            assert readiness()["schema"] is False  # behind this release's migrations
            migrations.upgrade(app)
            assert client.get("/readyz").status_code == 200
            assert readiness() == {"database": True, "schema": True, "ratelimit_store": True}
            with get_database(app).engine.begin() as connection:  # a later release has migrated
                connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_later'")
            assert client.get("/readyz").status_code == 200
        finally:
            dispose(app)


@pytest.mark.e2e
def test_probes_on_a_backend_address_answer_whatever_the_trusted_hosts(backend: str, tmp_path: Path) -> None:
    """nginx and load balancers probe http://127.0.0.1:8001/healthz; the API and /docs still refuse that host."""
    with databases.fresh_database(backend, tmp_path) as database_url:
        issued = seeded_token(database_url)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
            "SOUTHROCK_TRUSTED_HOSTS": "lms.example.edu",
        }
        # gunicorn() itself waits for /healthz on 127.0.0.1: it would never become ready otherwise.
        with gunicorn(env, workers=1) as base_url:
            assert requests.get(base_url + "/healthz", timeout=10).json() == {"status": "ok"}
            assert requests.get(base_url + "/readyz", timeout=10).json()["status"] == "ok"
            headers = {"Authorization": issued.authorization}
            for path in ("/api/v1", "/docs", "/openapi.json"):
                refused = requests.get(base_url + path, headers=headers, timeout=10)
                assert refused.status_code == 404, path
                assert refused.json()["error"] == {"message": "Endpoint not supported: unknown host name", "code": "E2020"}
            named = {**headers, "Host": "lms.example.edu"}
            for path in ("/api/v1", "/docs", "/openapi.json", "/healthz"):
                assert requests.get(base_url + path, headers=named, timeout=10).status_code == 200, path
