"""The OpenAPI document: valid, public, and saying what the views and the catalogue actually do."""

from __future__ import annotations

import io
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from gunicorn.config import LimitRequestFields
from openapi_spec_validator.readers import read_from_filename, read_from_stdin
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from southrock_api.apidocs.page import resolve_ref
from southrock_api.api.errors import CATALOGUE
from southrock_api.apidocs.texts import (
    CHANGES_PATH,
    ENROLMENTS_PATH,
    HEADER_FIELD_COUNT_LIMIT,
    HEADER_FIELD_LIMIT,
    REQUEST_LINE_LIMIT,
    SERVER_REFUSALS,
    SNAPSHOT_PATH,
    UNITS_PATH,
    WHOAMI_PATH,
)
from southrock_api.api.parameters import EnrolmentQuerySchema, UnitQuerySchema
from southrock_api.api.rendering import BusinessUnitSchema, EnrolmentSchema, UnitSchema, WorkUnitSchema
from tests import factories, servers


@pytest.fixture()
def document(client: FlaskClient) -> dict[str, Any]:
    """The document as the app serves it."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    return response.get_json()


@pytest.fixture()
def authorization(session: Session, organisation: factories.Organisation, bu_token: IssuedToken) -> str:
    """The business-unit token, which also sees three completed enrolments in work units ORG1 and ORG2."""
    for code in ("ORG1", "ORG2"):
        wu = factories.work_unit(session, organisation.business_unit, code=code)
        learner = factories.learner(session, wu)
        factories.enrolment(session, learner, factories.course(session))
    factories.enrolment(session, learner, factories.course(session))
    session.commit()
    return bu_token.authorization


def _operation(document: dict[str, Any], path: str) -> dict[str, Any]:
    return document["paths"][path]["get"]


def _check_body(document: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    """Validate a body against a document schema, its $refs resolved into components."""
    OAS30Validator({**schema, "components": document["components"]}).validate(body)


def _response_schema(document: dict[str, Any], path: str, status: int) -> dict[str, Any]:
    response = resolve_ref(document, _operation(document, path)["responses"][str(status)])
    return response["content"]["application/json"]["schema"]


def _required_headers(document: dict[str, Any], path: str, status: int) -> set[str]:
    response = resolve_ref(document, _operation(document, path)["responses"][str(status)])
    return {
        name
        for name, node in response.get("headers", {}).items()
        if resolve_ref(document, node).get("required")
    }


def _documented_headers(document: dict[str, Any], path: str, status: int) -> set[str]:
    response = resolve_ref(document, _operation(document, path)["responses"][str(status)])
    return set(response.get("headers", {}))


def test_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {WHOAMI_PATH, ENROLMENTS_PATH, UNITS_PATH, SNAPSHOT_PATH, CHANGES_PATH}


def test_served_bytes_are_what_openapi_spec_validator_reads(
    client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served bytes, read as openapi-spec-validator reads a file or stdin (a YAML loader).

    YAML refuses characters JSON allows raw (U+FFFF in a pattern made it stop with "unacceptable
    character #xffff"), so every non-ASCII character must be a JSON escape on the wire.
    """
    response = client.get("/openapi.json")
    body = response.data
    assert body.isascii() and not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", body)
    (tmp_path / "openapi.json").write_bytes(body)
    loaded, _ = read_from_filename(str(tmp_path / "openapi.json"))  # the CLI's own readers
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body), encoding="utf-8"))
    assert read_from_stdin("-")[0] == loaded
    validate(loaded)
    # The YAML reading means the same as the JSON one, patterns' escaped characters included.
    assert loaded == response.get_json()
    parameters = {p["name"]: p for p in loaded["paths"][ENROLMENTS_PATH]["get"]["parameters"]}
    assert "\uffff" in parameters["after"]["schema"]["pattern"]


def test_only_the_document_is_ascii_the_api_stays_utf8(
    client: FlaskClient, session: Session
) -> None:
    """spec §10: API data is UTF-8 on the wire; only /openapi.json escapes its characters."""
    issued = factories.token(session, factories.business_unit(session, code="EDU", name="Éducation"))
    session.commit()
    response = client.get(WHOAMI_PATH, headers={"Authorization": issued.authorization})
    assert "Éducation".encode() in response.data


def test_document_is_public_and_never_rate_limited(app: Flask, client: FlaskClient) -> None:
    app.config["RATE_LIMIT"] = "1 per minute"
    for _ in range(3):
        response = client.get("/openapi.json")
        assert response.status_code == 200
        assert "X-Rate-Limit-Limit" not in response.headers


def test_document_follows_the_configured_rate_limit(app: Flask, client: FlaskClient) -> None:
    app.config["RATE_LIMIT"] = "7 per minute"
    document = client.get("/openapi.json").get_json()
    assert "7 requests per 60 seconds" in document["info"]["description"]


def test_basic_auth_is_the_only_security_scheme(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"] == {
        "basicAuth": {
            "type": "http",
            "scheme": "basic",
            "description": document["components"]["securitySchemes"]["basicAuth"]["description"],
        }
    }
    assert document["security"] == [{"basicAuth": []}]


def test_query_parameters_are_the_query_schema_fields(document: dict[str, Any]) -> None:
    schema = EnrolmentQuerySchema()
    parameters = {
        p["name"]: p for p in _operation(document, ENROLMENTS_PATH)["parameters"] if p["in"] == "query"
    }
    # The schema's fields, then the opaque cursor the view reads itself.
    assert list(parameters) == [field.data_key or name for name, field in schema.fields.items()] + ["after"]
    for name, field in schema.fields.items():
        parameter = parameters[name]
        assert parameter["required"] is False
        assert "nullable" not in parameter["schema"]
        if field.load_default is not None:
            assert parameter["schema"]["default"] == field.load_default
        else:
            assert "default" not in parameter["schema"]
    assert parameters["ORGCODES"]["schema"]["type"] == "array"
    assert (parameters["ORGCODES"]["style"], parameters["ORGCODES"]["explode"]) == ("form", True)
    for name in ("SDATE", "EDATE"):
        assert parameters[name]["schema"]["format"] == "date"
        pattern = re.compile(parameters[name]["schema"]["pattern"])
        assert pattern.match("2017-01-01") and not pattern.match("0000-01-01") and not pattern.match("2017-1-1")
    assert parameters["start"]["schema"]["minimum"] == 1
    assert (parameters["limit"]["schema"]["minimum"], parameters["limit"]["schema"]["maximum"]) == (1, 500)
    assert parameters["limit"]["schema"]["default"] == 200


def test_response_schemas_are_the_dump_schemas(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, schema in (
        ("Enrolment", EnrolmentSchema()),
        ("Unit", UnitSchema()),
        ("BusinessUnit", BusinessUnitSchema()),
        ("WorkUnit", WorkUnitSchema()),
    ):
        assert list(schemas[name]["properties"]) == list(schema.fields)
        assert schemas[name]["required"] == list(schema.fields)
        assert "description" in schemas[name]["properties"][next(iter(schema.fields))]
    # The spec's oddities (§17.1.4): RNUM and SCH_SCORE are strings.
    assert schemas["Enrolment"]["properties"]["RNUM"]["type"] == "string"
    assert schemas["Enrolment"]["properties"]["SCH_SCORE"]["type"] == "string"
    assert schemas["Enrolment"]["properties"]["SCH_AEDATE"]["format"] == "date"
    # Null at the top of what the token sees, and said so.
    assert schemas["Unit"]["properties"]["PARENT_ORG_CODE"]["nullable"] is True
    assert "null" in schemas["Unit"]["properties"]["PARENT_ORG_CODE"]["description"]


def test_the_units_parameters_are_their_schemas_fields_and_page_like_the_enrolments(document: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in _operation(document, UNITS_PATH)["parameters"] if p["in"] == "query"}
    assert list(parameters) == list(UnitQuerySchema().fields) == ["start", "limit"]
    enrolments = {p["name"]: p for p in _operation(document, ENROLMENTS_PATH)["parameters"]}
    for name in ("start", "limit"):
        assert parameters[name]["schema"] == enrolments[name]["schema"]
        assert "work unit" in parameters[name]["description"]
    ok = resolve_ref(document, _operation(document, UNITS_PATH)["responses"]["200"])
    assert {"Link", "X-Total-Count", "X-Data-Version", "ETag"} <= set(ok["headers"])
    # The enrolments' ORGCODES points to where its codes come from.
    assert UNITS_PATH in enrolments["ORGCODES"]["description"]


def test_every_catalogue_code_is_documented(document: dict[str, Any]) -> None:
    codes = [error.code for error in CATALOGUE]
    assert document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
        "enum"
    ] == codes
    assert [row["code"] for row in document["x-error-catalogue"]] == codes
    for error in CATALOGUE:
        response = document["components"]["responses"][error.code]
        assert response["description"].startswith(f"{error.code} {error.description}")
        example = document["components"]["examples"][error.code]["value"]
        assert example == {"error": {"message": error.description, "code": error.code}}
    for path in (WHOAMI_PATH, ENROLMENTS_PATH, UNITS_PATH, SNAPSHOT_PATH, CHANGES_PATH):
        responses = _operation(document, path)["responses"]
        assert {"200", "304", "400", "401", "404", "429", "500"} <= set(responses)
        assert "E2030" in document["paths"][path]["description"]
        # Every 404 an endpoint's path answers: E2020 (HTTPS required, unknown host) and E2030 (other
        # methods); E2010 is about paths of other versions, never this one.
        not_found = resolve_ref(document, responses["404"])
        assert set(not_found["content"]["application/json"]["examples"]) == {"E2020", "E2030"}
        bad_request = resolve_ref(document, responses["400"])
        assert set(bad_request["content"]["application/json"]["examples"]) == {"E1020", "E3010"}


def test_gunicorns_own_refusals_are_documented_on_every_operation(document: dict[str, Any]) -> None:
    """414 and 431 come from gunicorn before any route: HTML, no E-code, none of the API's headers."""
    config = runpy.run_path(str(servers.ROOT / "gunicorn.conf.py"))
    assert (config["limit_request_line"], config["limit_request_field_size"]) == (
        REQUEST_LINE_LIMIT,
        HEADER_FIELD_LIMIT,
    )
    assert config.get("limit_request_fields", LimitRequestFields.default) == HEADER_FIELD_COUNT_LIMIT
    assert [refusal.status for refusal in SERVER_REFUSALS] == [414, 431]
    for path in (WHOAMI_PATH, ENROLMENTS_PATH, UNITS_PATH, SNAPSHOT_PATH, CHANGES_PATH):
        responses = _operation(document, path)["responses"]
        assert list(responses) == sorted(responses)
        for refusal in SERVER_REFUSALS:
            assert responses[str(refusal.status)] == {"$ref": f"#/components/responses/{refusal.name}"}
            response = resolve_ref(document, responses[str(refusal.status)])
            assert response["content"] == {"text/html": {"schema": {"type": "string"}}}
            assert "headers" not in response
            assert response["description"].startswith(refusal.reason)
            assert "gunicorn" in response["description"] and "JSON" in response["description"]
    assert str(REQUEST_LINE_LIMIT) in document["components"]["responses"]["URITooLong"]["description"]
    assert "431 Request Header Fields Too Large" in document["info"]["description"]


def test_rate_limit_and_paging_headers_are_documented(document: dict[str, Any]) -> None:
    headers = document["components"]["headers"]
    for name in (
        "Link",
        "X-Total-Count",
        "X-Rate-Limit-Limit",
        "X-Rate-Limit-Remaining",
        "X-Rate-Limit-Reset",
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
        "ETag",
        "X-Request-Id",
        "X-Data-Version",
    ):
        assert name in headers
    ok = resolve_ref(document, _operation(document, ENROLMENTS_PATH)["responses"]["200"])
    assert {"Link", "X-Total-Count", "X-Data-Version", "ETag", "X-Rate-Limit-Remaining"} <= set(ok["headers"])
    too_many = resolve_ref(document, _operation(document, ENROLMENTS_PATH)["responses"]["429"])
    assert "Retry-After" in too_many["headers"]
    names = [p["name"] for p in _operation(document, ENROLMENTS_PATH)["parameters"]]
    assert "If-None-Match" in names and "after" in names


def test_enrolment_page_matches_the_document(
    client: FlaskClient, document: dict[str, Any], authorization: str
) -> None:
    response = client.get(
        ENROLMENTS_PATH + "?ORGCODES=ORG1&ORGCODES=ORG2&SDATE=2017-01-01&limit=2",
        headers={"Authorization": authorization},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert len(body) == 2
    _check_body(document, _response_schema(document, ENROLMENTS_PATH, 200), body)
    # With a working store every documented header is there, not only the required ones.
    assert _documented_headers(document, ENROLMENTS_PATH, 200) <= set(response.headers.keys())
    assert 'rel="next"' in response.headers["Link"]
    assert response.headers["X-Total-Count"] == "3"


def test_unit_page_matches_the_document(
    client: FlaskClient, document: dict[str, Any], authorization: str
) -> None:
    response = client.get(UNITS_PATH + "?limit=2", headers={"Authorization": authorization})
    assert response.status_code == 200
    body = response.get_json()
    assert [unit["ORG_CODE"] for unit in body] == ["ORG1", "ORG2"]
    _check_body(document, _response_schema(document, UNITS_PATH, 200), body)
    assert _documented_headers(document, UNITS_PATH, 200) <= set(response.headers.keys())
    assert response.headers["X-Total-Count"] == "3"


def test_whoami_and_304_match_the_document(
    client: FlaskClient, document: dict[str, Any], authorization: str
) -> None:
    response = client.get(WHOAMI_PATH, headers={"Authorization": authorization})
    assert response.status_code == 200
    _check_body(document, _response_schema(document, WHOAMI_PATH, 200), response.get_json())
    assert _required_headers(document, WHOAMI_PATH, 200) <= set(response.headers.keys())
    again = client.get(
        WHOAMI_PATH,
        headers={"Authorization": authorization, "If-None-Match": response.headers["ETag"]},
    )
    assert again.status_code == 304
    assert again.data == b""
    assert _documented_headers(document, WHOAMI_PATH, 304) <= set(again.headers.keys())


@pytest.mark.parametrize(
    ("method", "path", "headers", "code"),
    [
        ("GET", ENROLMENTS_PATH, {}, "E1010"),
        ("GET", ENROLMENTS_PATH, {"Authorization": "Bearer x"}, "E1020"),
        ("GET", ENROLMENTS_PATH + "?limit=501", None, "E3010"),
        ("GET", ENROLMENTS_PATH + "?SDATE=2017-1-1", None, "E3010"),
        ("GET", "/api/v2/enrolments", None, "E2010"),
        ("GET", "/api/v1/nothing", None, "E2020"),
        ("POST", ENROLMENTS_PATH, None, "E2030"),
        ("DELETE", WHOAMI_PATH, None, "E2030"),
        ("GET", UNITS_PATH, {}, "E1010"),
        ("GET", UNITS_PATH + "?limit=0", None, "E3010"),
        ("PUT", UNITS_PATH, None, "E2030"),
    ],
)
def test_errors_are_what_the_document_says(
    client: FlaskClient,
    document: dict[str, Any],
    authorization: str,
    method: str,
    path: str,
    headers: dict[str, str] | None,
    code: str,
) -> None:
    response = client.open(
        path, method=method, headers={"Authorization": authorization} if headers is None else headers
    )
    documented = next(row for row in document["x-error-catalogue"] if row["code"] == code)
    assert response.status_code == documented["status"]
    assert response.get_json()["error"]["code"] == code
    _check_body(document, {"$ref": "#/components/schemas/Error"}, response.get_json())
    # An endpoint's table lists every code its path answers, other methods' E2030 included (spec §18).
    if path.split("?")[0] in document["paths"]:
        operation = _operation(document, path.split("?")[0])
        response_doc = resolve_ref(document, operation["responses"][str(response.status_code)])
        assert code in response_doc["content"]["application/json"]["examples"]
        status = response.status_code
        assert _documented_headers(document, path.split("?")[0], status) <= set(response.headers.keys())
