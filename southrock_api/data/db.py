"""Engine, per-request session and the declarative base."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, current_app, g
from sqlalchemy import Engine, MetaData, create_engine, event, make_url, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

# Stable constraint names so Alembic produces the same DDL on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers keep serving consistent pages while an import writes;
    # busy_timeout makes concurrent writers wait instead of failing at once.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _begin_sqlite(connection: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy documents taking it over.
    connection.exec_driver_sql("BEGIN")


def _create_private(path: str | None) -> None:
    # The files hold learners' personal data and token hashes; SQLite would create them with the
    # umask's mode (usually readable by everyone) and gives its -wal and -shm files the same mode.
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError:
        pass  # SQLite reports the problem itself on the first connection, as it always has


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings this application relies on."""
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    kwargs.setdefault("pool_timeout", 5)
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    return create_engine(url, **kwargs)


def failure_reason(error: SQLAlchemyError) -> str:
    """The driver's first line about a database failure (what failed), never the statement."""
    lines = str(getattr(error, "orig", None) or "").strip().splitlines()
    return lines[0] if lines else type(getattr(error, "orig", None) or error).__name__


class Database:
    """The application's engine and session factory."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        """Drop pooled connections (after a fork they belong to the parent)."""
        self.engine.dispose(close=False)


def get_database(app: Flask | None = None) -> Database:
    """Return the Database of the given or current app."""
    return (app or current_app).extensions["southrock_db"]


def get_session() -> Session:
    """Return the session of the current request, opening it on first use."""
    if "db_session" not in g:
        g.db_session = get_database().session_factory()
    return g.db_session


def close_session(_exc: BaseException | None = None) -> None:
    """End the request's transaction and close its session, returning its connection to the pool."""
    session = g.pop("db_session", None)
    if session is None:
        return
    try:
        if _read_only(session):
            # The database itself refuses any write in this transaction, so COMMIT ends it as
            # ROLLBACK would; but psycopg deallocates every prepared statement on a ROLLBACK,
            # which made PostgreSQL parse and plan each request's statements afresh.
            session.commit()
    except SQLAlchemyError:
        pass  # close() below rolls back; the response has been built already
    finally:
        session.close()


def _read_only(session: Session) -> bool:
    """Whether the session's current transaction is one begin_snapshot made READ ONLY."""
    if not session.in_transaction():
        return False
    return bool(session.connection().get_execution_options().get("postgresql_readonly"))


def execute_compiled(dbapi_connection: Any, compiled: SQLCompiler, parameters: Mapping[str, Any]) -> list[Any]:
    """Run a compiled statement on a DB-API connection and return its rows (if it has any).

    For the statements every request runs: SQLAlchemy's per-execution work (cache key,
    result wrapping) costs more than SQLite takes to answer them. Values are passed as
    given, so the caller binds what the driver takes (ISO text for dates on SQLite).
    """
    values = compiled.construct_params(parameters) or {}
    arguments = tuple(values[name] for name in compiled.positiontup) if compiled.positiontup else values
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(compiled.string, arguments)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


class Prepared:
    """A Core statement compiled once per dialect, run with execute_compiled."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, str], SQLCompiler] = {}
        self._lock = threading.Lock()

    def compiled(self, dialect: Dialect) -> SQLCompiler:
        """The statement compiled for this dialect and driver (drivers differ in parameter style)."""
        key = (dialect.name, dialect.driver)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))  # type: ignore[attr-defined]
            with self._lock:
                self._compiled[key] = compiled
        return compiled

    def rows(self, dbapi_connection: Any, dialect: Dialect, parameters: Mapping[str, Any]) -> list[Any]:
        """Run the statement on a DB-API connection; return its rows."""
        return execute_compiled(dbapi_connection, self.compiled(dialect), parameters)


@dataclass(frozen=True)
class Versions:
    """The data version (changes with every import) and the tokens version (every token change)."""

    data: str
    tokens: str


EMPTY = Versions("empty", "initial")
_versions: Prepared | None = None


def read_versions(session: Session) -> Versions:
    """Read both versions in one statement, in the session's transaction."""
    global _versions
    if _versions is None:
        from southrock_api.data.models import DataState

        _versions = Prepared(
            select(DataState.version, DataState.tokens_version).where(DataState.id == 1)
        )
    connection = session.connection()
    rows = _versions.rows(connection.connection, connection.dialect, {})
    return Versions(*rows[0]) if rows else EMPTY


def begin_snapshot(session: Session) -> None:
    """Make every read of the session's next transaction see one snapshot of the data.

    The caches are keyed by the versions a request reads first, so the versions, the
    counts and the page must come from the same data. A SQLite read transaction already
    is one snapshot; under PostgreSQL's READ COMMITTED each statement has its own, so the
    transaction is REPEATABLE READ, and READ ONLY (the pool resets both when the connection returns).
    """
    bind = session.get_bind()
    # A session joined to a transaction its caller owns reads in that transaction's snapshot.
    if bind.dialect.name == "postgresql" and isinstance(bind, Engine) and not session.in_transaction():
        # READ ONLY too: a request only reads, and close_session may then end it with COMMIT.
        session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})


def _bump(session: Session, column: str) -> str:
    from southrock_api.data.models import DataState

    # A random token, not a counter: a rolled-back transaction can never make
    # two different states share a version.
    version = uuid.uuid4().hex
    result = session.execute(update(DataState).where(DataState.id == 1).values({column: version}))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(DataState(id=1, **{"version": EMPTY.data, "tokens_version": EMPTY.tokens, column: version}))
    return version


def bump_data_version(session: Session) -> str:
    """Give the data a new version; caches keyed by the old one go stale."""
    return _bump(session, "version")


def bump_tokens_version(session: Session) -> str:
    """Give the tokens a new version; every process reloads its token cache on its next request."""
    return _bump(session, "tokens_version")


def init_app(app: Flask) -> None:
    """Create the engine for the app and close sessions after each request."""
    app.extensions["southrock_db"] = Database(app.config["DATABASE_URL"])
    app.teardown_appcontext(close_session)
