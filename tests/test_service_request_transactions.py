"""How a request's database transaction ends: reads commit (PostgreSQL keeps its plans), writes never do."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import InternalError

from southrock_api import create_app
from southrock_api.data import migrations
from southrock_api.data.db import begin_snapshot, close_session, get_database, get_session
from southrock_api.data.models import ApiToken, Course
from tests import databases, worlds

REQUESTS = 10  # more than psycopg's prepare_threshold (5): it prepares a statement run that often


def _app(url: str) -> Flask:
    app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://", "RATE_LIMIT": "1000 per minute"})
    migrations.upgrade(app)
    return app


def test_postgresql_keeps_a_page_statement_prepared_across_requests(tmp_path: Path) -> None:
    """The page statement is prepared once and reused; psycopg drops every one on a ROLLBACK.

    A readiness probe in between borrows the same pooled connection and must not drop them either.
    """
    with databases.postgres_database(tmp_path) as url:
        app = _app(url)
        with get_database(app).session_factory() as session:
            world = worlds.build(session)
        client = app.test_client()
        headers = {"Authorization": world.tokens["EDU"].authorization}
        for number in range(REQUESTS):
            response = client.get("/api/v1/enrolments?limit=3&start=2", headers=headers, base_url="https://localhost")
            assert response.status_code == 200
            if number == REQUESTS // 2:
                assert client.get("/readyz").status_code == 200
        # Requests one after another all used the pool's one connection; so does this.
        with get_database(app).engine.connect() as connection:
            others = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            assert connection.exec_driver_sql(others).scalar() == 0
            threshold = connection.connection.dbapi_connection.prepare_threshold  # type: ignore[union-attr]
            prepared = connection.exec_driver_sql(
                "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements"
            ).all()
        get_database(app).engine.dispose()
    pages = [uses for statement, uses in prepared if "FROM enrolments" in statement]
    # Prepared once psycopg had run it `threshold` times, then used by every later request.
    assert pages == [REQUESTS - threshold]


def test_a_read_only_request_leaves_its_connection_writable(tmp_path: Path) -> None:
    """The pool's one connection ran the request READ ONLY, then writes the token's last use."""
    with databases.postgres_database(tmp_path) as url:
        app = _app(url)
        with get_database(app).session_factory() as session:
            world = worlds.build(session)
        issued = world.tokens["EDU"]
        response = app.test_client().get(
            "/api/v1/enrolments", headers={"Authorization": issued.authorization}, base_url="https://localhost"
        )
        assert response.status_code == 200
        response.close()  # the last-used write runs once the response is sent
        with get_database(app).engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW transaction_read_only").scalar() == "off"
            last_used = connection.execute(
                select(ApiToken.last_used_at).where(ApiToken.public_key == issued.public_key)
            ).scalar()
        get_database(app).engine.dispose()
    assert last_used is not None


def test_a_request_snapshot_on_postgresql_refuses_writes(tmp_path: Path) -> None:
    """The transaction a request reads in is READ ONLY, so ending it with COMMIT can never write."""
    with databases.postgres_database(tmp_path) as url:
        app = _app(url)
        with app.test_request_context():
            session = get_session()
            begin_snapshot(session)
            with pytest.raises(InternalError, match="read-only transaction"):
                session.execute(text("INSERT INTO courses (code, description) VALUES ('X', 'x')"))
            close_session(None)  # the failed transaction is rolled back, not an error
        with app.test_request_context():
            assert get_session().execute(text("SELECT count(*) FROM courses")).scalar() == 0
            close_session(None)
        get_database(app).engine.dispose()


def test_a_session_that_may_write_is_never_committed_by_the_request_end(tmp_path: Path, backend: str) -> None:
    """Outside a read-only snapshot, whatever a request left pending (flushed or not) is rolled back."""
    with databases.fresh_database(backend, tmp_path) as url:
        app = _app(url)
        with app.test_request_context():
            session = get_session()
            session.add(Course(code="FLUSHED", description="never committed"))
            session.flush()
            session.add(Course(code="PENDING", description="never committed"))
            close_session(None)
        with app.test_request_context():
            assert get_session().execute(text("SELECT count(*) FROM courses")).scalar() == 0
            close_session(None)
        get_database(app).engine.dispose()
