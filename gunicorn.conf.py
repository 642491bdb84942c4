"""gunicorn settings, read from SOUTHROCK_* environment variables with production defaults."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
from typing import Any

# The exit status of gunicorn when a setting cannot work: sysexits.h's EX_CONFIG, which the sample
# systemd unit (docs/deployment.md) names in RestartPreventExitStatus, so it does not restart in a loop.
SETTINGS_CANNOT_WORK = 78


def _whole(name: str, default: int, least: int) -> int:
    """Read SOUTHROCK_<name> as a whole number; one that is not stops gunicorn with one line naming it."""
    text = os.environ.get(f"SOUTHROCK_{name}", str(default))
    if not text.strip().isdigit() or int(text) < least:
        # Raised as a ValueError, gunicorn would print the traceback of reading this file.
        print(f"Error: SOUTHROCK_{name}: {text!r} is not a whole number of at least {least}", file=sys.stderr)
        raise SystemExit(SETTINGS_CANNOT_WORK)
    return int(text)


bind = os.environ.get("SOUTHROCK_BIND", "127.0.0.1:8000")
# gunicorn's usual 2 x cores + 1, capped so that the connections of one host stay well inside
# PostgreSQL's max_connections (see docs/deployment.md, Sizing).
workers = _whole("WORKERS", min(4, multiprocessing.cpu_count() * 2 + 1), 1)
# More than one thread makes gunicorn use its gthread worker, which keeps connections alive
# between requests (the sync worker closes every connection after one response).
threads = _whole("THREADS", 4, 1)
timeout = _whole("TIMEOUT", 30, 0)
graceful_timeout = _whole("GRACEFUL_TIMEOUT", 30, 0)
keepalive = _whole("KEEPALIVE", 5, 0)
# Recycle workers now and then so that a slow leak can never grow without bound.
max_requests = _whole("MAX_REQUESTS", 10000, 0)
max_requests_jitter = max_requests // 10
# The application decides which proxies to believe (SOUTHROCK_TRUSTED_PROXIES, see proxy.py):
# gunicorn trusts the same peers but may not rewrite the scheme or the script path itself.
forwarded_allow_ips = os.environ.get("SOUTHROCK_TRUSTED_PROXIES", "")
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""
# One control socket per user would collide between several servers on one host.
control_socket_disable = True
accesslog = None  # the application writes one structured line per request itself
errorlog = "-"
loglevel = os.environ.get("SOUTHROCK_LOG_LEVEL", "info").lower()
# gunicorn's own bounds (its largest finite request line, its default header field size): a
# request line or header beyond them gets gunicorn's plain 414 or 431 before the application. Unbounded
# (0), gunicorn's Python parser buffers a line of any length, at a cost that grows with the square
# of it: one unauthenticated connection sending megabytes without a line end held a worker's CPU
# for minutes and its memory for good. A proxy in front (docs/deployment.md) caps lines at 8 kB too.
# The OpenAPI document states these bounds (apidocs/openapi.py; tests/test_openapi.py compares).
limit_request_line = 8190
limit_request_field_size = 8190


# Nothing of the application is imported at the top of this file: it runs in the master, whose
# modules every worker inherits, and a reload (SIGHUP) would then keep serving the old release.

# Run by a child interpreter on the master's import path: builds the application as each worker
# will, and prints a ConfigError's one line.
_CHECK_SETTINGS = f"""
import json, sys
sys.path[:] = json.loads(sys.argv[1])
from southrock_api.config import ConfigError
try:
    from southrock_api.app import create_app
    create_app()
except ConfigError as error:
    sys.stderr.write(str(error))
    sys.exit({SETTINGS_CANNOT_WORK})
"""


def on_starting(server: Any) -> None:
    """Check the settings once, before any worker: one that cannot work stops gunicorn with one line naming it."""
    # Otherwise every worker fails to boot with a traceback of its own, before gunicorn gives up
    # with `Worker failed to boot`. The check runs in a child so that the master imports nothing.
    try:
        check = subprocess.run(
            [sys.executable, "-c", _CHECK_SETTINGS, json.dumps(sys.path)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return  # not a setting (building the application reaches no server): the workers will say what it is
    if check.returncode != SETTINGS_CANNOT_WORK:
        # Anything else unexpected is left to the workers, whose traceback says more.
        return
    server.log.error("%s", check.stderr.strip())
    if server.pidfile is not None:
        server.pidfile.unlink()
    sys.exit(SETTINGS_CANNOT_WORK)


def post_worker_init(worker: Any) -> None:
    """Cut keys out of what gunicorn logs about requests it cannot parse (their raw line or header)."""
    from southrock_api.api.logs import RedactKeys

    logging.getLogger("gunicorn.error").addFilter(RedactKeys())


def post_fork(server: Any, worker: Any) -> None:
    """Drop connection pools a preloaded app (--preload) carried over from the master."""
    app = worker.app.callable  # None unless the master loaded the app before forking
    if app is None:
        return
    from southrock_api.data.db import get_database
    from southrock_api.api.ratelimit import get_limiter
    from southrock_api.api.ratelimit_store import SQLStorage

    get_database(app).dispose()
    storage = get_limiter(app).storage
    if isinstance(storage, SQLStorage):
        storage.dispose()
    # Redis connection pools notice the new process id and reconnect by themselves.
