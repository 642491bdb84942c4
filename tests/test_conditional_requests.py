"""ETag and If-None-Match: a poller that finds nothing new gets 304 and spends no quota."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests import factories


@pytest.fixture()
def setup(session: Session):  # type: ignore[no-untyped-def]
    bu = factories.business_unit(session)
    unit = factories.work_unit(session, bu)
    person = factories.learner(session, unit)
    course = factories.course(session)
    factories.enrolment(session, person, course)
    issued = factories.token(session, bu)
    other = factories.token(session, unit)
    session.commit()
    return issued, other, person, course


@pytest.mark.parametrize("path", ["/api/v1", "/api/v1/enrolments?SDATE=2017-01-01&limit=5"])
def test_if_none_match_gets_304_without_a_body_or_spending_the_bucket(client: FlaskClient, setup, path: str) -> None:  # type: ignore[no-untyped-def]
    issued = setup[0]
    first = client.get(path, headers={"Authorization": issued.authorization})
    etag = first.headers["ETag"]
    again = client.get(path, headers={"Authorization": issued.authorization, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    assert again.headers["X-Rate-Limit-Remaining"] == first.headers["X-Rate-Limit-Remaining"]


def test_parameter_order_does_not_change_the_etag(client: FlaskClient, setup) -> None:  # type: ignore[no-untyped-def]
    issued = setup[0]
    one = client.get("/api/v1/enrolments?limit=5&SDATE=2017-01-01", headers={"Authorization": issued.authorization})
    two = client.get("/api/v1/enrolments?SDATE=2017-01-01&limit=5", headers={"Authorization": issued.authorization})
    assert one.headers["ETag"] == two.headers["ETag"]


def test_new_data_changes_the_etag(client: FlaskClient, session: Session, setup) -> None:  # type: ignore[no-untyped-def]
    issued, _, person, course = setup
    etag = client.get("/api/v1/enrolments", headers={"Authorization": issued.authorization}).headers["ETag"]
    factories.enrolment(session, person, course)
    session.commit()
    response = client.get("/api/v1/enrolments", headers={"Authorization": issued.authorization, "If-None-Match": etag})
    assert response.status_code == 200
    assert len(response.get_json()) == 2
    assert response.headers["ETag"] != etag


def test_another_token_scope_has_another_etag(client: FlaskClient, setup) -> None:  # type: ignore[no-untyped-def]
    issued, other, _, _ = setup
    mine = client.get("/api/v1/enrolments", headers={"Authorization": issued.authorization}).headers["ETag"]
    response = client.get("/api/v1/enrolments", headers={"Authorization": other.authorization, "If-None-Match": mine})
    assert response.status_code == 200


def test_an_etag_never_bypasses_authentication(client: FlaskClient, setup) -> None:  # type: ignore[no-untyped-def]
    issued = setup[0]
    etag = client.get("/api/v1/enrolments", headers={"Authorization": issued.authorization}).headers["ETag"]
    response = client.get("/api/v1/enrolments", headers={"If-None-Match": etag})
    assert response.status_code == 401


def test_a_weakened_etag_still_matches(client: FlaskClient, setup) -> None:  # type: ignore[no-untyped-def]
    # A proxy that compresses responses may turn "x" into W/"x" (RFC 9110 §13.1.2: weak comparison).
    issued = setup[0]
    etag = client.get("/api/v1/enrolments", headers={"Authorization": issued.authorization}).headers["ETag"]
    response = client.get("/api/v1/enrolments", headers={"Authorization": issued.authorization, "If-None-Match": f"W/{etag}"})
    assert response.status_code == 304


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ("limit=5", "limit=2"),
        ("start=1", "start=2"),
        ("SDATE=2017-01-01", "SDATE=2016-01-01"),
        ("EDATE=2030-01-01", "EDATE=2031-01-01"),
        ("ORGCODES=A", "ORGCODES=B"),
        ("", "ORGCODES=A"),
    ],
)
def test_every_parameter_is_part_of_the_etag(client: FlaskClient, setup, mine: str, theirs: str) -> None:  # type: ignore[no-untyped-def]
    issued = setup[0]
    headers = {"Authorization": issued.authorization}
    etag = client.get(f"/api/v1/enrolments?{mine}", headers=headers).headers["ETag"]
    response = client.get(f"/api/v1/enrolments?{theirs}", headers={**headers, "If-None-Match": etag})
    assert response.status_code == 200


def test_tokens_of_two_units_of_one_kind_have_different_etags(client: FlaskClient, session: Session) -> None:
    for make in (factories.business_unit, lambda s: factories.work_unit(s, factories.business_unit(s))):
        one, two = make(session), make(session)
        first, second = factories.token(session, one), factories.token(session, two)
        session.commit()
        etag = client.get("/api/v1/enrolments", headers={"Authorization": first.authorization}).headers["ETag"]
        response = client.get("/api/v1/enrolments", headers={"Authorization": second.authorization, "If-None-Match": etag})
        assert response.status_code == 200
