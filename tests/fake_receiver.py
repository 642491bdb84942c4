"""A real HTTP webhook receiver on loopback: records every request and answers as scripted."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Request:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers each POST with the next scripted status (then `default`); a status of None hangs past the client's timeout."""

    def __init__(self, *script: int | None, default: int = 204, delay: float = 0.0, hang: float = 1.0) -> None:
        self.script = list(script)
        self.default = default
        self.delay = delay
        self.hang = hang
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                time.sleep(receiver.delay)
                if status is None:
                    time.sleep(receiver.hang)
                    self.close_connection = True
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with receiver._lock:
                    receiver.requests.append(Request("GET", self.path, dict(self.headers.items()), b""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self) -> list[Request]:
        """The POSTs received, in order."""
        with self._lock:
            return [request for request in self.requests if request.method == "POST"]
