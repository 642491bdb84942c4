"""Hostile requests through gunicorn: the app's JSON E-codes, never gunicorn's own errors or a leak."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from southrock_api.apidocs.page import resolve_ref
from tests import databases, servers
from tests.apiclient import basic

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    """A gunicorn server; yields (base URL, Authorization value, private key, log path)."""
    directory = tmp_path_factory.mktemp("hostile")
    with databases.fresh_database(backend, directory) as url:
        issued = servers.seeded_token(url)
        log = directory / "gunicorn.log"
        env = {
            "SOUTHROCK_DATABASE_URL": url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{directory / 'ratelimit.sqlite'}",
            "SOUTHROCK_RATE_LIMIT": "100000 per minute",
            "SOUTHROCK_AUTH_FAILURE_LIMIT": "100000 per minute",
        }
        with servers.gunicorn(env, workers=2, log_path=log) as base_url:
            yield base_url, issued.authorization, issued.private_key, log


def raw_get(base_url: str, target: str, headers: dict[str, str], method: str = "GET") -> tuple[int, str, str]:
    """Send a request line exactly as given (no client-side normalisation); return status, type, body."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=15)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/api/v1/enrolments?" + "&".join(["a="] * 2_001), 400, "E3010"),  # more parameters than the app takes
        ("/api/v1/enrolments?ORGCODES=" + "x" * 300, 400, "E3010"),
        ("/api/v1/enrolments?limit=%zz", 400, "E3010"),
        ("/api/v1/enrolments?ORGCODES=%FF", 400, "E3010"),
        ("/api/v1/enrolments?SDATE=2017-01-01%27%20OR%201=1", 400, "E3010"),
        ("/api/v1/enrolments/..", 404, "E2020"),
        ("/api/v1/../v2/enrolments", 404, "E2020"),  # paths are not resolved: this is under v1
        ("/api//v1", 404, "E2020"),
    ],
)
def test_hostile_targets_get_json_e_codes(served: tuple[str, str, str, Path], target: str, status: int, code: str) -> None:
    base_url, authorization, private_key, _ = served
    got_status, content_type, body = raw_get(base_url, target, {"Authorization": authorization})
    assert (got_status, content_type) == (status, "application/json")
    assert f'"code":"{code}"' in body
    assert private_key not in body and "Traceback" not in body


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + "A" * 8_000,
        basic("p" * 5_000 + ":s"),
        "Basic %%%",
    ],
)
def test_hostile_credentials_get_e1010(served: tuple[str, str, str, Path], authorization: str) -> None:
    base_url = served[0]
    status, content_type, body = raw_get(base_url, "/api/v1", {"Authorization": authorization})
    assert (status, content_type) == (401, "application/json")
    assert '"code":"E1010"' in body


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        ("/api/v1/enrolments?" + "&".join(["ORGCODES=U"] * 10_000), {}, 414),
        ("/api/v1", {"Authorization": "Basic " + "A" * 65_536}, 431),
    ],
)
def test_oversized_request_lines_and_headers_are_refused_by_gunicorn(
    served: tuple[str, str, str, Path], target: str, headers: dict[str, str], expected: int
) -> None:
    """Bounded before the application: unbounded, gunicorn's parser costs the square of the length."""
    base_url, authorization, _, _ = served
    status, content_type, body = raw_get(base_url, target, headers)
    assert status == expected and "Traceback" not in body
    # As the document says on every operation: gunicorn's own HTML page, not JSON.
    document = json.loads(raw_get(base_url, "/openapi.json", {})[2])
    operation = document["paths"][urlsplit(target).path]["get"]
    assert content_type in resolve_ref(document, operation["responses"][str(status)])["content"]
    assert raw_get(base_url, "/api/v1", {"Authorization": authorization})[0] == 200


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "DELETE", "PATCH"])
def test_other_methods_get_e2030(served: tuple[str, str, str, Path], method: str) -> None:
    base_url, authorization, _, _ = served
    status, content_type, body = raw_get(base_url, "/api/v1/enrolments", {"Authorization": authorization}, method)
    assert (status, content_type) == (404, "application/json")
    assert '"code":"E2030"' in body


def raw_send(base_url: str, data: bytes) -> bytes:
    """Send bytes no HTTP client would; return what the server answers."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as connection:
        connection.sendall(data)
        return connection.recv(65_536)


def test_no_key_reaches_the_log(served: tuple[str, str, str, Path]) -> None:
    base_url, authorization, private_key, log = served
    credentials = authorization.split()[1]
    public_key = base64.b64decode(credentials).decode().split(":")[0]
    raw_get(base_url, "/api/v1", {"Authorization": authorization})
    raw_get(base_url, "/api/v1/enrolments?limit=0", {"Authorization": authorization})
    # Requests gunicorn cannot parse, which it logs raw: a header without its colon, with and
    # without the scheme, and credentials in a request line with a control character.
    for malformed in (
        f"GET /api/v1 HTTP/1.1\r\nHost: x\r\nAuthorization Basic {credentials}\r\n\r\n",
        f"GET /api/v1 HTTP/1.1\r\nHost: x\r\nAuthorization {credentials}\r\n\r\n",
        f"GET http://{public_key}:{private_key}@x/api/v1\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        assert raw_send(base_url, malformed.encode()).startswith(b"HTTP/1.1 400")
    text = log.read_text()
    assert '"status": 400' in text  # the requests above were logged...
    assert text.count("Invalid HTTP") >= 3
    assert private_key not in text and credentials not in text  # ...without their keys
    assert private_key[5:] not in text and credentials[6:] not in text
