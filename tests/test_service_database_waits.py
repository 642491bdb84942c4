"""Every wait on PostgreSQL is bounded: a frozen server costs a request E9010, never a stuck thread."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import pytest
import requests
from flask import Flask
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError

from psycopg.errors import ConnectionTimeout

from southrock_api import create_app
from southrock_api.admin.cli import database_problem
from southrock_api.api.ratelimit import get_limiter
from southrock_api.api.ratelimit_store import SQLStorage
from southrock_api.data.db import Database, get_database
from southrock_api.data.deadlines import DatabaseTimeout, deadline, remaining, renewed
from tests import databases
from tests.servers import ROOT, TcpProxy, gunicorn, seeded_token

pytestmark = pytest.mark.postgres

# The bound the tests configure, and how much later than it an answer may come and still count
# as bounded (a client-side timeout past it fails the test instead of hanging it).
BOUND = 1.0
SLACK = 4.0
INTERNAL_ERROR = {"error": {"message": "Internal Server Error", "code": "E9010"}}


@pytest.fixture()
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database holding one business unit."""
    with databases.postgres_database(tmp_path) as url:
        yield url


@pytest.fixture()
def proxy(database_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of that database, forwarding."""
    proxy = TcpProxy(("127.0.0.1", make_url(database_url).port or 5432))
    proxy.start()
    yield proxy
    proxy.stop()


def _through(proxy: TcpProxy, database_url: str) -> str:
    return make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False)


def _app(url: str, **config: object) -> Flask:
    return create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://", "DATABASE_TIMEOUT": BOUND, **config})


def test_a_frozen_server_ends_the_request_with_e9010_and_the_pool_drops_the_connection(
    database_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Frozen after answering (mid-request), then frozen outright: E9010 each time, then served again."""
    issued = seeded_token(database_url)
    app = _app(_through(proxy, database_url))
    client = app.test_client()
    headers = {"Authorization": issued.authorization}
    try:
        assert client.get("/api/v1", headers=headers).status_code == 200
        pool = get_database(app).engine.pool
        for answers in (1, 0):  # the pool's ping answered, then nothing; then nothing at all
            proxy.freeze(after_answers=answers)
            with caplog.at_level(logging.ERROR):
                response = client.get("/api/v1", headers=headers)
            assert response.status_code == 500
            assert response.get_json() == INTERNAL_ERROR
            # The log says which wait ran out; the client sees only the catalogue's text.
            assert "no answer from the database within the request's deadline (1 s)" in caplog.text
            caplog.clear()
            proxy.thaw()
            # The closed connection never returns to the pool: the next request connects afresh.
            assert pool.checkedout() == 0  # type: ignore[attr-defined]
            assert client.get("/api/v1", headers=headers).status_code == 200
    finally:
        get_database(app).engine.dispose()


def test_a_lock_held_past_the_bound_ends_the_request_with_e9010(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL's lock_timeout, sent with the connection, ends a request waiting behind a long transaction."""
    issued = seeded_token(database_url)
    app = _app(database_url)
    client = app.test_client()
    libpq = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(libpq) as holder:
            # What an operator's long-running maintenance could do: lock the table every request reads first.
            holder.execute("LOCK TABLE data_state IN ACCESS EXCLUSIVE MODE")
            with caplog.at_level(logging.ERROR):
                response = client.get("/api/v1", headers={"Authorization": issued.authorization})
            holder.rollback()
        assert response.status_code == 500
        assert response.get_json() == INTERNAL_ERROR
        # PostgreSQL ended the wait itself (statement_timeout and lock_timeout are equal; either may fire).
        assert "QueryCanceled: canceling statement due to" in caplog.text
        assert client.get("/api/v1", headers={"Authorization": issued.authorization}).status_code == 200
    finally:
        get_database(app).engine.dispose()


def test_a_request_past_its_deadline_opens_no_connection_to_end_its_transaction(
    database_url: str, proxy: TcpProxy
) -> None:
    """Frozen outright: the request opens no new connection once its deadline has passed."""
    issued = seeded_token(database_url)
    app = _app(_through(proxy, database_url))
    client = app.test_client()
    try:
        assert client.get("/api/v1", headers={"Authorization": issued.authorization}).status_code == 200
        proxy.freeze()
        before = proxy.accepted
        assert client.get("/api/v1", headers={"Authorization": issued.authorization}).status_code == 500
        # The pre-ping waited out the deadline; the pool's reconnection was refused before
        # connecting (no time left); ending the transaction must not connect either (that was a
        # connect timeout more, two seconds past the bound).
        assert proxy.accepted == before
    finally:
        proxy.thaw()
        get_database(app).engine.dispose()


def test_readiness_answers_not_ready_within_the_bound(database_url: str, proxy: TcpProxy) -> None:
    """/readyz on a frozen database: 503 with database false, promptly; /healthz is untouched."""
    seeded_token(database_url)
    app = _app(_through(proxy, database_url))
    client = app.test_client()
    try:
        assert client.get("/readyz").status_code == 200
        proxy.freeze()
        readiness = client.get("/readyz")
        assert readiness.status_code == 503
        assert readiness.get_json()["checks"]["database"] is False
        assert client.get("/healthz").status_code == 200
    finally:
        proxy.thaw()
        get_database(app).engine.dispose()


def test_the_postgresql_limiter_store_gives_up_within_its_timeout(database_url: str, proxy: TcpProxy) -> None:
    """A frozen PostgreSQL limiter store fails within RATELIMIT_STORAGE_TIMEOUT, as a hung Redis does."""
    storage = SQLStorage(_through(proxy, database_url), timeout=0.5)
    try:
        assert storage.incr("site", 60) == 1
        proxy.freeze()
        with pytest.raises(storage.base_exceptions) as raised:
            storage.incr("site", 60)
        assert "bound on one answer (0.5 s)" in str(raised.value)
        proxy.thaw()
        # A new connection, and the window kept: 2, or 3 if the upsert held while frozen ran on thawing.
        assert storage.incr("site", 60) in (2, 3)
    finally:
        storage.engine.dispose()


def test_a_frozen_limiter_store_still_lets_the_request_through(
    database_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The site's bucket falls back to memory; the request is served from the (healthy) database."""
    issued = seeded_token(database_url)
    app = create_app(
        {"DATABASE_URL": database_url, "RATELIMIT_STORAGE_URI": _through(proxy, database_url), "RATELIMIT_STORAGE_TIMEOUT": 0.5}
    )
    client = app.test_client()
    try:
        assert client.get("/api/v1", headers={"Authorization": issued.authorization}).status_code == 200
        proxy.freeze()
        with caplog.at_level(logging.WARNING):
            response = client.get("/api/v1", headers={"Authorization": issued.authorization})
        assert response.status_code == 200
        assert response.headers["X-Rate-Limit-Limit"] == "60"
        assert "falling back to in-memory storage (DatabaseTimeout)" in caplog.text
    finally:
        proxy.thaw()
        get_database(app).engine.dispose()
        storage = get_limiter(app).storage
        assert isinstance(storage, SQLStorage)
        storage.engine.dispose()


def test_a_command_waits_for_each_answer_at_most_the_command_timeout(database_url: str, proxy: TcpProxy) -> None:
    """Commands carry no server-side statement bound (an import's may run long); a frozen server ends one."""
    requests_database = Database(_through(proxy, database_url), timeout=BOUND)
    commands_database = Database(_through(proxy, database_url))
    commands_database.for_commands(BOUND)
    try:
        with requests_database.engine.connect() as connection:
            # A little under the bound, so that the server usually ends a slow statement first.
            assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "800ms"
            assert connection.execute(text("SHOW lock_timeout")).scalar_one() == "800ms"
        with commands_database.session_factory() as session:
            assert session.execute(text("SHOW statement_timeout")).scalar_one() == "0"
            proxy.freeze()
            with pytest.raises(OperationalError) as raised:
                session.execute(text("SELECT 1"))
            assert isinstance(raised.value.orig, DatabaseTimeout)
            assert "bound on one answer (1 s)" in str(raised.value.orig)
    finally:
        proxy.thaw()
        requests_database.engine.dispose()
        commands_database.engine.dispose()


def test_the_command_line_says_the_database_did_not_answer(database_url: str, proxy: TcpProxy, tmp_path: Path) -> None:
    """`southrock tokens list` against a frozen database: one line naming the cause, within the bound."""
    seeded_token(database_url)
    proxy.freeze()
    environment = {
        "PATH": "/usr/bin:/bin",
        "SOUTHROCK_INSTANCE_PATH": str(tmp_path / "instance"),
        "SOUTHROCK_DATABASE_URL": _through(proxy, database_url),
        "SOUTHROCK_COMMAND_TIMEOUT": str(BOUND),
    }
    result = subprocess.run(
        [sys.executable, "-c", "from southrock_api.admin.cli import main; main()", "tokens", "list"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BOUND + SLACK + 10,  # interpreter start-up included
    )
    proxy.thaw()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: the database did not answer: connection timeout expired. Check that it is running and "
        "reachable at SOUTHROCK_DATABASE_URL."
    ]


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (DatabaseTimeout("no answer"), "the database did not answer within SOUTHROCK_COMMAND_TIMEOUT (1 s)"),
        (OperationalError("SELECT 1", {}, DatabaseTimeout("no answer")), "within SOUTHROCK_COMMAND_TIMEOUT (1 s)"),
        (OperationalError("SELECT 1", {}, ConnectionTimeout("connection timeout expired")), "did not answer: connection timeout"),
    ],
)
def test_a_command_names_a_database_that_did_not_answer(error: Exception, says: str) -> None:
    """The one line a command prints for a wait that ran out names the setting, not the schema."""
    assert says in database_problem(error, command_timeout=1.0)


def test_a_deadline_closes_the_connection_and_names_itself(database_url: str, proxy: TcpProxy) -> None:
    """deadline() bounds a block of work below the engine's own bound, and says so when it runs out."""
    database = Database(_through(proxy, database_url), timeout=30.0)
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            proxy.freeze()
            with deadline(BOUND, "the test's block"), pytest.raises(OperationalError) as raised:
                connection.execute(text("SELECT 1"))
            assert "within the test's block (1 s)" in str(raised.value.orig)
            assert connection.invalidated
    finally:
        proxy.thaw()
        database.engine.dispose()


@pytest.mark.e2e
def test_gunicorn_answers_every_request_within_the_bound_and_heals(database_url: str, proxy: TcpProxy, tmp_path: Path) -> None:
    """Through gunicorn: frozen, mid-request frozen, refused; E9010 each time, /healthz 200, then served."""
    issued = seeded_token(database_url)
    env = {
        "SOUTHROCK_DATABASE_URL": _through(proxy, database_url),
        "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
        "SOUTHROCK_RATE_LIMIT": "1000 per minute",
        # libpq's shortest connect timeout: a bound under it would be stretched by every new connection.
        "SOUTHROCK_DATABASE_TIMEOUT": "2",
        "SOUTHROCK_THREADS": "2",
    }
    # One worker of two threads: without the bound, two stuck requests would stop the site.
    with gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log") as base_url:

        def api() -> requests.Response:
            return requests.get(base_url + "/api/v1", headers={"Authorization": issued.authorization}, timeout=2 + SLACK)

        assert api().status_code == 200
        # The token's first use is written after the response: let it land before freezing.
        _until(lambda: _last_used_written(database_url), 5)
        for answers in (0, 1):
            proxy.freeze(after_answers=answers)
            with ThreadPoolExecutor(2) as pool:
                waiting = [pool.submit(api) for _ in range(2)]
                # Both threads are taken by waiting requests, and still the process answers as
                # soon as the bound frees one.
                assert requests.get(base_url + "/healthz", timeout=2 + SLACK).status_code == 200
                answered = [future.result() for future in waiting]
            assert [response.status_code for response in answered] == [500] * 2
            assert all(response.json() == INTERNAL_ERROR for response in answered)
            proxy.thaw()
            assert api().status_code == 200
        proxy.stop()  # refused
        assert api().status_code == 500
        proxy.start()
        assert api().status_code == 200
    log = (tmp_path / "gunicorn.log").read_text()
    assert "no answer from the database within the request's deadline (2 s)" in log


def _last_used_written(database_url: str) -> bool:
    with psycopg.connect(make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)) as connection:
        return connection.execute("SELECT count(*) FROM api_tokens WHERE last_used_at IS NOT NULL").fetchone() == (1,)


def _until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "did not happen in time"
        time.sleep(0.1)


def test_a_renewed_deadline_replaces_the_current_one() -> None:
    """A stream's block gets a fresh bound even after the request's own has run out; nesting only shortens."""
    with deadline(0.001, "the request's deadline"):
        time.sleep(0.01)
        assert (remaining() or 0) < 0
        with renewed(BOUND, "a block of the stream"):
            assert 0 < (remaining() or 0) <= BOUND
            with deadline(60, "a longer one"):
                assert (remaining() or 0) <= BOUND
        assert (remaining() or 0) < 0
    assert remaining() is None
