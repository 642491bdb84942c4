"""A WSGI app that answers every GET with the last body PUT to it: HTTP through gunicorn, no work.

bench/run.py serves it with the API's own gunicorn.conf.py and primes it with the API's
response for each scenario, so the same bytes cross the same server and client stack:
what is left of the API's time after that is the application's own.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

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
