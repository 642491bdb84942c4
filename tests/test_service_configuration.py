"""Settings and set-up mistakes fail at once and say what to fix: no traceback, no secret, no quiet misbehaviour."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from southrock_api import create_app
from southrock_api.data import migrations
from southrock_api.config import ConfigError
from tests import servers

SOUTHROCK = str(Path(sys.executable).parent / "southrock")


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The process environment with no other SOUTHROCK_ setting than these, on a fresh instance."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SOUTHROCK_")}
    return {**env, "SOUTHROCK_INSTANCE_PATH": str(tmp_path / "instance"), **settings}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        # A mistyped limit used to switch the site's limit off (flask-limiter swallowed the error).
        ("RATE_LIMIT", "60 per minit", "SOUTHROCK_RATE_LIMIT: '60 per minit' is not one rate limit"),
        # Only the first of several would show in the headers and /docs; none would never be spent.
        ("RATE_LIMIT", "100 per minute;3 per day", "SOUTHROCK_RATE_LIMIT: '100 per minute;3 per day' is not one rate limit"),
        ("RATE_LIMIT", "0 per minute", "SOUTHROCK_RATE_LIMIT: '0 per minute' is not one rate limit"),
        # ...and a mistyped failure limit answered every failed login 500.
        ("AUTH_FAILURE_LIMIT", "ten a minute", "SOUTHROCK_AUTH_FAILURE_LIMIT: 'ten a minute' is not one rate limit"),
        ("RATELIMIT_STORAGE_TIMEOUT", "half", "SOUTHROCK_RATELIMIT_STORAGE_TIMEOUT: 'half' is not a positive number"),
        # A socket refuses these; the limiter would quietly count in memory instead of in Redis.
        ("RATELIMIT_STORAGE_TIMEOUT", "nan", "SOUTHROCK_RATELIMIT_STORAGE_TIMEOUT: 'nan' is not a positive number"),
        ("RTOPILOT_TIMEOUT", "1e309", "SOUTHROCK_RTOPILOT_TIMEOUT: inf is not a positive number"),
        ("RTOPILOT_MAX_ATTEMPTS", "0", "SOUTHROCK_RTOPILOT_MAX_ATTEMPTS: 0 is not a whole number of at least 1"),
        ("LOG_LEVEL", "verbose", "SOUTHROCK_LOG_LEVEL: 'verbose' is not one of"),
        ("LOG_LEVEL", "warn", "SOUTHROCK_LOG_LEVEL: 'warn' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("TRUSTED_PROXIES", "localhost", "SOUTHROCK_TRUSTED_PROXIES: 'localhost' is not an IP address or network"),
        ("TRUSTED_HOSTS", "https://lms.example.edu", "SOUTHROCK_TRUSTED_HOSTS: 'https://lms.example.edu' is not a host name"),
        ("TRUSTED_HOSTS", "5", "SOUTHROCK_TRUSTED_HOSTS: give host names as text"),
        ("TRUSTED_PROXIES", '["10.0.0.1"]', "SOUTHROCK_TRUSTED_PROXIES: give the proxies' addresses or networks as text"),
        ("REQUIRE_HTTPS", "ture", "SOUTHROCK_REQUIRE_HTTPS must be true or false, not 'ture'"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_app_from_starting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, says: str
) -> None:
    for variable in list(os.environ):
        if variable.startswith("SOUTHROCK_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("SOUTHROCK_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv(f"SOUTHROCK_{name}", value)
    with pytest.raises(ConfigError, match=says):
        create_app()


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("SOUTHROCK_DATABASE_URL", "postgres://admin:hunter2@db.internal/lms", "SOUTHROCK_DATABASE_URL is not a database URL this application can use"),
        ("SOUTHROCK_DATABASE_URL", "postgresql+psycopg2://admin:hunter2@db.internal/lms", "SOUTHROCK_DATABASE_URL is not a database URL this application can use"),
        ("SOUTHROCK_DATABASE_URL", "mysql+pymysql://admin:hunter2@db.internal/lms", "SOUTHROCK_DATABASE_URL is not a database URL this application can use"),
        # An unencoded @ would make the rest of the password the host, in every connection error.
        ("SOUTHROCK_DATABASE_URL", "postgresql+psycopg://admin:hun@ter2hunter2@db.internal/lms", "SOUTHROCK_DATABASE_URL: the password holds an @ that is not percent-encoded"),
        ("SOUTHROCK_RATELIMIT_STORAGE_URI", "redsi://:hunter2@cache.internal:6379/0", "SOUTHROCK_RATELIMIT_STORAGE_URI: no store for 'redsi' URIs"),
    ],
)
def test_a_url_that_cannot_work_is_named_but_never_repeated(tmp_path: Path, setting: str, value: str, says: str) -> None:
    result = subprocess.run([SOUTHROCK, "tokens", "list"], env=_environment(tmp_path, **{setting: value}), capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {says}") and len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stdout + result.stderr and "ter2" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_commands_on_a_database_never_migrated_say_to_migrate(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    for command in (["tokens", "list"], ["tokens", "create", "--business-unit", "EDU"], ["demo-data", "--enrolments", "10"], ["rtopilot", "sync", "--dry-run"]):
        result = subprocess.run([SOUTHROCK, *command], env=env, capture_output=True, text=True)
        assert result.returncode == 1, command
        assert result.stderr == "Error: the database is not migrated for this release: run `southrock db upgrade` first\n"
    assert subprocess.run([SOUTHROCK, "db", "upgrade"], env=env, capture_output=True).returncode == 0
    assert subprocess.run([SOUTHROCK, "tokens", "list"], env=env, capture_output=True).returncode == 0


@pytest.mark.postgres
def test_an_unreachable_database_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{servers.free_port()}/nowhere"
    result = subprocess.run([SOUTHROCK, "db", "upgrade"], env=_environment(tmp_path, SOUTHROCK_DATABASE_URL=url), capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: the database failed: ")
    assert "Check that SOUTHROCK_DATABASE_URL names a reachable database" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_command_reads_no_env_file_and_offers_no_flask_options(tmp_path: Path) -> None:
    """gunicorn never reads .env: a command that did would manage another database than the one served."""
    env = _environment(tmp_path)
    (tmp_path / ".env").write_text("SOUTHROCK_DATABASE_URL=sqlite:////nonexistent/elsewhere.sqlite\n")
    assert subprocess.run([SOUTHROCK, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True).returncode == 0
    assert (tmp_path / "instance" / "southrock.sqlite").exists()
    listed = subprocess.run([SOUTHROCK, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    for option in ("--env-file", "--app", "--debug"):
        assert option not in listed


@pytest.mark.e2e
def test_a_server_on_a_database_never_migrated_says_so_in_its_log(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    env = {
        "SOUTHROCK_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite'}",
        "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
    }
    with servers.gunicorn(env, workers=1, log_path=log) as base_url:
        ready = requests.get(base_url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["schema"] is False
    text = log.read_text()
    # At start-up, and again when a probe finds it not ready.
    assert text.count("the database is not migrated for this release: run `southrock db upgrade` first") >= 2


def test_a_database_that_does_not_answer_is_logged_by_the_readiness_probe(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite'}", "RATELIMIT_STORAGE_URI": "memory://"})
    try:
        response = app.test_client().get("/readyz")
    finally:
        servers.dispose(app)
    assert response.status_code == 503 and response.get_json()["checks"]["database"] is False
    assert "not ready: the database does not answer: unable to open database file" in caplog.text


def test_a_reason_for_not_being_ready_is_logged_once_not_per_probe(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from southrock_api.api import health

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite'}", "RATELIMIT_STORAGE_URI": "memory://"})
    health._Problem.report(None)  # this process was last ready (other tests probe in it too)
    try:
        client = app.test_client()
        for _ in range(5):
            assert client.get("/readyz").status_code == 503
        assert caplog.text.count("not ready: the database is not migrated for this release") == 1
        migrations.upgrade(app)
        assert client.get("/readyz").status_code == 200
        (tmp_path / "empty.sqlite").unlink()  # gone: a new empty file, never migrated, appears
        servers.dispose(app)
        assert client.get("/readyz").status_code == 503
        assert caplog.text.count("not ready: the database is not migrated for this release") == 2  # said again
    finally:
        servers.dispose(app)


def test_help_with_a_setting_that_cannot_work_says_so_in_one_line(tmp_path: Path) -> None:
    env = _environment(tmp_path, SOUTHROCK_RATE_LIMIT="60 per minit")
    result = subprocess.run([SOUTHROCK, "--help"], env=env, capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr == "Error: SOUTHROCK_RATE_LIMIT: '60 per minit' is not one rate limit such as '60 per minute'\n"
    assert "Usage: southrock" in result.stdout


def test_the_gunicorn_configuration_imports_nothing_of_the_application() -> None:
    """It runs in the master: every worker, reloaded ones (SIGHUP) included, would inherit old modules."""
    probe = f"import runpy, sys; runpy.run_path({str(servers.ROOT / 'gunicorn.conf.py')!r}); print(sorted(m for m in sys.modules if m.startswith('southrock_api')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_database_failure_without_a_message_is_named_by_its_type() -> None:
    from sqlalchemy.exc import OperationalError

    from southrock_api.data.db import failure_reason

    assert failure_reason(OperationalError("SELECT 1", {}, ConnectionResetError())) == "ConnectionResetError"
    assert failure_reason(OperationalError("SELECT 1", {}, Exception("server closed\nthe connection"))) == "server closed"
