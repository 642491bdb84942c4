"""Apps that answer every GET with the last body PUT to them: HTTP through gunicorn, no work.

bench/run.py serves them with the API's own gunicorn.conf.py and primes them with the API's
response for each scenario, so the same bytes cross the same server and client stack:

- `app`, a bare WSGI callable: what HTTP through gunicorn costs (what is left of the API's
  time after that is the application's own);
- `flask_app`, one Flask view: what HTTP and Flask's request handling cost before any
  authentication, rate limiting, query or encoding (the least a Flask application can take);
- `stream_app`, a bare WSGI callable streaming `bytes` bytes in pieces of `block` (query
  parameters) from memory, with no Content-Length, as the snapshot streams its blocks: what a
  streamed body of that size costs HTTP through gunicorn.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs

from flask import Flask, Response, request

_body = b"[]"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """PUT stores the body; anything else returns it."""
    global _body
    if environ["REQUEST_METHOD"] == "PUT":
        _body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("204 No Content", [])
        return [b""]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(_body)))])
    return [_body]


def stream_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Stream `bytes` bytes of JSON Lines-like text in pieces of `block` bytes."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    size, block = int(query.get("bytes", ["0"])[0]), max(int(query.get("block", ["65536"])[0]), 1)
    piece = (b'{"ROW":"' + b"x" * 240 + b'"}\n') * (block // 251 + 1)

    def pieces() -> Iterator[bytes]:
        left = size
        while left > 0:
            yield piece[: min(block, left)]
            left -= block

    start_response("200 OK", [("Content-Type", "application/x-ndjson")])
    return pieces()


flask_app = Flask(__name__)


@flask_app.route("/", defaults={"path": ""}, methods=["GET", "PUT"])
@flask_app.route("/<path:path>", methods=["GET", "PUT"])
def echo(path: str) -> Response:
    """PUT stores the body; GET returns it."""
    global _body
    if request.method == "PUT":
        _body = request.get_data()
        return Response(status=204)
    return Response(_body, mimetype="application/json")
