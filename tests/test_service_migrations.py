"""Alembic migrations build the models' exact schema from empty, on the run's database."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Engine, UniqueConstraint, func, inspect, select

from southrock_api import create_app
from southrock_api.api import ratelimit_store  # noqa: F401  (registers the tables)
from southrock_api.data import models  # noqa: F401  (registers the tables)
from southrock_api.data.db import EMPTY, Base, get_database, read_versions
from southrock_api.data.models import DataState
from southrock_api.data.migrations import alembic_config, include_name
from tests import databases


@pytest.fixture()
def empty_app(backend: str, tmp_path: Path) -> Iterator[Flask]:
    """An app on a brand-new, empty database of the run's backend."""
    with databases.fresh_database(backend, tmp_path) as url:
        app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://", "TESTING": True})
        yield app
        get_database(app).engine.dispose()


def _upgrade(app: Flask) -> str:
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return result.output


def _engine(app: Flask) -> Engine:
    return get_database(app).engine


def test_db_upgrade_applies_every_migration_from_empty(empty_app: Flask) -> None:
    _upgrade(empty_app)
    head = ScriptDirectory.from_config(alembic_config(empty_app)).get_current_head()
    with _engine(empty_app).connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head
    assert set(Base.metadata.tables) <= set(inspect(_engine(empty_app)).get_table_names())


def test_an_upgraded_database_has_its_one_state_row(empty_app: Flask) -> None:
    _upgrade(empty_app)
    # Created by the migration, so the first token change and the first import never race for it.
    with get_database(empty_app).session_factory() as session:
        assert read_versions(session) == EMPTY
        assert session.scalar(select(func.count()).select_from(DataState)) == 1


def test_db_upgrade_twice_is_harmless(empty_app: Flask) -> None:
    _upgrade(empty_app)
    _upgrade(empty_app)


def test_models_and_migrations_agree(empty_app: Flask) -> None:
    """Autogenerate finds nothing to do: the migrations build exactly what the models declare."""
    _upgrade(empty_app)
    # No table beyond the models' and Alembic's own: the comparison below leaves other tables out.
    assert set(inspect(_engine(empty_app)).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    # The limiter's own table may share the database; it is not the schema's to drop.
    ratelimit_store.counters.metadata.create_all(_engine(empty_app))
    with _engine(empty_app).connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "compare_server_default": True, "include_name": include_name},
        )
        assert compare_metadata(context, Base.metadata) == []


def test_constraint_names_follow_the_naming_convention(empty_app: Flask) -> None:
    """Foreign keys, unique constraints and indexes carry the metadata's names on every database."""
    _upgrade(empty_app)
    inspector = inspect(_engine(empty_app))
    for table in Base.metadata.sorted_tables:
        declared_fks = {fk.name for fk in table.foreign_key_constraints}
        declared_uniques = {c.name for c in table.constraints if isinstance(c, UniqueConstraint)}
        declared_indexes = {index.name for index in table.indexes}
        assert {fk["name"] for fk in inspector.get_foreign_keys(table.name)} == declared_fks
        assert {u["name"] for u in inspector.get_unique_constraints(table.name)} == declared_uniques
        # PostgreSQL also reports the index behind each unique constraint; that one is not ours.
        indexes = [i for i in inspector.get_indexes(table.name) if "duplicates_constraint" not in i]
        assert {i["name"] for i in indexes} == declared_indexes
