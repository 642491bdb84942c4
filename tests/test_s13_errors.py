"""spec §13 and §18: every error is the JSON error object with a catalogue code, and leaks nothing."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from southrock_api.api import errors


def test_the_catalogue_is_the_spec_table_and_the_feeds_expiry() -> None:
    assert [(e.status, e.code, e.description) for e in errors.CATALOGUE] == [
        (401, "E1010", "Authentication failed"),
        (400, "E1020", "Bad API token type"),
        (429, "E1030", "API call exceeded rate limit due to too many requests"),
        (404, "E2010", "API Version not supported"),
        (404, "E2020", "Endpoint not supported"),
        (404, "E2030", "HTTP request method not supported"),
        (400, "E3010", "Bad request parameter"),
        # Beyond the spec's table: a changes token older than the change log's retention.
        (410, "E3020", "Changes token expired: take a new snapshot"),
        (500, "E9010", "Internal Server Error"),
    ]


@pytest.fixture()
def failing_app(app: Flask) -> Flask:
    def explode() -> str:
        raise RuntimeError("SELECT private_key_hash FROM api_tokens -- srsk_secret")

    app.add_url_rule("/explode", view_func=explode)
    return app


def test_an_unexpected_error_is_e9010_without_internals(failing_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    response = failing_app.test_client().get("/explode")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"message": "Internal Server Error", "code": "E9010"}}
    body = response.get_data(as_text=True)
    for leak in ("SELECT", "srsk_secret", "Traceback", "RuntimeError", "api_tokens"):
        assert leak not in body
    # The operator still gets the traceback in the log.
    assert any(record.exc_info for record in caplog.records)


def test_error_shape_is_exactly_message_and_code(client: FlaskClient) -> None:
    body = client.get("/api/v1/enrolments").get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "code"}
