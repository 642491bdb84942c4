"""Engine, per-request session and the declarative base."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, current_app, g
from sqlalchemy import Engine, MetaData, create_engine, event, make_url, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

from southrock_api.data import deadlines

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


def _sqlite_setup(busy_timeout: float) -> Any:
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers keep serving consistent pages while an import writes;
        # busy_timeout makes concurrent writers wait instead of failing at once.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    return configure


def _sqlite_begin(busy_timeout: float) -> Any:
    def begin(connection: Any) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy documents taking it over.
        step = connection.get_execution_options().get(WRITE_LOCK_OPTION)
        if not step:
            connection.exec_driver_sql("BEGIN")
            return
        # Take the write lock now, before the first read: a transaction that has read cannot wait
        # for another writer (an import) to finish, SQLite refuses it at once. Waited for `step`
        # seconds at most per attempt, so that a waiting command can say so (writing_session).
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(step * 1000)}")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")

    return begin


def _create_private(path: str | None) -> None:
    # The files hold learners' personal data and token hashes; SQLite would create them with the
    # umask's mode (usually readable by everyone) and gives its -wal and -shm files the same mode.
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError:
        pass  # SQLite reports the problem itself on the first connection, as it always has


# Bounds of a connection made outside any setting (tests, tools): generous, never infinite.
DEFAULT_TIMEOUT = 10.0
# PostgreSQL's own statement and lock timeouts, as a share of the request's bound.
SERVER_SHARE = 0.8


def _postgresql_bounds(timeout: float, statements: bool) -> dict[str, Any]:
    """libpq parameters that bound a connection's waits on the server and on the network."""
    milliseconds = max(1, int(timeout * 1000))
    bounds: dict[str, Any] = {
        "connect_timeout": max(1, min(5, round(timeout))),
        # A peer that has vanished: probes on an idle connection, and unacknowledged data.
        "keepalives": 1,
        "keepalives_idle": max(1, int(timeout / 2)),
        "keepalives_interval": max(1, int(timeout / 6)),
        "keepalives_count": 3,
        "tcp_user_timeout": milliseconds,
    }
    if statements:
        # Sent with the connection's start-up packet: no round trip. A little under the bound, so
        # that the server usually ends a slow statement or lock wait itself, before the client's
        # deadline does: its resources are freed and the connection stays usable.
        server = max(1, int(milliseconds * SERVER_SHARE))
        bounds["options"] = f"-c statement_timeout={server} -c lock_timeout={server}"
    return bounds


def make_engine(url: str, timeout: float = DEFAULT_TIMEOUT, statements: bool = True, **kwargs: Any) -> Engine:
    """Create an engine with the settings this application relies on.

    `timeout` bounds each wait on the database outside a deadline (deadlines.deadline), and on
    PostgreSQL, when `statements`, every statement and lock wait the server runs for it.
    """
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_setup(timeout))
        event.listen(engine, "begin", _sqlite_begin(timeout))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    # Waiting for a free pooled connection is a wait too.
    kwargs.setdefault("pool_timeout", min(5.0, timeout))
    kwargs["connect_args"] = {**_postgresql_bounds(timeout, statements), **kwargs.get("connect_args", {})}
    engine = create_engine(url, **kwargs)
    bounded = deadlines.connection_class(timeout)

    @event.listens_for(engine, "do_connect")
    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return deadlines.connect(bounded, cargs, cparams)

    return engine


def failure_reason(error: Exception) -> str:
    """The driver's first line about a database failure (what failed), never the statement."""
    lines = str(getattr(error, "orig", None) or "").strip().splitlines()
    return lines[0] if lines else type(getattr(error, "orig", None) or error).__name__


class Database:
    """The application's engine and session factory."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self.engine = make_engine(url, timeout)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)

    def for_commands(self, timeout: float) -> None:
        """Serve commands, not requests: no server-side statement bound, `timeout` for each answer.

        An import's statements may rightly run for minutes; a frozen database still cannot hold
        a command forever.
        """
        self.engine.dispose()
        self.engine = make_engine(self.url, timeout, statements=False)
        self.session_factory.configure(bind=self.engine)

    def dispose(self) -> None:
        """Drop pooled connections (after a fork they belong to the parent)."""
        self.engine.dispose(close=False)


def get_database(app: Flask | None = None) -> Database:
    """Return the Database of the given or current app."""
    return (app or current_app).extensions["southrock_db"]


# The execution option that makes a SQLite transaction begin by taking the write lock (its value:
# the seconds one attempt waits), and how often a command waiting for that lock says so.
WRITE_LOCK_OPTION = "southrock_write_lock_step"
WRITE_LOCK_STEP = 5.0


class WriteLockTimeout(Exception):
    """Another connection held SQLite's write lock longer than a command would wait for it."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"gave up after {waited:.0f} s waiting for the database's write lock")
        self.waited = waited


def writing_session(factory: Callable[[], Session], wait: float, on_wait: Callable[[float], None]) -> Session:
    """Open a session that may write, holding SQLite's write lock; wait up to `wait` seconds for it.

    `on_wait` is told the seconds waited so far after each WRITE_LOCK_STEP spent waiting. On
    PostgreSQL, whose writers do not lock each other out of a whole database, the session is
    returned at once.
    """
    started = time.monotonic()
    while True:
        session = factory()
        if session.get_bind().dialect.name != "sqlite":
            return session
        step = max(0.001, min(WRITE_LOCK_STEP, wait - (time.monotonic() - started)))
        try:
            session.connection(execution_options={WRITE_LOCK_OPTION: step})
            return session
        except OperationalError as error:
            session.close()
            if "database is locked" not in str(error.orig):
                raise
        waited = time.monotonic() - started
        if waited >= wait:
            raise WriteLockTimeout(waited)
        on_wait(waited)


# The least time a request's connection is given to end its transaction, even past the deadline.
RELEASE_SECONDS = 1.0


def get_session() -> Session:
    """Return the session of the current request, opening it on first use.

    From then on every wait of the request on the database ends within DATABASE_TIMEOUT.
    """
    if "db_session" not in g:
        database = get_database()
        g.db_deadline = deadlines.arm(database.timeout, "the request's deadline")
        g.db_session = database.session_factory()
    return g.db_session


def close_session(_exc: BaseException | None = None) -> None:
    """End the request's transaction and close its session, returning its connection to the pool."""
    session = g.pop("db_session", None)
    if session is not None:
        end_session(session, g.pop("db_deadline"))


def take_session() -> tuple[Session, object]:
    """Take the request's session and deadline out of the request, for a streamed body to end with end_session.

    Flask tears the request down when the view returns, before the server has sent a streamed
    body: a stream read through the request's session would find it closed, and read the rest
    of its rows in a new transaction, no longer the snapshot its first rows came from.
    """
    get_session()
    return g.pop("db_session"), g.pop("db_deadline")


def end_session(session: Session, deadline: object) -> None:
    """End a session's transaction and close it (the request's, at teardown; a stream's, when it ends)."""
    left = deadlines.remaining() or 0.0
    try:
        deadlines.disarm(deadline)
    except ValueError:
        pass  # a stream ended in another context than the request's: nothing there to remove
    with deadlines.deadline(max(left, RELEASE_SECONDS), "ending the request's transaction"):
        try:
            # Past its deadline the request's connection has failed, or was never had: asking
            # for it again would open a new one only to end a transaction that did nothing.
            if left > 0 and _read_only(session):
                # The database itself refuses any write in this transaction, so COMMIT ends it as
                # ROLLBACK would; but psycopg deallocates every prepared statement on a ROLLBACK,
                # which made PostgreSQL parse and plan each request's statements afresh.
                session.commit()
        except (SQLAlchemyError, deadlines.DatabaseTimeout):
            pass  # close() below rolls back; the response has been built already
        finally:
            session.close()


def _read_only(session: Session) -> bool:
    """Whether the session's current transaction is one begin_snapshot made READ ONLY."""
    if not session.in_transaction():
        return False
    connection = session.connection()
    # A connection a failed wait closed was dropped from the pool (by SQLAlchemy, or by
    # execute_compiled on the pooled connection itself): there is nothing to end.
    if connection.invalidated or not connection.connection.is_valid:
        return False
    return bool(connection.get_execution_options().get("postgresql_readonly"))


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
    except Exception:
        # SQLAlchemy does not see this statement, so it cannot tell a lost connection (a wait
        # that ran out closes it): drop it from the pool here, as SQLAlchemy would.
        if getattr(dbapi_connection, "closed", False) and hasattr(dbapi_connection, "invalidate"):
            dbapi_connection.invalidate()
        raise
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
    app.extensions["southrock_db"] = Database(app.config["DATABASE_URL"], float(app.config["DATABASE_TIMEOUT"]))
    app.teardown_appcontext(close_session)
