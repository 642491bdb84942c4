"""Engine, per-request session and the declarative base."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, MetaData, create_engine, event, select, update
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

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


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings this application relies on."""
    if url.startswith("sqlite"):
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
    """Close the request's session, returning its connection to the pool."""
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def current_data_version(session: Session) -> str:
    """Return the token that changes whenever imported data changes."""
    from southrock_api.models import DataState

    version = session.scalar(select(DataState.version).where(DataState.id == 1))
    return version or "empty"


def bump_data_version(session: Session) -> str:
    """Give the data a new version; caches keyed by the old one go stale."""
    from southrock_api.models import DataState

    # A random token, not a counter: a rolled-back transaction can never make
    # two different data sets share a version.
    version = uuid.uuid4().hex
    result = session.execute(update(DataState).where(DataState.id == 1).values(version=version))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(DataState(id=1, version=version))
    return version


def init_app(app: Flask) -> None:
    """Create the engine for the app and close sessions after each request."""
    app.extensions["southrock_db"] = Database(app.config["DATABASE_URL"])
    app.teardown_appcontext(close_session)
