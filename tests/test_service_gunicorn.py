"""gunicorn.conf.py: settings from the environment, pools dropped after fork, keep-alive."""

from __future__ import annotations

import http.client
import os
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool

from southrock_api import create_app
from southrock_api.data import migrations
from southrock_api.data.db import get_database
from southrock_api.api.ratelimit import get_limiter
from southrock_api.api.ratelimit_store import SQLStorage
from tests import databases
from tests.servers import ROOT, dispose, free_port, gunicorn, seeded_token

CONFIG = ROOT / "gunicorn.conf.py"


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, object]:
    """Evaluate gunicorn.conf.py with exactly the given SOUTHROCK_* variables set."""
    for name in list(os.environ):
        if name.startswith("SOUTHROCK_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONFIG))


def test_the_instance_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An installed package would otherwise keep its SQLite files inside the virtualenv."""
    for name in list(os.environ):
        if name.startswith("SOUTHROCK_"):
            monkeypatch.delenv(name)
    (tmp_path / "config.py").write_text('RATE_LIMIT = "7 per minute"\n')
    monkeypatch.setenv("SOUTHROCK_INSTANCE_PATH", str(tmp_path))
    app = create_app()
    assert app.instance_path == str(tmp_path)
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'southrock.sqlite'}"
    assert app.config["RATELIMIT_STORAGE_URI"] == f"sqlite:///{tmp_path / 'ratelimit.sqlite'}"
    assert app.config["RATE_LIMIT"] == "7 per minute"  # its config.py is read
    dispose(app)
    # A folder it creates itself is private: the SQLite files in it hold personal data.
    monkeypatch.setenv("SOUTHROCK_INSTANCE_PATH", str(tmp_path / "new"))
    dispose(create_app())
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_sqlite_files_are_private_in_a_folder_anyone_can_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A checkout's instance/ exists already (0755 under the usual umask): the files guard themselves."""
    for name in list(os.environ):
        if name.startswith("SOUTHROCK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SOUTHROCK_INSTANCE_PATH", str(tmp_path))
    previous = os.umask(0o022)
    try:
        app = create_app()
        migrations.upgrade(app)
        with get_database(app).engine.connect() as connection:  # open, so -wal and -shm exist
            connection.exec_driver_sql("PRAGMA user_version = 1")
            connection.commit()
            get_limiter(app).storage.incr("site", 60)
            files = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.glob("*.sqlite*")}
        dispose(app)
    finally:
        os.umask(previous)
    assert {"southrock.sqlite", "southrock.sqlite-wal", "southrock.sqlite-shm", "ratelimit.sqlite"} <= set(files)
    assert set(files.values()) == {0o600}


def test_production_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, {})
    assert settings["bind"] == "127.0.0.1:8000"
    assert 1 <= int(settings["workers"]) <= 4  # type: ignore[call-overload]
    assert settings["threads"] == 4  # gthread: keep-alive works
    assert settings["timeout"] == 30
    assert settings["forwarded_allow_ips"] == ""  # no proxy is trusted until one is named
    assert settings["secure_scheme_headers"] == {}
    assert settings["accesslog"] is None  # the application writes the access log


def test_every_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch,
        {
            "SOUTHROCK_BIND": "0.0.0.0:9000",
            "SOUTHROCK_WORKERS": "8",
            "SOUTHROCK_THREADS": "2",
            "SOUTHROCK_TIMEOUT": "60",
            "SOUTHROCK_GRACEFUL_TIMEOUT": "20",
            "SOUTHROCK_KEEPALIVE": "10",
            "SOUTHROCK_MAX_REQUESTS": "500",
            "SOUTHROCK_TRUSTED_PROXIES": "10.0.0.0/8,192.0.2.1",
            "SOUTHROCK_LOG_LEVEL": "WARNING",
        },
    )
    expected = {
        "bind": "0.0.0.0:9000",
        "workers": 8,
        "threads": 2,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 10,
        "max_requests": 500,
        "max_requests_jitter": 50,
        "forwarded_allow_ips": "10.0.0.0/8,192.0.2.1",
        "loglevel": "warning",
    }
    assert {name: settings[name] for name in expected} == expected


def _app_with_pooled_connections(tmp_path: Path) -> Flask:
    # SQLite: dropping a pool without closing it is silent there, as it must be in a forked child.
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite'}",
            "RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
        }
    )
    for engine in _engines(app):
        with engine.connect():
            pass
        assert _checked_in(engine) == 1
    return app


def _engines(app: Flask) -> tuple[Engine, Engine]:
    """The app's database engine and its limiter's SQL store's engine."""
    storage = get_limiter(app).storage
    assert isinstance(storage, SQLStorage)
    return get_database(app).engine, storage.engine


def _checked_in(engine: Engine) -> int:
    """Connections idle in the engine's pool."""
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedin()


def test_post_fork_drops_the_pools_a_preloaded_app_inherited(tmp_path: Path) -> None:
    app = _app_with_pooled_connections(tmp_path)
    post_fork = runpy.run_path(str(CONFIG))["post_fork"]
    # gunicorn's worker carries the preloaded app as worker.app.callable (None without --preload).
    post_fork(None, SimpleNamespace(app=SimpleNamespace(callable=app)))
    database, store = _engines(app)
    assert _checked_in(database) == 0
    assert _checked_in(store) == 0
    post_fork(None, SimpleNamespace(app=SimpleNamespace(callable=None)))
    dispose(app)


@pytest.mark.e2e
def test_preloaded_threaded_workers_serve_concurrently_with_keep_alive(backend: str, tmp_path: Path) -> None:
    """--preload, 2 workers x 4 threads, on the run's database: every request succeeds."""
    with databases.fresh_database(backend, tmp_path) as database_url:
        issued = seeded_token(database_url)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
        }
        with gunicorn(env, workers=2, extra_args=("--preload",)) as base_url:
            headers = {"Authorization": issued.authorization}

            def get(_: int) -> int:
                return requests.get(base_url + "/api/v1/enrolments", headers=headers, timeout=10).status_code

            with ThreadPoolExecutor(max_workers=8) as pool:
                assert set(pool.map(get, range(30))) == {200}
            parts = urlsplit(base_url)
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
            try:
                for _ in range(3):
                    connection.request("GET", "/api/v1", headers=headers)
                    response = connection.getresponse()
                    response.read()
                    assert response.status == 200
                    assert not response.will_close  # the same connection serves the next request
            finally:
                connection.close()


def test_an_in_memory_sqlite_database_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from southrock_api.data.db import make_engine

    monkeypatch.chdir(tmp_path)
    make_engine("sqlite:///:memory:").dispose()
    make_engine("sqlite://").dispose()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("SOUTHROCK_RATE_LIMIT", "60 per minit", "SOUTHROCK_RATE_LIMIT: '60 per minit' is not one rate limit such as '60 per minute'"),
        ("SOUTHROCK_REQUIRE_HTTPS", "ture", "SOUTHROCK_REQUIRE_HTTPS must be true or false, not 'ture'"),
        ("SOUTHROCK_DATABASE_URL", "postgres://admin:hunter2@db.internal/lms", "SOUTHROCK_DATABASE_URL is not a database URL this application can use"),
        ("SOUTHROCK_RATELIMIT_STORAGE_URI", "redsi://:hunter2@cache.internal:6379/0", "SOUTHROCK_RATELIMIT_STORAGE_URI: no store for 'redsi' URIs"),
        ("SOUTHROCK_TRUSTED_HOSTS", "https://lms.example.edu", "SOUTHROCK_TRUSTED_HOSTS: 'https://lms.example.edu' is not a host name"),
        ("SOUTHROCK_WORKERS", "four", "Error: SOUTHROCK_WORKERS: 'four' is not a whole number of at least 1"),
        ("SOUTHROCK_TIMEOUT", "-1", "Error: SOUTHROCK_TIMEOUT: '-1' is not a whole number of at least 0"),
    ],
)
def test_a_setting_that_cannot_work_stops_gunicorn_with_one_line(tmp_path: Path, setting: str, value: str, says: str) -> None:
    """Checked once in the master, before any worker: not a traceback per worker and `Worker failed to boot`."""
    env = {name: text for name, text in os.environ.items() if not name.startswith("SOUTHROCK_")}
    env.update({"SOUTHROCK_INSTANCE_PATH": str(tmp_path), "SOUTHROCK_BIND": f"127.0.0.1:{free_port()}", setting: value})
    pidfile = tmp_path / "gunicorn.pid"
    command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "--pid", str(pidfile), "wsgi:app"]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78  # sysexits.h's EX_CONFIG: systemd is told not to restart in a loop
    # gunicorn says it is starting, then the one line; nothing else, no worker ever started.
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "[INFO] Starting gunicorn" not in line]
    assert len(lines) == 1 and says in lines[0], result.stdout + result.stderr
    assert "hunter2" not in lines[0]
    assert not pidfile.exists()
