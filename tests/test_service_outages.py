"""A dead or hung limiter store and a vanished database never hang the API or leak, and both heal."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable

import pytest
import redis
import requests
from sqlalchemy import make_url

from tests import databases
from tests.servers import TcpProxy, free_port, gunicorn, redis_server, seeded_token, silent_server

pytestmark = pytest.mark.e2e

# Every request must come back well within this; a hang shows up as a client-side timeout.
BOUND = 5
INTERNAL_ERROR = {"error": {"message": "Internal Server Error", "code": "E9010"}}


def _get(base_url: str, path: str, authorization: str | None = None) -> requests.Response:
    headers = {"Authorization": authorization} if authorization else {}
    return requests.get(base_url + path, headers=headers, timeout=BOUND)


def _served(response: requests.Response) -> None:
    """Assert a successful API answer that still carries the (possibly local) rate-limit headers."""
    assert response.status_code == 200, response.text
    assert response.headers["X-Rate-Limit-Limit"] == "1000"
    assert int(response.headers["X-Rate-Limit-Remaining"]) < 1000


def _until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "did not happen in time"
        time.sleep(0.5)


@pytest.mark.redis
def test_redis_down_or_hung_is_served_locally_and_recovers(backend: str, tmp_path: Path) -> None:
    """Closed port, then a real Redis, then a server that never answers, then Redis again."""
    port = free_port()
    prefix = f"southrock-test-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "gunicorn.log"
    with databases.fresh_database(backend, tmp_path) as database_url:
        issued = seeded_token(database_url)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:{port}/0",
            "SOUTHROCK_RATELIMIT_KEY_PREFIX": prefix,
            # Polling for recovery must not run into the site's bucket.
            "SOUTHROCK_RATE_LIMIT": "1000 per minute",
        }
        # One worker, so that "this request was counted in Redis" means "the process recovered".
        with gunicorn(env, workers=1, log_path=log_path) as base_url:

            def api() -> requests.Response:
                return _get(base_url, "/api/v1", issued.authorization)

            def failed_authentication() -> None:
                response = _get(base_url, "/api/v1", "Basic bm8tc3VjaDprZXk=")
                assert response.status_code == 401

            def ready() -> int:
                return _get(base_url, "/readyz").status_code

            def counted_in_redis(client: redis.Redis) -> Callable[[], bool]:
                def check() -> bool:
                    _served(api())
                    return bool(client.keys(f"*{prefix}/site/site*"))

                return check

            # Nothing listens on the store's port.
            for _ in range(5):
                _served(api())
            failed_authentication()
            assert ready() == 503
            assert _get(base_url, "/healthz").status_code == 200

            with redis_server(port) as redis_url:
                _until(counted_in_redis(redis.Redis.from_url(redis_url)), 70)
                assert ready() == 200

            # The store's port accepts connections and never answers.
            with silent_server(port):
                for _ in range(5):
                    _served(api())
                failed_authentication()
                assert ready() == 503

            with redis_server(port) as redis_url:
                _until(counted_in_redis(redis.Redis.from_url(redis_url)), 70)
                assert ready() == 200
    log = log_path.read_text()
    # flask-limiter's notice, named by the error: refused first, then hung.
    assert "Rate limit storage unreachable - falling back to in-memory storage (ConnectionError)" in log
    assert "Rate limit storage unreachable - falling back to in-memory storage (TimeoutError)" in log
    assert "Rate limit storage recovered" in log
    assert '"status": 500' not in log


@pytest.mark.postgres
def test_database_outage_answers_e9010_and_heals(tmp_path: Path) -> None:
    """PostgreSQL cut off behind a TCP proxy: 500 E9010 with no internals, /readyz 503, then back."""
    log_path = tmp_path / "gunicorn.log"
    with databases.postgres_database(tmp_path) as database_url:
        issued = seeded_token(database_url)
        proxy = TcpProxy(("127.0.0.1", make_url(database_url).port or 5432))
        proxy.start()
        try:
            proxied = make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False)
            env = {
                "SOUTHROCK_DATABASE_URL": proxied,
                "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
            }
            with gunicorn(env, workers=2, log_path=log_path) as base_url:

                def api() -> requests.Response:
                    return _get(base_url, "/api/v1", issued.authorization)

                for _ in range(4):
                    assert api().status_code == 200
                assert _get(base_url, "/readyz").status_code == 200

                proxy.stop()
                for _ in range(4):
                    response = api()
                    assert response.status_code == 500
                    assert response.headers["Content-Type"] == "application/json"
                    # Exactly the catalogue's text: no traceback, SQL, driver message or key.
                    assert response.json() == INTERNAL_ERROR
                    for secret in (issued.private_key, issued.public_key):
                        assert secret not in response.text
                readiness = _get(base_url, "/readyz")
                assert readiness.status_code == 503
                assert readiness.json()["checks"]["database"] is False
                assert _get(base_url, "/healthz").status_code == 200

                proxy.start()
                # The pool's pre-ping throws away the dead connections; no restart needed.
                _until(lambda: api().status_code == 200, 10)
                for _ in range(6):
                    assert api().status_code == 200
                assert _get(base_url, "/readyz").status_code == 200
        finally:
            proxy.stop()
    log = log_path.read_text()
    # The log keeps the details the client never sees.
    assert "OperationalError" in log
