"""Requests to the API through Flask's test client, with a token's HTTP Basic credentials."""

from __future__ import annotations

import base64
from typing import Any, Mapping

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from southrock_api.admin.tokens import IssuedToken

WHOAMI = "/api/v1"
ENROLMENTS = "/api/v1/enrolments"
UNITS = "/api/v1/units"
SNAPSHOT = "/api/v1/enrolments/snapshot"
CHANGES = "/api/v1/enrolments/changes"


def basic(credentials: str | bytes) -> str:
    """An Authorization header value: `Basic ` and the credentials (`public:private`) in base64.

    Built here, not with the package's own helper, so that tests check the encoding independently.
    """
    raw = credentials.encode() if isinstance(credentials, str) else credentials
    return "Basic " + base64.b64encode(raw).decode("ascii")


class ApiClient:
    """A test client that sends one Authorization header (a token's, or any value) with every request."""

    def __init__(self, client: FlaskClient, credentials: IssuedToken | str) -> None:
        self.client = client
        self.authorization = credentials.authorization if isinstance(credentials, IssuedToken) else credentials

    def open(
        self, path: str, query: str = "", *, method: str = "GET", headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> TestResponse:
        """Send a request to path?query; headers are added to (or override) the Authorization header."""
        target = f"{path}?{query}" if query else path
        return self.client.open(target, method=method, headers={"Authorization": self.authorization, **(headers or {})}, **kwargs)

    def get(self, path: str, query: str = "", *, headers: Mapping[str, str] | None = None, **kwargs: Any) -> TestResponse:
        """GET path?query (the query exactly as given: order, repeats and escapes are the test's)."""
        return self.open(path, query, headers=headers, **kwargs)

    def whoami(self, query: str = "", **kwargs: Any) -> TestResponse:
        """GET /api/v1 (spec §16)."""
        return self.get(WHOAMI, query, **kwargs)

    def enrolments(self, query: str = "", **kwargs: Any) -> TestResponse:
        """GET /api/v1/enrolments?query (spec §17)."""
        return self.get(ENROLMENTS, query, **kwargs)

    def units(self, query: str = "", **kwargs: Any) -> TestResponse:
        """GET /api/v1/units?query (the work units the token sees)."""
        return self.get(UNITS, query, **kwargs)

    def snapshot(self, query: str = "", **kwargs: Any) -> TestResponse:
        """GET /api/v1/enrolments/snapshot?query (every row, as JSON Lines)."""
        return self.get(SNAPSHOT, query, **kwargs)

    def changes(self, query: str = "", **kwargs: Any) -> TestResponse:
        """GET /api/v1/enrolments/changes?query (the changes since a changes token)."""
        return self.get(CHANGES, query, **kwargs)
