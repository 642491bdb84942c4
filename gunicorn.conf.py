"""gunicorn settings, read from the environment with production defaults."""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("SOUTHROCK_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SOUTHROCK_WORKERS", min(4, multiprocessing.cpu_count() * 2 + 1)))
threads = int(os.environ.get("SOUTHROCK_THREADS", "1"))
timeout = int(os.environ.get("SOUTHROCK_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("SOUTHROCK_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("SOUTHROCK_KEEPALIVE", "5"))
# The application decides which proxies to believe (SOUTHROCK_TRUSTED_PROXIES); gunicorn must not
# rewrite the scheme on its own say-so.
secure_scheme_headers: dict[str, str] = {}
forwarded_allow_ips = os.environ.get("SOUTHROCK_TRUSTED_PROXIES", "127.0.0.1")
# One control socket per user would collide between several servers on one host.
control_socket_disable = True
accesslog = None  # the application writes one structured line per request itself
errorlog = "-"
loglevel = os.environ.get("SOUTHROCK_LOG_LEVEL", "info").lower()
# Bounded request lines and headers (a 64 kB Authorization header is refused by gunicorn).
limit_request_line = 8190
limit_request_field_size = 8190


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Drop connection pools inherited from the master (only populated with --preload)."""
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions") and "southrock_db" in app.extensions:
        app.extensions["southrock_db"].dispose()
