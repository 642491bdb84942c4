"""`limits` storages that answer a window's headers from their own increment.

SQLStorage keeps fixed-window counters in SQLite or PostgreSQL, so every worker and host
shares one counter without another server. RedisWindowStorage is limits' own Redis store
with the same saving: the increment returns the window's end too.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from limits.storage import RedisStorage, Storage
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, bindparam, case, delete, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateIndex, CreateTable

from southrock_api.config import RATELIMIT_STORAGE_TIMEOUT
from southrock_api.data.db import Prepared, make_engine

# How long after its own increment a thread may answer a read of that window from memory.
RECENT_SECONDS = 1.0
_metadata = MetaData()
# Owned by the limiter, not the application schema: like Redis, it may live elsewhere.
counters = Table(
    "rate_limit_counters",
    _metadata,
    Column("key", String(255), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)


class _OwnWindow:
    """This thread's latest increment, which the response's rate-limit headers read next.

    Answering them from it saves the store two round trips (the count, then the end) and
    describes the request exactly. Each window is recalled once, and only briefly: any
    later read goes to the store, where other workers count too.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def remember(self, key: str, count: int, ends: float) -> None:
        """Keep the window this thread has just incremented."""
        self._local.window = (key, count, ends, time.monotonic())

    def recall(self, key: str) -> tuple[int, float] | None:
        """Return (count, end) of the key's window if this thread has just incremented it."""
        window = getattr(self._local, "window", None)
        if window is None or window[0] != key or time.monotonic() - window[3] >= RECENT_SECONDS:
            return None
        return window[1], window[2]

    def forget(self) -> None:
        """Send the next read to the store."""
        self._local.window = None


class SQLStorage(Storage):
    """Fixed-window counters in SQLite or PostgreSQL, updated with one atomic upsert."""

    STORAGE_SCHEME = ["sqlite", "postgresql", "postgresql+psycopg"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        # Each statement is its own transaction (the upsert is atomic by itself), which on
        # PostgreSQL saves a BEGIN and a COMMIT per request. A connection the server dropped is
        # discarded when a statement finds out (see _run) instead of pinged before every use.
        # A PostgreSQL store that does not answer within `timeout` has failed (flask-limiter then
        # counts in memory), as a Redis store does (data/deadlines.py bounds every wait). SQLite's
        # writers queue for its one lock, briefly: they keep the default busy wait.
        self.timeout = float(options.get("timeout", RATELIMIT_STORAGE_TIMEOUT))
        self.engine = (
            make_engine(uri)
            if uri.startswith("sqlite")
            else make_engine(uri, self.timeout, isolation_level="AUTOCOMMIT", pool_pre_ping=False)
        )
        self._driver_error: Any = self.engine.dialect.loaded_dbapi.Error  # the DB-API module's Error
        self._schema_ready = False
        self._own = _OwnWindow()
        insert = (sqlite.insert if uri.startswith("sqlite") else postgresql.insert)(counters)
        # Built once: the values are bound per call, so SQLAlchemy's statement cache always hits.
        amount = bindparam("amount", type_=Integer)
        now, ends = bindparam("now", type_=Float), bindparam("ends", type_=Float)
        expired = counters.c.expires_at <= now
        self._upsert = Prepared(
            insert.values(key=bindparam("key"), count=amount, expires_at=ends)
            .on_conflict_do_update(
                index_elements=[counters.c.key],
                set_={
                    "count": case((expired, amount), else_=counters.c.count + amount),
                    "expires_at": case((expired, ends), else_=counters.c.expires_at),
                },
            )
            .returning(counters.c.count, counters.c.expires_at)
        )
        self._window = Prepared(
            select(counters.c.count, counters.c.expires_at).where(counters.c.key == bindparam("key"))
        )

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        """The errors that mean the store failed (flask-limiter then counts in memory)."""
        return (SQLAlchemyError, self._driver_error)

    def _run(self, statement: Prepared, parameters: dict[str, Any]) -> list[Any]:
        """Run one statement on a pooled connection's DB-API cursor (its own transaction)."""
        self._ensure_schema()
        connection = self.engine.raw_connection()
        try:
            rows = statement.rows(connection, self.engine.dialect, parameters)
            connection.commit()
            return rows
        except self._driver_error as error:
            if self.engine.dialect.is_disconnect(error, connection.dbapi_connection, None):
                connection.invalidate()  # never handed out again: the next use connects afresh
            raise
        finally:
            connection.close()

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        # IF NOT EXISTS rather than check-then-create: a check would open a read transaction
        # that SQLite cannot upgrade to a write while another worker creates the table.
        try:
            with self.engine.begin() as connection:
                connection.execute(CreateTable(counters, if_not_exists=True))
                for index in counters.indexes:
                    connection.execute(CreateIndex(index, if_not_exists=True))
        except SQLAlchemyError:
            # PostgreSQL may still refuse the loser of two simultaneous creations; that is fine.
            if not inspect(self.engine).has_table(counters.name):
                raise
        self._schema_ready = True

    def dispose(self) -> None:
        """Drop pooled connections (after a fork they belong to the parent)."""
        self.engine.dispose(close=False)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add amount to the key's window, starting a new window when the old one has ended."""
        now = time.time()
        parameters = {"key": key, "amount": amount, "now": now, "ends": now + expiry}
        [(count, expires_at)] = self._run(self._upsert, parameters)
        self._own.remember(key, int(count), float(expires_at))
        if count == amount:
            # A new window: a cheap moment to forget windows that ended long ago.
            self._forget_before(now - 3600)
        return int(count)

    def _read(self, key: str) -> tuple[int, float]:
        """Return (count, end) of the key's window, from this thread's own increment if just made."""
        recent = self._own.recall(key)
        if recent is not None:
            return recent
        rows = self._run(self._window, {"key": key})
        return (int(rows[0][0]), float(rows[0][1])) if rows else (0, 0.0)

    def _forget_before(self, cutoff: float) -> None:
        # Its own transaction, holding no counter's lock, and skipping rows another transaction
        # holds (PostgreSQL; SQLite has one writer): cleaners never wait on each other, so two
        # of them can never deadlock. Best effort: a failed clean-up is retried next window.
        stale = (
            select(counters.c.key)
            .where(counters.c.expires_at < cutoff)
            .with_for_update(skip_locked=True)
        )
        try:
            with self.engine.begin() as connection:
                connection.execute(delete(counters).where(counters.c.key.in_(stale)))
        except SQLAlchemyError:
            pass

    def get(self, key: str) -> int:
        """Return the count of the key's current window (0 if none)."""
        count, ends = self._read(key)
        return count if ends > time.time() else 0

    def get_expiry(self, key: str) -> float:
        """Return when the key's window ends (now, if there is none)."""
        _count, ends = self._read(key)
        self._own.forget()  # a window's stats are read once per increment
        now = time.time()
        return ends if ends > now else now

    def check(self) -> bool:
        """Whether the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        """Clear every counter."""
        self._ensure_schema()
        with self.engine.begin() as connection:
            return connection.execute(delete(counters)).rowcount

    def clear(self, key: str) -> None:
        """Clear one counter."""
        self._ensure_schema()
        with self.engine.begin() as connection:
            connection.execute(delete(counters).where(counters.c.key == key))


# limits' incr_expire.lua, returning the window's remaining milliseconds with its count.
_INCR_EXPIRE_TTL = b"""
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("pttl", KEYS[1])}
"""


class RedisWindowStorage(RedisStorage):
    """limits' Redis store, answering the headers' reads from the increment (one round trip, not three)."""

    # Registered in place of limits' own class for these schemes (Sentinel and Cluster keep theirs).
    STORAGE_SCHEME = ["redis", "rediss", "redis+unix"]

    def initialize_storage(self, uri: str) -> None:
        """Register limits' scripts and the increment that also returns the window's end."""
        super().initialize_storage(uri)
        self._own = _OwnWindow()
        self._incr_expire_ttl = self.get_connection().register_script(_INCR_EXPIRE_TTL)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add amount to the key's window (started with the first increment) and remember its end."""
        count, ttl_ms = self._incr_expire_ttl([self.prefixed_key(key)], [expiry, amount])
        self._own.remember(key, int(count), time.time() + max(int(ttl_ms), 0) / 1000)
        return int(count)

    def get(self, key: str) -> int:
        """Return the count of the key's current window (0 if none)."""
        recent = self._own.recall(key)
        if recent is None:
            return super().get(key)
        count, ends = recent
        return count if ends > time.time() else 0

    def get_expiry(self, key: str) -> float:
        """Return when the key's window ends."""
        recent = self._own.recall(key)
        self._own.forget()  # a window's stats are read once per increment
        return max(recent[1], time.time()) if recent is not None else super().get_expiry(key)
