"""Schema migrations with Alembic, driven from the app's engine."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Connection

from southrock_api.db import Base, get_database

SCRIPT_LOCATION = os.path.join(os.path.dirname(__file__), "migrations")


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
