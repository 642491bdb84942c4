"""Real gunicorn processes for end-to-end tests, each on its own database and port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

import requests
from flask import Flask
from sqlalchemy.orm import Session

from southrock_api import create_app
from southrock_api.data import migrations
from southrock_api.data.db import get_database
from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.models import BusinessUnit, WorkUnit
from tests import factories

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def migrated_app(database_url: str, **config: object) -> Flask:
    """An app on a fresh database with the schema applied, for arranging committed data."""
    app = create_app({"DATABASE_URL": database_url, "RATELIMIT_STORAGE_URI": "memory://", **config})
    migrations.upgrade(app)
    return app


def dispose(app: Flask) -> None:
    """Release an arranging app's connections (so its database can be dropped)."""
    get_database(app).engine.dispose()


def seeded_token(database_url: str, arrange: Callable[[Session], BusinessUnit | WorkUnit] | None = None) -> IssuedToken:
    """Migrate a fresh database, add rows and a token, commit; return the token.

    arrange adds the rows and returns the unit the token is for; without it, one business unit is added.
    """
    app = migrated_app(database_url)
    try:
        with get_database(app).session_factory() as session:
            unit = arrange(session) if arrange else factories.business_unit(session)
            issued = factories.token(session, unit)
            session.commit()
    finally:
        dispose(app)
    return issued


@contextmanager
def gunicorn(
    env: Mapping[str, str],
    workers: int = 2,
    port: int | None = None,
    log_path: Path | None = None,
    extra_args: tuple[str, ...] = (),
    cwd: Path = ROOT,
    application: str = "wsgi:app",
) -> Iterator[str]:
    """Run `gunicorn -c gunicorn.conf.py wsgi:app` (in the checkout, by default) with SOUTHROCK_* env; yield its base URL."""
    port = port or free_port()
    full_env = {**os.environ, **env, "SOUTHROCK_BIND": f"127.0.0.1:{port}", "SOUTHROCK_WORKERS": str(workers)}
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), *extra_args, application],
        cwd=cwd,
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
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or listening while the workers still boot
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not become ready within 30 s")


class TcpProxy:
    """A TCP forwarder on a local port that a test can stop, start, freeze and thaw.

    Stopped, it refuses connections and cuts the forwarded ones: a server that went away.
    Frozen, it keeps every connection open, accepts new ones and forwards nothing: a server
    (or the network) that stopped answering, which the kernel does not tell the client about.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._answers_left: int | None = None
        self.accepted = 0  # connections accepted so far

    def start(self) -> None:
        """Listen and forward every connection to the upstream."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut every forwarded connection, as if the server went away."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.thaw()

    def freeze(self, after_answers: int = 0) -> None:
        """Stop forwarding (after passing `after_answers` more chunks from the server), closing nothing."""
        with self._lock:
            self._answers_left = after_answers
            if after_answers == 0:
                self._flowing.clear()

    def thaw(self) -> None:
        """Forward again, what was held first."""
        with self._lock:
            self._answers_left = None
            self._flowing.set()

    def _gate(self, from_server: bool) -> bool:
        """Wait while frozen; False once the proxy has been stopped."""
        while True:
            while not self._flowing.wait(0.1):
                if self._listener is None:
                    return False
            if not from_server:
                return True
            with self._lock:
                if self._answers_left is None:
                    return True
                if self._answers_left > 0:
                    self._answers_left -= 1
                    return True
                self._flowing.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # stopped while this connection was made
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, target, from_server in ((client, server, False), (server, client, True)):
                threading.Thread(target=_pump, args=(source, target, self._gate, from_server), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket, gate: Callable[[bool], bool], from_server: bool) -> None:
    try:
        while data := source.recv(65536):
            if not gate(from_server):
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def silent_server(port: int) -> Iterator[None]:
    """Accept TCP connections on a port and never answer: a hung server."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join()
        for sock in accepted:
            sock.close()


@contextmanager
def redis_server(port: int) -> Iterator[str]:
    """Run a throwaway, non-persistent redis-server on a port; yield its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed")
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
