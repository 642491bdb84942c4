"""Hostile requests: each gets a catalogue E-code in a JSON body, and nothing leaks."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from southrock_api.admin.tokens import IssuedToken
from tests.apiclient import ApiClient, basic

LONG = "x" * 10_240
SECRET_MARKERS = ("Traceback", "SELECT", "sqlalchemy", "psycopg", "sqlite3", "srsk_")


def assert_clean(response: TestResponse, issued: IssuedToken) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code < 500
    assert response.mimetype == "application/json"
    assert issued.private_key not in body
    for marker in SECRET_MARKERS:
        assert marker not in body


@pytest.mark.parametrize(
    "query",
    [
        f"ORGCODES={LONG}", f"SDATE={LONG}", f"EDATE={LONG}", f"start={'9' * 10_240}", f"limit={LONG}",
        "start=", "limit=", "SDATE=", "EDATE=", "ORGCODES=",
        "limit=1&limit=2", "SDATE=2017-01-01&SDATE=2017-01-02", "EDATE=2017-01-01&EDATE=2017-01-01",
        "limit=%zz", "SDATE=%", "ORGCODES=%G1", "ORGCODES=%C3%28", "ORGCODES=%80",
        "ORGCODES=a%00", "SDATE=2017-01-01%0D%0A", "ORGCODES=%1B[31m",
        "SDATE=2017-01-01'%20OR%20'1'='1", "limit=1;DROP%20TABLE%20enrolments", "start=1%20OR%201=1",
        "&".join(["ORGCODES=U"] * 10_000),
        "start=99999999999", "limit=-0", "start=0x10", "limit=1e2", "start=%EF%BC%91",
    ],
)
def test_bad_parameters_are_e3010(api: ApiClient, bu_token: IssuedToken, query: str) -> None:
    response = api.enrolments(query)
    assert response.status_code == 400, query[:80]
    assert response.get_json()["error"]["code"] == "E3010"
    assert_clean(response, bu_token)


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ("ORGCODES=' OR 1=1 --", 0),
        ("ORGCODES=UNIV-STUD' UNION SELECT private_key_hash FROM api_tokens --", 0),
        ("ORGCODES=%25", 0),
        (f"unknown={LONG}", 1),  # ignored: the whole visible result
    ],
)
def test_injection_strings_are_just_codes_nobody_has(api: ApiClient, bu_token: IssuedToken, query: str, rows: int) -> None:
    response = api.enrolments(query)
    assert response.status_code == 200
    assert len(response.get_json()) == rows
    assert_clean(response, bu_token)


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + "A" * 65_536,
        basic(b"x" * 48_000 + b":y"),
        basic("p" * 10_000 + ":" + "s"),
        "Basic not base64 at all",
        basic(b"nocolon"),
        "Basic =",
        basic(b"a:b:c"),
    ],
)
def test_hostile_credentials_are_e1010(client: FlaskClient, bu_token: IssuedToken, header: str) -> None:
    response = ApiClient(client, header).enrolments()
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "E1010"
    assert_clean(response, bu_token)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"])
@pytest.mark.parametrize("path", ["/api/v1", "/api/v1/enrolments", "/api/v2", "/api/v1/nope", "/healthz"])
def test_any_method_on_any_path_is_answered_cleanly(api: ApiClient, bu_token: IssuedToken, method: str, path: str) -> None:
    response = api.open(path, method=method)
    assert response.status_code in (200, 404)
    if method != "HEAD":
        assert response.get_json()["error"]["code"] in ("E2010", "E2020", "E2030")
        assert_clean(response, bu_token)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/v1/../v1/enrolments", None),
        ("/api/v1/enrolments/..", "E2020"),
        ("/api/v1%2Fenrolments", None),  # the server decodes %2F: the same resource
        ("/api/v1/enrolments%2F", "E2020"),
        ("//api/v1/enrolments", "E2020"),
        ("/api//v1/enrolments", "E2020"),
        ("/api/v1/%00", "E2020"),
        ("/api/%2e%2e/v1", "E2010"),
    ],
)
def test_odd_paths_never_escape_the_namespace(api: ApiClient, bu_token: IssuedToken, path: str, code: str | None) -> None:
    response = api.get(path)
    assert response.status_code in (200, 404)
    if code:
        assert response.get_json()["error"]["code"] == code
    assert_clean(response, bu_token)
