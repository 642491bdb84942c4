"""Fixtures: one database per run (SQLite or PostgreSQL), each test rolled back; a standard organisation and its tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from southrock_api import create_app
from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.db import get_database, make_engine
from tests import databases, factories
from tests.apiclient import ApiClient


def pytest_report_header() -> list[str]:
    """Say which database the run targets and which services it will skip."""
    lines = [f"southrock: database = {databases.selected_backend()}"]
    if not databases.redis_available():
        lines.append("southrock: Redis unreachable: Redis tests are SKIPPED" + (" (CI: they FAIL)" if databases.REQUIRE_SERVICES else ""))
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip Redis tests without Redis, unless services are required (CI)."""
    if databases.REQUIRE_SERVICES or databases.redis_available():
        return
    skip = pytest.mark.skip(reason="Redis is not reachable at " + databases.REDIS_URL)
    for item in items:
        if "redis" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def backend() -> str:
    """The database this run targets."""
    return databases.selected_backend()


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database, created once for the whole run."""
    if backend == "postgresql" and not databases.postgres_available():
        pytest.fail("PostgreSQL is not reachable at " + databases.POSTGRES_ADMIN_URL)
    with databases.fresh_database(backend, tmp_path_factory.mktemp("db")) as url:
        app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://", "TESTING": True})
        from southrock_api.data import migrations

        migrations.upgrade(app)
        get_database(app).engine.dispose()
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """The engine every rolled-back test shares."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside an outer transaction that is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


@pytest.fixture()
def app(connection: Connection, database_url: str, tmp_path: Path) -> Flask:
    """The application, its sessions joined to the test's transaction as savepoints."""
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "RATELIMIT_STORAGE_URI": "memory://",
        }
    )
    database = get_database(app)
    database.engine.dispose()
    database.session_factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    return app


@pytest.fixture()
def app_with(app: Flask) -> Callable[..., Flask]:
    """Make another app from app's config with changes (keyword arguments); its sessions join the test's transaction too."""

    def make(**changes: object) -> Flask:
        other = create_app({**app.config, **changes})
        database = get_database(other)
        database.engine.dispose()
        database.session_factory = get_database(app).session_factory
        return other

    return make


@pytest.fixture()
def session(app: Flask) -> Iterator[Session]:
    """A session in the test's transaction, for arranging data."""
    with get_database(app).session_factory() as session:
        yield session


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    """A test client."""
    return app.test_client()


@pytest.fixture()
def runner(app: Flask) -> FlaskCliRunner:
    """A CLI runner for the app's commands."""
    return app.test_cli_runner()


@pytest.fixture()
def organisation(session: Session) -> factories.Organisation:
    """Business unit EDU (Education) with work unit UNIV-STUD (University - Students) and one completed enrolment."""
    built = factories.organisation(session)
    session.commit()
    return built


@pytest.fixture()
def bu_token(session: Session, organisation: factories.Organisation) -> IssuedToken:
    """A token for the organisation's business unit, EDU."""
    issued = factories.token(session, organisation.business_unit)
    session.commit()
    return issued


@pytest.fixture()
def wu_token(session: Session, organisation: factories.Organisation) -> IssuedToken:
    """A token for the organisation's work unit, UNIV-STUD."""
    issued = factories.token(session, organisation.work_unit)
    session.commit()
    return issued


@pytest.fixture()
def api(client: FlaskClient, bu_token: IssuedToken) -> ApiClient:
    """The test client, sending the business-unit token's credentials."""
    return ApiClient(client, bu_token)
