"""gunicorn settings, read from SOUTHROCK_* environment variables with production defaults."""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

bind = os.environ.get("SOUTHROCK_BIND", "127.0.0.1:8000")
# gunicorn's usual 2 x cores + 1, capped so that the connections of one host stay well inside
# PostgreSQL's max_connections (see docs/deployment.md, Sizing).
workers = int(os.environ.get("SOUTHROCK_WORKERS", min(4, multiprocessing.cpu_count() * 2 + 1)))
# More than one thread makes gunicorn use its gthread worker, which keeps connections alive
# between requests (the sync worker closes every connection after one response).
threads = int(os.environ.get("SOUTHROCK_THREADS", "4"))
timeout = int(os.environ.get("SOUTHROCK_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("SOUTHROCK_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("SOUTHROCK_KEEPALIVE", "5"))
# Recycle workers now and then so that a slow leak can never grow without bound.
max_requests = int(os.environ.get("SOUTHROCK_MAX_REQUESTS", "10000"))
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
