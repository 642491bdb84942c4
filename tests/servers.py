"""Real gunicorn processes for end-to-end tests, each on its own database and port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import requests
from flask import Flask

from southrock_api import create_app, schema
from southrock_api.db import get_database

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def migrated_app(database_url: str, **config: object) -> Flask:
    """An app on a fresh database with the schema applied, for arranging committed data."""
    app = create_app({"DATABASE_URL": database_url, "RATELIMIT_STORAGE_URI": "memory://", **config})
    schema.upgrade(app)
    return app


def dispose(app: Flask) -> None:
    """Release an arranging app's connections (so its database can be dropped)."""
    get_database(app).engine.dispose()


@contextmanager
def gunicorn(
    env: Mapping[str, str],
    workers: int = 2,
    port: int | None = None,
    log_path: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run `gunicorn -c gunicorn.conf.py wsgi:app` with SOUTHROCK_* env; yield its base URL."""
    port = port or free_port()
    full_env = {**os.environ, **env, "SOUTHROCK_BIND": f"127.0.0.1:{port}", "SOUTHROCK_WORKERS": str(workers)}
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), *extra_args, "wsgi:app"],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base_url, process)
        yield base_url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log_path:
            log.close()  # type: ignore[union-attr]


def _wait_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not become ready within 30 s")
