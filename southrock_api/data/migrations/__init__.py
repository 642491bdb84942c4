"""The schema's Alembic migrations (env.py, versions/) and the helpers that run and check them."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from southrock_api.data.db import Base, failure_reason, get_database, writing_session

log = logging.getLogger(__name__)
SCRIPT_LOCATION = os.path.dirname(__file__)


def include_name(name: str | None, type_: str, _parent: Mapping[str, str | None]) -> bool:
    """Leave out tables other stores own, such as the limiter's counters in the same database."""
    return type_ != "table" or name in Base.metadata.tables


def alembic_config(app: Flask) -> Config:
    """Return an Alembic config pointed at this package's migrations and the app's database."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", app.config["DATABASE_URL"].replace("%", "%%"))
    return cfg


def upgrade(app: Flask, revision: str = "head") -> None:
    """Bring the app's database schema up to the given revision."""
    cfg = alembic_config(app)
    with get_database(app).engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


@functools.lru_cache(maxsize=1)
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """Every revision this release's migrations know, and their heads."""
    scripts = ScriptDirectory(SCRIPT_LOCATION)
    return frozenset(script.revision for script in scripts.walk_revisions()), frozenset(scripts.get_heads())


def serves(connection: Connection) -> bool:
    """Whether the database's schema is one this release can serve.

    Its own newest revision, or one it does not know: a later release has migrated, and this one
    keeps serving until it is replaced (a rolling deploy migrates first). Not a database that was
    never migrated, nor one behind this release's migrations.
    """
    current = frozenset(MigrationContext.configure(connection).get_current_heads())
    known, heads = _revisions()
    return bool(current) and (current == heads or not current <= known)


class NotMigrated(Exception):
    """The database holds no schema, or an older one than this release's."""

    def __init__(self) -> None:
        super().__init__("the database is not migrated for this release: run `southrock db upgrade` first")


def migrated_session(
    app: Flask | None = None, wait: float | None = None, on_wait: Callable[[float], None] | None = None
) -> Session:
    """Open a session on the app's database, or raise NotMigrated (commands' first step).

    With `wait`, the session is one that writes: on SQLite it holds the write lock from the
    start, waited for up to `wait` seconds while another command (an import) holds it.
    """
    factory = get_database(app).session_factory
    if wait is None:
        session = factory()
    else:
        session = writing_session(factory, wait, on_wait or (lambda _waited: None))
    try:
        if not serves(session.connection()):
            raise NotMigrated()
    except BaseException:
        session.close()
        raise
    return session


def warn_if_not_migrated(app: Flask) -> None:
    """Log, once at start-up, a database this release cannot serve: every API request would fail."""
    try:
        with get_database(app).engine.connect() as connection:
            migrated = serves(connection)
    except SQLAlchemyError as error:
        log.warning("the database does not answer at start-up: %s", failure_reason(error))
        return
    if not migrated:
        log.error("%s", NotMigrated())
