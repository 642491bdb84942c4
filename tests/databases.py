"""Which database the suite runs on, and fresh databases for tests that need their own."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
import redis

POSTGRES_ADMIN_URL = os.environ.get("SOUTHROCK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SOUTHROCK_TEST_REDIS", "redis://127.0.0.1:6379/15")
# Set in CI: a missing PostgreSQL or Redis is a failure, not a skip.
REQUIRE_SERVICES = os.environ.get("SOUTHROCK_TEST_REQUIRE_SERVICES", "") not in ("", "0", "false")


def selected_backend() -> str:
    """The database this run targets: sqlite (default) or postgresql."""
    return os.environ.get("SOUTHROCK_TEST_DATABASE", "sqlite")


def postgres_available() -> bool:
    """Whether the PostgreSQL server answers."""
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def redis_available() -> bool:
    """Whether the Redis server answers."""
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _sqlalchemy_url(libpq_url: str) -> str:
    return libpq_url.replace("postgresql://", "postgresql+psycopg://", 1)


def _linguistic(admin: psycopg.Connection) -> str:
    """CREATE DATABASE options for an en-US (ICU) default collation, where the server has ICU.

    Many installations default to a linguistic collation; tests run on one so that nothing
    comes to rely on the byte order of a C-locale server.
    """
    found = admin.execute("SELECT 1 FROM pg_collation WHERE collprovider = 'i' LIMIT 1").fetchone()
    if found is None:
        if REQUIRE_SERVICES:
            pytest.fail("PostgreSQL has no ICU collations: the suite needs one (en-US) in CI")
        return ""
    return "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' ENCODING 'UTF8'"


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'southrock-{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    name = f"southrock_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" {_linguistic(admin)}')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield _sqlalchemy_url(f"{base}/{name}")
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_database(directory: Path) -> Iterator[str]:
    """Yield a fresh PostgreSQL database whatever the run targets; skip without one (fail in CI)."""
    if not postgres_available():
        message = "PostgreSQL is not reachable at " + POSTGRES_ADMIN_URL
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    with fresh_database("postgresql", directory) as url:
        yield url
