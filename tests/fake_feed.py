"""A real HTTP server on loopback that serves the snapshot and the change feed as their contract says, and breaks them on request.

The site's own endpoints are tested against gunicorn (tests/test_mirror.py, end to end); this one
can cut a snapshot mid-stream, close it with a wrong row count, or forget old changes at will.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

PUBLIC_KEY = "srpk_fake"
PRIVATE_KEY = "srsk_fake-private"
# Only the Basic credentials of PUBLIC_KEY:PRIVATE_KEY are accepted.
AUTHORIZATION = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{PRIVATE_KEY}".encode()).decode()
MAX_LIMIT = 5000


def row(sch_id: str, org_code: str = "UNIV-STUD", day: int = 1, **fields: str) -> dict[str, str]:
    """One enrolment as the listing renders it, without RNUM."""
    return {
        "ORG_CODE": org_code,
        "ORG_NAME": f"Unit {org_code}",
        "CRS_CODE": "ROBOT",
        "CRS_DESC": "Robotic Control",
        "LR_ID": f"learner.{sch_id.lower()}",
        "LR_SNAME": "Student",
        "LR_FNAME": "Zoë",
        "LR_EMAIL": f"{sch_id.lower()}@test.southrock.com",
        "SCH_AEDATE": f"2025-03-{day:02d}",
        "SCH_SCORE": "87.50",
        "SCH_ID": sch_id,
        **fields,
    }


class FakeFeed:
    """Rows by SCH_ID and a change log of SCH_IDs; a change renders the row as it is now (or a DELETE)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = {}
        self.log: list[str] = []  # position n (1-based) changed log[n - 1]
        self.forgotten_through = 0  # tokens before this position answer 410
        self.cut_snapshot_after: int | None = None  # whole rows sent before the stream is cut mid-row
        self.snapshot_rows_claimed: int | None = None  # a closing record with this ROWS instead of the count
        self.after_the_end: list[bytes] = []  # lines sent after the closing record
        self.requests: list[str] = []  # paths with queries, in arrival order
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, *rows: dict[str, str]) -> None:
        """Insert or update rows, logging a change for each."""
        with self._lock:
            for new in rows:
                self.rows[new["SCH_ID"]] = new
                self.log.append(new["SCH_ID"])

    def remove(self, *sch_ids: str) -> None:
        """Delete rows, logging a change for each."""
        with self._lock:
            for sch_id in sch_ids:
                del self.rows[sch_id]
                self.log.append(sch_id)

    def listing(self) -> dict[str, dict[str, str]]:
        """What the listing shows now, by SCH_ID."""
        with self._lock:
            return {sch_id: dict(found) for sch_id, found in self.rows.items()}

    def _snapshot(self, query: dict[str, list[str]]) -> tuple[list[bytes], str]:
        orgcodes = query.get("ORGCODES")
        sdate, edate = query.get("SDATE", [""])[0], query.get("EDATE", [""])[0]
        with self._lock:
            token = str(len(self.log))
            chosen = [
                found
                for _, found in sorted(self.rows.items())
                if (not orgcodes or found["ORG_CODE"] in orgcodes)
                and (not sdate or found["SCH_AEDATE"] >= sdate)
                and (not edate or found["SCH_AEDATE"] <= edate)
            ]
        lines = [json.dumps({"RNUM": str(number), **found}).encode() + b"\n" for number, found in enumerate(chosen, 1)]
        if self.cut_snapshot_after is not None:
            cut = self.cut_snapshot_after
            return [*lines[:cut], *(line[: len(line) // 2] for line in lines[cut : cut + 1])], token
        claimed = len(lines) if self.snapshot_rows_claimed is None else self.snapshot_rows_claimed
        return [*lines, json.dumps({"END": True, "ROWS": claimed}).encode() + b"\n", *self.after_the_end], token

    def _changes(self, query: dict[str, list[str]]) -> tuple[int, object, dict[str, str]]:
        since = int(query.get("since", ["0"])[0])
        limit = min(int(query.get("limit", ["500"])[0]), MAX_LIMIT)
        with self._lock:
            if since < self.forgotten_through:
                error = {"code": "E3020", "message": "the changes since this token are no longer kept: take a new snapshot"}
                return 410, {"error": error}, {}
            until = min(since + limit, len(self.log))
            changes: list[dict[str, str]] = []
            for sch_id in self.log[since:until]:
                found = self.rows.get(sch_id)
                changes.append({"CHANGE": "UPSERT", **found} if found else {"CHANGE": "DELETE", "SCH_ID": sch_id})
            headers = {"X-Changes-Token": str(until)}
            if until < len(self.log):
                headers["Link"] = f'<{self.url}/api/v1/enrolments/changes?{urlencode({"since": until, "limit": limit})}>; rel="next"'
        return 200, changes, headers

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        feed = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                feed.requests.append(self.path)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if self.headers.get("Authorization") != AUTHORIZATION:
                    self._json(401, {"error": {"code": "E1010", "message": "invalid credentials"}}, {})
                elif parts.path == "/api/v1/enrolments/snapshot":
                    self._stream(*feed._snapshot(query))
                elif parts.path == "/api/v1/enrolments/changes":
                    self._json(*feed._changes(query))
                else:
                    self._json(404, {"error": {"code": "E2010", "message": "not found"}}, {})

            def _json(self, status: int, body: object, headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, lines: list[bytes], token: str) -> None:
                # Chunked, as a stream is sent; gzip when the client allows it, as the site does.
                zipped = "gzip" in self.headers.get("Accept-Encoding", "")
                body = b"".join(lines)
                data = gzip.compress(body) if zipped else body
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("X-Changes-Token", token)
                if zipped:
                    self.send_header("Content-Encoding", "gzip")
                self.end_headers()
                for start in range(0, len(data), 100):
                    piece = data[start : start + 100]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                if feed.cut_snapshot_after is not None:
                    # No terminating chunk: the connection just ends, as when a server dies mid-stream.
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return None

        return Handler


@contextmanager
def running(feed: FakeFeed) -> Iterator[FakeFeed]:
    """Serve the feed for the duration."""
    thread = threading.Thread(target=feed._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield feed
    finally:
        feed._server.shutdown()
        feed._server.server_close()
