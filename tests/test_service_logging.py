"""X-Request-Id on every response and one JSON access-log line per request, never a secret."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from southrock_api.api.logs import RedactKeys
from southrock_api.admin.tokens import IssuedToken
from tests import databases
from tests.apiclient import basic
from tests.servers import gunicorn, seeded_token

pytestmark = pytest.mark.e2e

# The server trusts this loopback address as its proxy; the tests' ordinary requests come from
# 127.0.0.1 and so stand for clients talking to it directly.
PROXY_ADDRESS = "127.0.0.2"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@contextmanager
def _logging_server(
    backend: str, directory: Path, workers: int, **settings: str
) -> Iterator[tuple[str, IssuedToken, Path]]:
    log_path = directory / "gunicorn.log"
    with databases.fresh_database(backend, directory) as database_url:
        issued = seeded_token(database_url)
        env = {
            "SOUTHROCK_DATABASE_URL": database_url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{directory / 'ratelimit.sqlite'}",
            "SOUTHROCK_TRUSTED_PROXIES": PROXY_ADDRESS,
            # gunicorn and the application share this variable; gunicorn's spelling must work.
            "SOUTHROCK_LOG_LEVEL": "info",
            **settings,
        }
        with gunicorn(env, workers=workers, log_path=log_path) as base_url:
            yield base_url, issued, log_path


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, IssuedToken, Path]]:
    """A gunicorn server writing its log to a file, a token, and that file."""
    with _logging_server(backend, tmp_path_factory.mktemp("logging"), workers=2) as served:
        yield served


def _via_proxy(base_url: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    """GET from the trusted proxy's address."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(
        parts.hostname or "", parts.port, timeout=10, source_address=(PROXY_ADDRESS, 0)
    )
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def _access_lines(log_path: Path) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "southrock_api.access"]


def test_every_response_carries_a_generated_request_id(server: tuple[str, IssuedToken, Path]) -> None:
    base_url, issued, _ = server
    auth = {"Authorization": issued.authorization}
    responses = [
        requests.get(base_url + "/healthz", timeout=10),
        requests.get(base_url + "/readyz", timeout=10),
        requests.get(base_url + "/api/v1", headers=auth, timeout=10),
        requests.get(base_url + "/api/v1", timeout=10),
        requests.get(base_url + "/api/v2/enrolments", headers=auth, timeout=10),
        requests.post(base_url + "/api/v1/enrolments", headers=auth, timeout=10),
    ]
    ids = [response.headers["X-Request-Id"] for response in responses]
    assert all(GENERATED_ID.fullmatch(request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_a_client_cannot_choose_its_request_id(server: tuple[str, IssuedToken, Path]) -> None:
    base_url, _, _ = server
    response = requests.get(base_url + "/healthz", headers={"X-Request-Id": "client-chosen-id"}, timeout=10)
    assert GENERATED_ID.fullmatch(response.headers["X-Request-Id"])


def test_the_trusted_proxy_names_the_request(server: tuple[str, IssuedToken, Path]) -> None:
    base_url, _, log_path = server
    response = _via_proxy(
        base_url, "/healthz", {"X-Request-Id": "edge-4f2a.91", "X-Forwarded-For": "203.0.113.9"}
    )
    assert response.getheader("X-Request-Id") == "edge-4f2a.91"
    line = next(line for line in _access_lines(log_path) if line["request_id"] == "edge-4f2a.91")
    assert line["client"] == "203.0.113.9"
    # Even the proxy may only pass a short, plain id.
    unsafe = _via_proxy(base_url, "/healthz", {"X-Request-Id": "x" * 200})
    assert GENERATED_ID.fullmatch(unsafe.getheader("X-Request-Id") or "")


def test_one_access_line_per_request_and_never_a_secret(server: tuple[str, IssuedToken, Path]) -> None:
    base_url, issued, log_path = server
    wrong = f"{issued.public_key}:srsk_not-the-right-private-key"
    wrong_header = basic(wrong)
    sent = [
        (requests.get(base_url + "/api/v1", headers={"Authorization": issued.authorization}, timeout=10), issued.public_key),
        (requests.get(base_url + "/api/v1/enrolments?limit=1", headers={"Authorization": issued.authorization}, timeout=10), issued.public_key),
        # A failed attempt logs the public key it named (a leaked or revoked key's use shows), never the private key.
        (requests.get(base_url + "/api/v1", headers={"Authorization": wrong_header}, timeout=10), issued.public_key),
        (requests.get(base_url + "/api/v1", auth=("srpk_unknown", "srsk_unknown-private"), timeout=10), "srpk_unknown"),
        # Nothing that is not a public key's form: a user name that may be a password, swapped keys,
        # a "public key" holding a private one, a malformed header.
        (requests.get(base_url + "/api/v1", auth=("ops-user-7f3a", "hunter2-password"), timeout=10), None),
        (requests.get(base_url + "/api/v1", auth=("srsk_swapped-private", issued.public_key), timeout=10), None),
        (requests.get(base_url + "/api/v1", auth=("srpk_xsrsk_hidden-private", "srsk_y"), timeout=10), None),
        (requests.get(base_url + "/api/v1", headers={"Authorization": "Basic not-base64!"}, timeout=10), None),
        (requests.get(base_url + "/healthz", timeout=10), None),
    ]
    lines = _access_lines(log_path)
    for response, public_key in sent:
        request_id = response.headers["X-Request-Id"]
        matching = [line for line in lines if line["request_id"] == request_id]
        assert len(matching) == 1
        line = matching[0]
        assert line["status"] == response.status_code
        assert line["public_key"] == public_key
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["method"] == "GET" and line["path"] == urlsplit(response.url).path
    log = log_path.read_text()
    credentials = issued.authorization.split(" ", 1)[1]
    for secret in (
        issued.private_key,
        credentials,
        "srsk_not-the-right-private-key",
        wrong_header.split(" ", 1)[1],
        "srsk_unknown-private",
        "hunter2-password",
        "ops-user-7f3a",
        "srsk_swapped-private",
        "srsk_hidden-private",
        "Authorization",
    ):
        assert secret not in log


def test_the_limiters_429_line_carries_the_request_id(backend: str, tmp_path: Path) -> None:
    """spec §15: flask-limiter's line for a 429 names its request like the access line does."""
    with _logging_server(backend, tmp_path, workers=1, SOUTHROCK_RATE_LIMIT="2 per minute") as served:
        base_url, issued, log_path = served
        auth = {"Authorization": issued.authorization}
        responses = [requests.get(base_url + "/api/v1", headers=auth, timeout=10) for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 429]
    request_id = responses[2].headers["X-Request-Id"]
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    exceeded = [line for line in lines if line["logger"] == "flask-limiter" and "exceeded" in str(line["message"])]
    assert len(exceeded) == 1
    assert exceeded[0]["request_id"] == request_id
    assert exceeded[0]["message"].startswith("ratelimit 2 per 1 minute (site) exceeded")
    access = [line for line in lines if line["logger"] == "southrock_api.access" and line["request_id"] == request_id]
    assert [line["status"] for line in access] == [429]


PRIVATE = "srsk_Ab-cd_EfGhIjKlMnOpQrStUvWxYz0123456789abcdef"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("Authorization Basic " + base64.b64encode(b"admin:" + PRIVATE.encode()).decode(), base64.b64encode(b"admin:" + PRIVATE.encode()).decode()),
        ("Authorization basic " + base64.b64encode(b"x:y-secret").decode(), base64.b64encode(b"x:y-secret").decode()),
        (f"GET http://srpk_x:{PRIVATE}@x/api/v1", PRIVATE),
        # Swapped keys without their scheme, a tab as gunicorn's repr writes it, a percent-encoded key.
        ("Authorization=" + base64.b64encode(PRIVATE.encode() + b":srpk_x").decode(), base64.b64encode(PRIVATE.encode() + b":srpk_x").decode()),
        ("Authorization Basic\t" + base64.b64encode(b"x:" + PRIVATE.encode()).decode(), base64.b64encode(b"x:" + PRIVATE.encode()).decode()),
        ("GET /api/v1?k=" + PRIVATE.replace("_", "%5F", 1) + " HTTP/1.1", PRIVATE.replace("_", "%5F", 1)),
    ],
)
def test_redaction_leaves_no_character_of_a_secret(line: str, secret: str) -> None:
    """gunicorn's error log filter: any scheme's case, any key characters, nothing kept but the prefix."""
    record = logging.LogRecord("gunicorn.error", logging.INFO, __file__, 1, "Invalid HTTP Header: %r", (line,), None)
    assert RedactKeys().filter(record)
    message = record.getMessage()
    assert secret[:5] + "…" in message or "Basic…" in message or "basic…" in message
    for piece in (secret[5:], secret[5:9], secret[-6:], "cd_EfG", "EfGhIj"):
        assert piece not in message
