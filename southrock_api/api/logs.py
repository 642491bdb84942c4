"""Request ids and one structured access-log line per request (never a key or header value)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

from southrock_api.admin.tokens import PUBLIC_KEY_PREFIX
from southrock_api.api.proxy import TRUSTED_PEER
from southrock_api.api.state import find_state, named_key

access_log = logging.getLogger("southrock_api.access")
# The limiter's own messages (store unreachable, falling back, recovered) belong in our log too.
LOGGERS = ("southrock_api", "flask-limiter")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# What may carry a key: a private key (percent-encoded too), Basic credentials (gunicorn writes a
# tab as \t), Base64 of "srpk_…:srsk_…" or of swapped keys without the scheme (c3Jwa1…, c3Jza1…),
# and RTOPilot's key.
_SECRET = re.compile(
    r"srsk(?:_|%5[Ff])[A-Za-z0-9_%-]*|(?i:basic)(?:\s|\\t)+[A-Za-z0-9+/=_-]+|c3J[wz]a1[A-Za-z0-9+/=]*|rtop_[0-9A-Fa-f]*"
)


class JsonFormatter(logging.Formatter):
    """Format records as one JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON, with its extra fields and any traceback."""
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


class NameTheError(logging.Filter):
    """Add the type of the exception being handled to a warning that does not carry it.

    flask-limiter logs "Rate limit storage unreachable - falling back to in-memory storage" from
    inside its except block; the type (ConnectionError: refused, TimeoutError: hung) tells an
    operator which. Only the type: the error's text may hold the store's URI and its password.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Append the handled exception's type to the message; keep every record."""
        error = sys.exc_info()[1]
        if error is not None and record.exc_info is None and record.levelno >= logging.WARNING:
            record.msg, record.args = f"{record.getMessage()} ({type(error).__name__})", None
        return True


class WithRequestId(logging.Filter):
    """Add the request's id to a line logged while a request is served.

    flask-limiter's "ratelimit … exceeded" line for a 429, an unhandled error's traceback and a
    store failure are then tied to the access line (and the client's X-Request-Id) of their request.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Put request_id first among the record's fields when a request with an id is being served."""
        if has_request_context():
            request_id = g.get("request_id")
            fields = getattr(record, "fields", {})
            if request_id and "request_id" not in fields:
                record.fields = {"request_id": request_id, **fields}
        return True


class RedactKeys(logging.Filter):
    """Cut keys and credentials out of a record's message.

    gunicorn logs a malformed request's raw line or header ("Invalid HTTP Header: 'Authorization
    Basic …'") before the application sees it, so its error log gets this filter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace each secret in the message with its first five characters and an ellipsis."""
        message = record.getMessage()
        redacted = _SECRET.sub(lambda found: found.group()[:5] + "…", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _start() -> None:
    g.started = time.perf_counter()
    # Only a trusted proxy may name the request (a client could otherwise forge log correlation),
    # and only with a short, plain id; otherwise we make our own.
    incoming = request.headers.get("X-Request-Id", "") if request.environ.get(TRUSTED_PEER) else ""
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _finish(response: Response) -> Response:
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-Id"] = request_id
    state = find_state()
    access_log.info(
        "request",
        extra={
            "fields": {
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
                "client": request.remote_addr,
                "public_key": state.principal.public_key if state else _failed_attempts_key(),
            }
        },
    )
    return response


def _failed_attempts_key() -> str | None:
    """The public key a failed attempt named, if it has the form of one: continued use of a leaked key shows."""
    public_key = named_key()
    # auth.parse_basic has checked its shape (never anything from the password part); a user name
    # that is not one of our keys (someone's password, say) or that holds a secret is not logged.
    if public_key is None or not public_key.startswith(PUBLIC_KEY_PREFIX) or _SECRET.search(public_key):
        return None
    return public_key


def configure_logging(level: str) -> None:
    """Send this package's and the limiter's logs to stderr as JSON lines."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(JsonFormatter())
            logger.addHandler(handler)
        for existing in logger.handlers:
            # On the handler, not the logger: it then sees this package's child loggers' records too.
            if isinstance(existing.formatter, JsonFormatter) and not any(
                isinstance(f, WithRequestId) for f in existing.filters
            ):
                existing.addFilter(WithRequestId())
        logger.setLevel(level.upper())  # gunicorn shares SOUTHROCK_LOG_LEVEL and takes "info"
    limiter_logger = logging.getLogger("flask-limiter")
    if not any(isinstance(f, NameTheError) for f in limiter_logger.filters):
        limiter_logger.addFilter(NameTheError())


def init_app(app: Flask) -> None:
    """Give every request an id and log it when it ends."""
    configure_logging(str(app.config["LOG_LEVEL"]))
    app.before_request(_start)
    app.after_request(_finish)
