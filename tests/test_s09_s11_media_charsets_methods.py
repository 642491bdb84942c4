"""spec §9 media types, §10 character sets and §11 methods."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests import factories


@pytest.fixture()
def authorization(session: Session) -> str:
    bu = factories.business_unit(session, code="EDU", name="Éducation – 中文")
    unit = factories.work_unit(session, bu, code="UNI-É", name="Université – 中文 café")
    person = factories.learner(session, unit, lr_id="zoë.ñ", first_name="Zoë", surname="Ñandú–中")
    factories.enrolment(session, person, factories.course(session, code="C-中", description="Cours – 中文"))
    issued = factories.token(session, bu)
    session.commit()
    return issued.authorization


@pytest.mark.parametrize(
    ("path", "headers_key"),
    [("/api/v1", True), ("/api/v1/enrolments", True), ("/api/v1/enrolments", False), ("/api/v9", True), ("/api/v1/enrolments?limit=x", True)],
)
def test_every_api_response_is_json(client: FlaskClient, authorization: str, path: str, headers_key: bool) -> None:
    response = client.get(path, headers={"Authorization": authorization} if headers_key else {})
    assert response.mimetype == "application/json"
    assert response.get_json() is not None


def test_three_byte_characters_round_trip_intact(client: FlaskClient, authorization: str) -> None:
    response = client.get("/api/v1/enrolments", headers={"Authorization": authorization})
    row = response.get_json()[0]
    assert row["ORG_NAME"] == "Université – 中文 café"
    assert row["LR_FNAME"] == "Zoë" and row["LR_SNAME"] == "Ñandú–中"
    assert row["CRS_DESC"] == "Cours – 中文"
    # Sent as UTF-8, not \u escapes.
    assert "中文".encode() in response.data
    filtered = client.get("/api/v1/enrolments?ORGCODES=UNI-%C3%89", headers={"Authorization": authorization})
    assert len(filtered.get_json()) == 1


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("ORGCODES=%F0%9F%98%80", "ORGCODES"),  # 😀 needs four bytes
        ("SDATE=%F0%90%80%80", "SDATE"),
        ("ORGCODES=%FF%FE", "ORGCODES"),  # not UTF-8 at all
        ("ORGCODES=%ED%A0%80", "ORGCODES"),  # an encoded surrogate
        ("ORGCODES=a%00b", "ORGCODES"),
        ("limit=1%0A", "limit"),
        ("ORGCODES=a%7Fb", "ORGCODES"),  # DEL
        ("ORGCODES=a%C2%85b", "ORGCODES"),  # NEL, a C1 control character
        ("ORGCODES=a%C2%9Fb", "ORGCODES"),
    ],
)
def test_characters_outside_the_supported_set_are_e3010(
    client: FlaskClient, authorization: str, query: str, parameter: str
) -> None:
    response = client.get(f"/api/v1/enrolments?{query}", headers={"Authorization": authorization})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "E3010"
    assert error["message"].startswith(f"Invalid parameter found: {parameter}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("%01%F0%9F%98%80", "printable characters"), ("%F0%9F%98%80%01", "three UTF-8 bytes")],
)
def test_the_first_refused_character_is_the_one_reported(
    client: FlaskClient, authorization: str, value: str, expected: str
) -> None:
    response = client.get(f"/api/v1/enrolments?ORGCODES={value}", headers={"Authorization": authorization})
    assert response.status_code == 400
    assert expected in response.get_json()["error"]["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ["/api/v1", "/api/v1/enrolments"])
def test_methods_other_than_get_are_404_e2030(client: FlaskClient, authorization: str, method: str, path: str) -> None:
    response = client.open(path, method=method, headers={"Authorization": authorization})
    # spec §18 lists E2030 under 404, so it is not a 405.
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "E2030"
    assert response.mimetype == "application/json"


def test_head_behaves_as_get_without_a_body(client: FlaskClient, authorization: str) -> None:
    response = client.head("/api/v1/enrolments", headers={"Authorization": authorization})
    assert response.status_code == 200
    assert response.data == b""
    assert response.headers["X-Total-Count"] == "1"


@pytest.mark.parametrize("query", ["x=%ZZ", "x=%F0%9F%98%80", "x=a%00"])
def test_the_version_root_checks_its_query_string_too(client: FlaskClient, authorization: str, query: str) -> None:
    response = client.get(f"/api/v1?{query}", headers={"Authorization": authorization})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "E3010"


@pytest.mark.parametrize("accept", ["text/html,application/xhtml+xml,*/*;q=0.8", "application/json", "*/*"])
def test_any_accept_header_gets_json(client: FlaskClient, authorization: str, accept: str) -> None:
    # spec §6: the API can be tried from a browser, which asks for HTML first.
    response = client.get("/api/v1/enrolments", headers={"Authorization": authorization, "Accept": accept})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
