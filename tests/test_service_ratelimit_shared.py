"""spec §15: one bucket per site, however many processes and servers serve it (real gunicorn)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
import requests

from tests import databases
from tests.servers import gunicorn, seeded_token

pytestmark = pytest.mark.e2e

LIMIT = 60
REQUESTS = 70


def _fire(base_urls: list[str], authorization: str, count: int) -> list[requests.Response]:
    """Send count authenticated requests at once from many threads, round-robin over the servers."""

    def get(number: int) -> requests.Response:
        url = base_urls[number % len(base_urls)] + "/api/v1"
        return requests.get(url, headers={"Authorization": authorization}, timeout=30)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(get, range(count)))


def _assert_rate_limited(response: requests.Response) -> None:
    assert response.status_code == 429
    assert response.json() == {
        "error": {"message": "API call exceeded rate limit due to too many requests", "code": "E1030"}
    }
    assert response.headers["X-Rate-Limit-Limit"] == str(LIMIT)
    assert response.headers["X-Rate-Limit-Remaining"] == "0"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def _assert_exactly_one_bucket(responses: list[requests.Response]) -> None:
    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == len(responses) - LIMIT, statuses
    for response in responses:
        assert response.headers["X-Rate-Limit-Limit"] == str(LIMIT)
        if response.status_code == 200:
            assert 0 <= int(response.headers["X-Rate-Limit-Remaining"]) < LIMIT
        else:
            _assert_rate_limited(response)


def test_four_workers_share_the_embedded_default_store(backend: str, tmp_path: Path) -> None:
    """gunicorn -w 4 on the embedded store (a SQL table: a SQLite file, or the PostgreSQL database)."""
    with databases.fresh_database(backend, tmp_path) as database_url:
        issued = seeded_token(database_url)
        store = f"sqlite:///{tmp_path / 'ratelimit.sqlite'}" if backend == "sqlite" else database_url
        env = {"SOUTHROCK_DATABASE_URL": database_url, "SOUTHROCK_RATELIMIT_STORAGE_URI": store}
        with gunicorn(env, workers=4) as base_url:
            responses = _fire([base_url], issued.authorization, REQUESTS)
            _assert_exactly_one_bucket(responses)
            _assert_rate_limited(
                requests.get(base_url + "/api/v1", headers={"Authorization": issued.authorization}, timeout=10)
            )


@pytest.mark.redis
@pytest.mark.postgres
def test_two_servers_share_one_bucket_in_redis(tmp_path: Path) -> None:
    """Two gunicorn servers (2 workers each) on one PostgreSQL database and one Redis."""
    prefix = f"southrock-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(databases.REDIS_URL)
    with databases.postgres_database(tmp_path) as database_url, ExitStack() as servers:
        issued = seeded_token(database_url)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": databases.REDIS_URL,
            "SOUTHROCK_RATELIMIT_KEY_PREFIX": prefix,
        }
        base_urls = [servers.enter_context(gunicorn(env, workers=2)) for _ in range(2)]
        try:
            responses = _fire(base_urls, issued.authorization, REQUESTS)
            _assert_exactly_one_bucket(responses)
            for base_url in base_urls:
                _assert_rate_limited(
                    requests.get(base_url + "/api/v1", headers={"Authorization": issued.authorization}, timeout=10)
                )
            # The count lives in Redis, under this site's prefix.
            assert client.keys(f"*{prefix}*")
        finally:
            for key in client.scan_iter(f"*{prefix}*"):
                client.delete(key)
