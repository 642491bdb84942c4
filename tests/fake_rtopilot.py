"""A real HTTP server that behaves as RTOPilot's public API documents PUT /api/enrolments/lms-progress."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from contextlib import contextmanager
from typing import Callable, Iterator

ENDPOINT = "/api/enrolments/lms-progress"


@dataclass(frozen=True)
class Received:
    """One request the fake answered."""

    lms_enrolment_id: object
    progress: object
    status: int


class FakeRtopilot:
    """Bearer check (401), body validation (400), monotonic progress; injectable 500s, dropped and hung connections."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.progress: dict[str, float] = {}
        self.received: list[Received] = []
        self.fail_with_500 = 0  # answer the next N valid requests with 500
        self.always_500_for: set[str] = set()  # these ids get 500 every time
        self.drop_connections = 0  # close the next N connections without answering
        self.hang_next = 0  # hold the next N requests for hang_seconds, then close without answering
        self.hang_seconds = 1.0
        self.redirect_next = 0  # answer the next N requests 302 to a page that answers GET with 200
        self.truncate_next = 0  # answer the next N requests 500 with a body cut off mid-way
        self.echo_authorization = False  # a 400 whose message repeats the Authorization header
        self.bare_400 = False  # a 400 whose JSON body has neither title nor message
        self.gets = 0  # GET requests received (a followed redirect)
        self.after_success: Callable[[int], None] = lambda _count: None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def accepted(self) -> list[tuple[str, float]]:
        """The (id, progress) pairs answered 200, in arrival order."""
        with self._lock:
            return [(str(r.lms_enrolment_id), float(r.progress)) for r in self.received if r.status == 200]  # type: ignore[arg-type]

    def statuses(self) -> list[int]:
        """Every answered status, in arrival order."""
        with self._lock:
            return [r.status for r in self.received]

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str] | None]:
        if handler.path != ENDPOINT:
            with self._lock:
                return self._note(None, None, 404), {"title": "Not Found", "message": "no such endpoint"}
        if handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            with self._lock:
                return self._note(None, None, 401), {"title": "Unauthorized", "message": "invalid API key"}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"title": "Bad Request", "message": "body must be JSON"}
        if not isinstance(body, dict):
            return 400, {"title": "Bad Request", "message": "body must be a JSON object"}
        lms_id, progress = body.get("lmsEnrolmentId"), body.get("progress")
        with self._lock:
            if self.bare_400:
                return self._note(lms_id, progress, 400), {}
            if self.echo_authorization:
                message = f"bad header {handler.headers.get('Authorization')}"
                return self._note(lms_id, progress, 400), {"title": "Bad Request", "message": message}
            if lms_id is None or lms_id == "":
                return self._note(lms_id, progress, 400), {"title": "Bad Request", "message": "lmsEnrolmentId is required"}
            if not isinstance(lms_id, str):
                return self._note(lms_id, progress, 400), {"title": "Bad Request", "message": "lmsEnrolmentId must be a string"}
            if progress is None:
                return self._note(lms_id, progress, 400), {"title": "Bad Request", "message": "progress is required"}
            if isinstance(progress, bool) or not isinstance(progress, (int, float)):
                return self._note(lms_id, progress, 400), {"title": "Bad Request", "message": "progress must be a number"}
            if not 0 <= progress <= 100:
                return self._note(lms_id, progress, 400), {"title": "Bad Request", "message": "progress must be between 0 and 100"}
            if self.fail_with_500 > 0 or lms_id in self.always_500_for:
                self.fail_with_500 = max(0, self.fail_with_500 - 1)
                return self._note(lms_id, progress, 500), {"title": "Internal Server Error", "message": "unexpected error"}
            # Monotonic: only a strictly greater value changes anything; either way the answer is 200.
            if progress > self.progress.get(lms_id, 0):
                self.progress[lms_id] = progress
            self._note(lms_id, progress, 200)
            successes = sum(1 for r in self.received if r.status == 200)
        self.after_success(successes)
        return 200, None

    def _note(self, lms_id: object, progress: object, status: int) -> int:
        self.received.append(Received(lms_id, progress, status))
        return status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with fake._lock:
                    fake.gets += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_PUT(self) -> None:  # noqa: N802  (http.server's naming)
                with fake._lock:
                    redirect, truncate = fake.redirect_next > 0, fake.truncate_next > 0
                    fake.redirect_next = max(0, fake.redirect_next - 1)
                    fake.truncate_next = max(0, fake.truncate_next - (not redirect))
                if redirect or truncate:
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    self.send_response(302 if redirect else 500)
                    if redirect:
                        self.send_header("Location", "/login")
                    self.send_header("Content-Length", "0" if redirect else "100")
                    self.end_headers()
                    if truncate:
                        self.wfile.write(b'{"title": "Internal')  # then the connection closes
                        self.close_connection = True
                    return
                with fake._lock:
                    hang = fake.hang_next > 0
                    fake.hang_next = max(0, fake.hang_next - 1)
                    drop = not hang and fake.drop_connections > 0
                    fake.drop_connections = max(0, fake.drop_connections - (not hang))
                if hang:
                    time.sleep(fake.hang_seconds)
                if hang or drop:
                    self.close_connection = True
                    return
                status, payload = fake._handle(self)
                body = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return None

        return Handler

    def start(self) -> None:
        """Serve in a background thread."""
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running(api_key: str) -> Iterator[FakeRtopilot]:
    """A started fake, stopped afterwards."""
    fake = FakeRtopilot(api_key)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
