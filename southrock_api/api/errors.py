"""The spec's error catalogue (§18) and the handlers that render it as JSON (§13)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, Response, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, SecurityError

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("v1",)


def in_api_namespace(path: str) -> bool:
    """Whether a path is under /api (spec §8), as /api/v1 is and /apidocs is not."""
    return path == "/api" or path.startswith("/api/")


@dataclass(frozen=True)
class ErrorCode:
    """One row of the spec's error table."""

    code: str
    status: int
    description: str


AUTHENTICATION_FAILED = ErrorCode("E1010", 401, "Authentication failed")
BAD_TOKEN_TYPE = ErrorCode("E1020", 400, "Bad API token type")
RATE_LIMITED = ErrorCode("E1030", 429, "API call exceeded rate limit due to too many requests")
VERSION_NOT_SUPPORTED = ErrorCode("E2010", 404, "API Version not supported")
ENDPOINT_NOT_SUPPORTED = ErrorCode("E2020", 404, "Endpoint not supported")
METHOD_NOT_SUPPORTED = ErrorCode("E2030", 404, "HTTP request method not supported")
BAD_PARAMETER = ErrorCode("E3010", 400, "Bad request parameter")
# Beyond the spec's table (§18): a changes token older than the change log keeps (the feed's
# retention, SOUTHROCK_CHANGES_RETENTION_DAYS). 410, because that position is gone for good.
CHANGES_EXPIRED = ErrorCode("E3020", 410, "Changes token expired: take a new snapshot")
INTERNAL_ERROR = ErrorCode("E9010", 500, "Internal Server Error")

CATALOGUE = (
    AUTHENTICATION_FAILED,
    BAD_TOKEN_TYPE,
    RATE_LIMITED,
    VERSION_NOT_SUPPORTED,
    ENDPOINT_NOT_SUPPORTED,
    METHOD_NOT_SUPPORTED,
    BAD_PARAMETER,
    CHANGES_EXPIRED,
    INTERNAL_ERROR,
)


class ApiError(Exception):
    """An error the API reports with one of the catalogue's codes."""

    def __init__(
        self, error: ErrorCode, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or error.description)
        self.error = error
        self.message = message or error.description
        self.headers = headers or {}


def error_response(error: ErrorCode, message: str | None = None) -> Response:
    """Return the spec's JSON error object for an error code."""
    response = jsonify({"error": {"message": message or error.description, "code": error.code}})
    response.status_code = error.status
    return response


def _not_found(path: str) -> ApiError:
    """Tell an unknown API version from an unknown endpoint under a known one."""
    segments = [segment for segment in path.split("/") if segment]
    if segments[:1] == ["api"]:
        version = segments[1] if len(segments) > 1 else ""
        if version not in SUPPORTED_VERSIONS:
            return ApiError(VERSION_NOT_SUPPORTED, "API Version not supported: use /api/v1")
    return ApiError(
        ENDPOINT_NOT_SUPPORTED,
        "Endpoint not supported: the endpoints are /api/v1, /api/v1/enrolments, /api/v1/enrolments/snapshot, "
        "/api/v1/enrolments/changes and /api/v1/units",
    )


def _handle_api_error(error: ApiError) -> Response:
    response = error_response(error.error, error.message)
    response.headers.update(error.headers)
    return response


def _handle_http_exception(error: HTTPException) -> Response:
    if isinstance(error, RateLimitExceeded):
        return error_response(RATE_LIMITED)
    if isinstance(error, MethodNotAllowed):
        # spec §18: an unsupported method is a 404 with E2030, not a 405.
        return error_response(
            METHOD_NOT_SUPPORTED, f"HTTP request method not supported: {request.method}"
        )
    if isinstance(error, NotFound):
        return _handle_api_error(_not_found(request.path))
    if isinstance(error, SecurityError):
        # A Host outside TRUSTED_HOSTS (or not a host name at all): no endpoint of this site.
        return error_response(ENDPOINT_NOT_SUPPORTED, "Endpoint not supported: unknown host name")
    if error.code is not None and error.code < 500:
        return error_response(BAD_PARAMETER, f"Bad request: {error.name}")
    return _handle_unexpected(error)


def _handle_unexpected(error: Exception) -> Response:
    # The log keeps the traceback; the client only ever sees the catalogue text.
    log.error("unhandled error", exc_info=error)
    return error_response(INTERNAL_ERROR)


def init_app(app: Flask) -> None:
    """Render every error, expected or not, as the spec's JSON error object."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
