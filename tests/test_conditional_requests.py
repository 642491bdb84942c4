"""ETag and If-None-Match: a poller that finds nothing new gets 304 and spends no quota."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from tests import factories
from tests.apiclient import ApiClient


@pytest.mark.parametrize(("path", "query"), [("/api/v1", ""), ("/api/v1/enrolments", "SDATE=2017-01-01&limit=5")])
def test_if_none_match_gets_304_without_a_body_or_spending_the_bucket(api: ApiClient, path: str, query: str) -> None:
    first = api.get(path, query)
    etag = first.headers["ETag"]
    again = api.get(path, query, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    assert again.headers["X-Rate-Limit-Remaining"] == first.headers["X-Rate-Limit-Remaining"]


def test_parameter_order_does_not_change_the_etag(api: ApiClient) -> None:
    one = api.enrolments("limit=5&SDATE=2017-01-01")
    two = api.enrolments("SDATE=2017-01-01&limit=5")
    assert one.headers["ETag"] == two.headers["ETag"]


def test_new_data_changes_the_etag(api: ApiClient, session: Session, organisation: factories.Organisation) -> None:
    etag = api.enrolments().headers["ETag"]
    factories.enrolment(session, organisation.learner, organisation.course)
    session.commit()
    response = api.enrolments(headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert len(response.get_json()) == 2
    assert response.headers["ETag"] != etag


def test_any_import_changes_the_etag_even_when_the_answer_is_the_same(
    api: ApiClient, session: Session, organisation: factories.Organisation
) -> None:
    # The ETag follows the data version, which every import moves: an enrolment that is not (yet)
    # a completion changes no row of the answer, but a poller gets a full 200 all the same.
    first = api.enrolments()
    factories.enrolment(session, organisation.learner, organisation.course, status="IN_PROGRESS")
    session.commit()
    again = api.enrolments(headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["ETag"] != first.headers["ETag"]


def test_another_token_scope_has_another_etag(api: ApiClient, client: FlaskClient, wu_token: IssuedToken) -> None:
    mine = api.enrolments().headers["ETag"]
    response = ApiClient(client, wu_token).enrolments(headers={"If-None-Match": mine})
    assert response.status_code == 200


def test_an_etag_never_bypasses_authentication(api: ApiClient, client: FlaskClient) -> None:
    etag = api.enrolments().headers["ETag"]
    response = client.get("/api/v1/enrolments", headers={"If-None-Match": etag})
    assert response.status_code == 401


def test_a_weakened_etag_still_matches(api: ApiClient) -> None:
    # A proxy that compresses responses may turn "x" into W/"x" (RFC 9110 §13.1.2: weak comparison).
    etag = api.enrolments().headers["ETag"]
    response = api.enrolments(headers={"If-None-Match": f"W/{etag}"})
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
def test_every_parameter_is_part_of_the_etag(api: ApiClient, mine: str, theirs: str) -> None:
    etag = api.enrolments(mine).headers["ETag"]
    response = api.enrolments(theirs, headers={"If-None-Match": etag})
    assert response.status_code == 200


def test_tokens_of_two_units_of_one_kind_have_different_etags(client: FlaskClient, session: Session) -> None:
    for make in (factories.business_unit, lambda s: factories.work_unit(s, factories.business_unit(s))):
        one, two = make(session), make(session)
        first, second = factories.token(session, one), factories.token(session, two)
        session.commit()
        etag = ApiClient(client, first).enrolments().headers["ETag"]
        response = ApiClient(client, second).enrolments(headers={"If-None-Match": etag})
        assert response.status_code == 200
