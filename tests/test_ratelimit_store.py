"""The limiter's stores: atomic fixed windows shared by every process, read back from the increment."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import redis
from limits.storage import storage_from_string
from sqlalchemy import func, insert, select

from southrock_api.api.ratelimit_store import RedisWindowStorage, SQLStorage, counters
from tests import databases


@pytest.fixture()
def store(backend: str, tmp_path: Path) -> Iterator[SQLStorage]:
    with databases.fresh_database(backend, tmp_path) as url:
        storage = SQLStorage(url)
        yield storage
        storage.engine.dispose()


def test_windows_count_up_and_restart_when_they_end(store: SQLStorage) -> None:
    assert [store.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert store.get("k") == 3
    assert time.time() < store.get_expiry("k") <= time.time() + 60
    assert store.incr("short", 1) == 1
    time.sleep(1.1)
    assert store.get("short") == 0
    assert store.incr("short", 1) == 1


def test_concurrent_increments_are_never_lost(store: SQLStorage) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = sorted(pool.map(lambda _: store.incr("shared", 60), range(80)))
    assert counts == list(range(1, 81))


def test_a_new_window_forgets_windows_that_ended_long_ago(store: SQLStorage) -> None:
    store.incr("fresh", 60)
    long_ago = time.time() - 7200
    with store.engine.begin() as connection:
        connection.execute(insert(counters), [{"key": f"old-{n}", "count": 5, "expires_at": long_ago} for n in range(20)])
    store.incr("another", 60)  # starts a window, which triggers the clean-up
    with store.engine.connect() as connection:
        left = set(connection.execute(select(counters.c.key)).scalars())
        assert connection.execute(select(func.count()).select_from(counters)).scalar_one() == 2
    assert left == {"fresh", "another"}


def test_the_window_just_incremented_is_read_back_from_the_increment(store: SQLStorage) -> None:
    from sqlalchemy import update

    assert store.incr("site", 60) == 1
    with store.engine.begin() as connection:  # other workers count on meanwhile
        connection.execute(update(counters).where(counters.c.key == "site").values(count=7))
    # The headers of this request describe this request's own increment...
    assert store.get("site") == 1
    store.get_expiry("site")
    # ...and any later read goes to the store.
    assert store.get("site") == 7
    with ThreadPoolExecutor(max_workers=1) as pool:
        store.incr("site", 60)
        assert pool.submit(store.get, "site").result() == 8  # another thread never sees this thread's memory


def test_a_connection_the_server_dropped_fails_one_call_and_is_replaced(tmp_path: Path) -> None:
    import psycopg

    with databases.postgres_database(tmp_path) as url:
        store = SQLStorage(url)
        try:
            assert store.incr("site", 60) == 1
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
            # The pooled connection is dead: one call fails (flask-limiter then counts in
            # memory), the connection is discarded rather than pinged, and the next call reconnects.
            with pytest.raises(store.base_exceptions):
                store.incr("site", 60)
            assert store.incr("site", 60) == 2
        finally:
            store.engine.dispose()


@pytest.fixture()
def redis_store() -> Iterator[RedisWindowStorage]:
    storage = storage_from_string(databases.REDIS_URL, key_prefix=f"test-store-{time.time_ns()}")
    assert isinstance(storage, RedisWindowStorage)
    yield storage
    storage.reset()


@pytest.mark.redis
def test_redis_windows_count_up_and_restart_when_they_end(redis_store: RedisWindowStorage) -> None:
    assert [redis_store.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert redis_store.get("k") == 3
    assert time.time() + 59 < redis_store.get_expiry("k") <= time.time() + 60
    assert redis_store.incr("short", 1) == 1
    time.sleep(1.1)
    assert redis_store.get("short") == 0
    assert redis_store.incr("short", 1) == 1


@pytest.mark.redis
def test_redis_reads_the_window_just_incremented_from_the_increment(redis_store: RedisWindowStorage) -> None:
    other = redis.Redis.from_url(databases.REDIS_URL)
    assert redis_store.incr("site", 60) == 1
    other.set(redis_store.prefixed_key("site"), 7, keepttl=True)  # other workers count on meanwhile
    # The headers of this request describe this request's own increment...
    assert redis_store.get("site") == 1
    assert redis_store.get_expiry("site") > time.time() + 59
    # ...and any later read goes to Redis.
    assert redis_store.get("site") == 7
    with ThreadPoolExecutor(max_workers=1) as pool:
        redis_store.incr("site", 60)
        assert pool.submit(redis_store.get, "site").result() == 8  # another thread never sees this thread's memory


@pytest.mark.redis
def test_redis_concurrent_increments_are_never_lost(redis_store: RedisWindowStorage) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = sorted(pool.map(lambda _: redis_store.incr("shared", 60), range(80)))
    assert counts == list(range(1, 81))


def test_sentinel_and_cluster_uris_keep_limits_own_stores() -> None:
    assert not isinstance(
        storage_from_string("redis+sentinel://127.0.0.1:26379/mymaster"), RedisWindowStorage
    )


@pytest.mark.redis
def test_a_redis_window_is_fixed_from_its_first_increment(redis_store: RedisWindowStorage) -> None:
    assert redis_store.incr("fixed", 3) == 1
    first = time.time()
    time.sleep(1.0)
    assert redis_store.incr("fixed", 3) == 2
    # A later hit does not push the window's end back: it still ends 3 s after the first one.
    assert redis_store.get_expiry("fixed") <= first + 3.05
    time.sleep(max(0.0, first + 3.2 - time.time()))
    assert redis_store.incr("fixed", 3) == 1


def test_an_increment_is_recalled_only_briefly(store: SQLStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import update

    from southrock_api.api import ratelimit_store

    clock = [1000.0]
    monkeypatch.setattr(ratelimit_store.time, "monotonic", lambda: clock[0])
    assert store.incr("site", 60) == 1
    with store.engine.begin() as connection:
        connection.execute(update(counters).where(counters.c.key == "site").values(count=7))
    clock[0] += ratelimit_store.RECENT_SECONDS  # no header read came (a 429 skips it): memory is stale now
    assert store.get("site") == 7
