"""spec §4 (a new resource), §7, §12: GET /api/v1/units — the work units a token sees, paged like the enrolments."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from tests import factories, worlds
from tests.apiclient import UNITS, ApiClient

FIELDS = ["ORG_CODE", "ORG_NAME", "ORGGRP_CODE", "PARENT_ORG_CODE"]


@pytest.fixture()
def world(session: Session) -> worlds.World:
    return worlds.build(session)


def get(client: FlaskClient, world: worlds.World, token: str, query: str = "") -> TestResponse:
    """GET /api/v1/units?query with the world's token for a unit."""
    return ApiClient(client, world.tokens[token]).units(query)


def links(response: TestResponse) -> dict[str, str]:
    """The Link header's URLs by rel."""
    found = {}
    for part in response.headers["Link"].split(", "):
        url, rel = part.split("; ")
        found[rel.removeprefix('rel="').removesuffix('"')] = url.strip("<>")
    return found


def test_each_unit_has_its_code_name_business_unit_and_parent(client: FlaskClient, world: worlds.World) -> None:
    response = get(client, world, "EDU")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.get_json() == [
        # CORP-SUB belongs to CORP but hangs below UNIV, so EDU sees it (spec §7), with its parent.
        {"ORG_CODE": "CORP-SUB", "ORG_NAME": "Corporate sub", "ORGGRP_CODE": "CORP", "PARENT_ORG_CODE": "UNIV"},
        {"ORG_CODE": "UNIV", "ORG_NAME": "University", "ORGGRP_CODE": "EDU", "PARENT_ORG_CODE": None},
        {"ORG_CODE": "UNIV-STUD", "ORG_NAME": "University - Students", "ORGGRP_CODE": "EDU", "PARENT_ORG_CODE": "UNIV"},
        {"ORG_CODE": "VOC-1", "ORG_NAME": "Vocational 1", "ORGGRP_CODE": "EDU-VOC", "PARENT_ORG_CODE": None},
    ]
    assert response.headers["X-Total-Count"] == "4"


@pytest.mark.parametrize(
    ("token", "visible"),
    [
        # Business-unit tokens: the whole tree below them, both hierarchies (spec §7, §17.1.1).
        ("EDU", {"CORP-SUB": "UNIV", "UNIV": None, "UNIV-STUD": "UNIV", "VOC-1": None}),
        ("EDU-VOC", {"VOC-1": None}),
        # UNIV, CORP-SUB's parent, is not CORP's to see: its code is not given away.
        ("CORP", {"CORP-1": None, "CORP-SUB": None}),
        # Work-unit tokens: their unit and its subtree only; the unit's own parent stays unnamed.
        ("UNIV", {"CORP-SUB": "UNIV", "UNIV": None, "UNIV-STUD": "UNIV"}),
        ("UNIV-STUD", {"UNIV-STUD": None}),
        ("CORP-1", {"CORP-1": None}),
    ],
)
def test_a_token_sees_its_units_and_everything_below_them_only(
    client: FlaskClient, world: worlds.World, token: str, visible: dict[str, str | None]
) -> None:
    rows = get(client, world, token).get_json()
    assert [row["ORG_CODE"] for row in rows] == sorted(visible)
    assert {row["ORG_CODE"]: row["PARENT_ORG_CODE"] for row in rows} == visible
    assert all(set(row) == set(FIELDS) for row in rows)


@pytest.mark.parametrize("token", ["EDU", "EDU-VOC", "CORP", "UNIV", "UNIV-STUD", "CORP-1"])
def test_the_listed_codes_are_the_units_whose_enrolments_the_token_reads(
    client: FlaskClient, world: worlds.World, token: str
) -> None:
    api = ApiClient(client, world.tokens[token])
    codes = [row["ORG_CODE"] for row in api.units().get_json()]
    everything = api.enrolments("limit=500").get_json()
    # Every code ORGCODES takes, and together exactly the token's enrolments.
    assert {row["ORG_CODE"] for row in everything} == set(codes)
    chosen = api.enrolments("limit=500&" + "&".join(f"ORGCODES={code}" for code in codes)).get_json()
    assert chosen == everything
    for code in codes:
        assert {row["ORG_CODE"] for row in api.enrolments(f"ORGCODES={code}&limit=500").get_json()} == {code}


def test_units_without_enrolments_and_new_units_are_listed(client: FlaskClient, session: Session) -> None:
    bu = factories.business_unit(session, code="EDU")
    factories.work_unit(session, bu, code="EMPTY")
    issued = factories.token(session, bu)
    session.commit()
    api = ApiClient(client, issued)
    first = api.units()
    assert [row["ORG_CODE"] for row in first.get_json()] == ["EMPTY"]
    # An import that adds a unit shows at once: the list is kept per data version.
    factories.work_unit(session, bu, code="ADDED")
    session.commit()
    again = api.units(headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200
    assert [row["ORG_CODE"] for row in again.get_json()] == ["ADDED", "EMPTY"]
    assert again.headers["X-Data-Version"] != first.headers["X-Data-Version"]


def test_order_is_by_code_point_whatever_the_database_collation(client: FlaskClient, session: Session) -> None:
    bu = factories.business_unit(session)
    for code in ("crs_c", "Crs-D", "crs-b", "CRS-A"):
        factories.work_unit(session, bu, code=code)
    issued = factories.token(session, bu)
    session.commit()
    rows = ApiClient(client, issued).units().get_json()
    assert [row["ORG_CODE"] for row in rows] == ["CRS-A", "Crs-D", "crs-b", "crs_c"]


# spec §12: start/limit, Link and X-Total-Count exactly as on the enrolments.


@pytest.fixture()
def seven_units(client: FlaskClient, session: Session) -> ApiClient:
    """A business-unit token over work units U1..U7, each below the one before."""
    bu = factories.business_unit(session, code="BU")
    parent = None
    for number in range(1, 8):
        parent = factories.work_unit(session, bu, code=f"U{number}", name=f"Unit {number}", parent=parent)
    issued = factories.token(session, bu)
    session.commit()
    return ApiClient(client, issued)


def test_pages_follow_start_and_limit_with_links_and_total(seven_units: ApiClient) -> None:
    response = seven_units.units("start=3&limit=2")
    assert [row["ORG_CODE"] for row in response.get_json()] == ["U3", "U4"]
    assert response.headers["X-Total-Count"] == "7"
    found = links(response)
    assert set(found) == {"next", "last", "first", "prev"}
    assert found["next"].startswith("http://localhost/api/v1/units?")
    assert dict(parse_qsl(urlsplit(found["next"]).query)) == {"start": "5", "limit": "2"}
    assert dict(parse_qsl(urlsplit(found["last"]).query)) == {"start": "7", "limit": "2"}
    assert dict(parse_qsl(urlsplit(found["first"]).query)) == {"start": "1", "limit": "2"}
    assert dict(parse_qsl(urlsplit(found["prev"]).query)) == {"start": "1", "limit": "2"}


def test_following_next_yields_every_unit_once_in_order(seven_units: ApiClient) -> None:
    url: str | None = UNITS + "?limit=3&future=1"
    codes = []
    while url is not None:
        parts = urlsplit(url)
        response = seven_units.units(parts.query)
        assert response.status_code == 200
        codes += [row["ORG_CODE"] for row in response.get_json()]
        url = links(response).get("next")
        # The links keep every other parameter (spec §12).
        assert url is None or "future=1" in url
    assert codes == [f"U{number}" for number in range(1, 8)]


def test_default_page_is_200_and_a_start_past_the_end_is_empty(client: FlaskClient, session: Session) -> None:
    bu = factories.business_unit(session)
    for number in range(205):
        factories.work_unit(session, bu, code=f"W{number:03d}")
    issued = factories.token(session, bu)
    session.commit()
    api = ApiClient(client, issued)
    first = api.units()
    assert len(first.get_json()) == 200 and first.headers["X-Total-Count"] == "205"
    past = api.units("start=300")
    assert past.status_code == 200 and past.get_json() == []
    assert past.headers["X-Total-Count"] == "205"
    assert "next" not in links(past)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "Invalid parameter found: limit, expected Positive Integer no greater than 500"),
        ("limit=501", "Invalid parameter found: limit, expected Positive Integer no greater than 500"),
        ("limit=abc", "Invalid parameter found: limit, expected Positive Integer no greater than 500"),
        ("start=0", "Invalid parameter found: start, expected Positive Integer no greater than 2147483647"),
        ("start=1&start=2", "Invalid parameter found: start, expected a single value"),
        ("LIMIT=2", "Invalid parameter found: LIMIT, expected limit (parameter names are exact: case-sensitive, no brackets)"),
        ("x=%zz", "Invalid parameter found: x, expected valid percent-encoding"),
    ],
)
def test_bad_parameters_are_e3010_naming_the_parameter(seven_units: ApiClient, query: str, message: str) -> None:
    response = seven_units.units(query)
    assert response.status_code == 400
    assert response.get_json() == {"error": {"message": message, "code": "E3010"}}


@pytest.mark.parametrize("query", ["future=1", "ORGCODES=U1", "SDATE=nonsense", "after=xyz", "tag=1&tag=2"])
def test_unknown_parameters_are_ignored(seven_units: ApiClient, query: str) -> None:
    # spec §5.1c; ORGCODES, SDATE and after are the enrolments' parameters, not this list's.
    response = seven_units.units(query)
    assert response.status_code == 200
    assert len(response.get_json()) == 7


# The same authentication, errors, rate limit and conditional requests as every endpoint.


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [(None, 401, "E1010"), ("Basic c3Jwa194OnNyc2tfeQ==", 401, "E1010"), ("Bearer abc", 400, "E1020")],
)
def test_authentication_is_required(client: FlaskClient, authorization: str | None, status: int, code: str) -> None:
    response = client.get(UNITS, headers={"Authorization": authorization} if authorization else {})
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert "X-Rate-Limit-Limit" in response.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_404_e2030(seven_units: ApiClient, method: str) -> None:
    response = seven_units.open(UNITS, method=method)
    assert response.status_code == 404
    assert response.get_json()["error"] == {"message": f"HTTP request method not supported: {method}", "code": "E2030"}


def test_it_spends_the_sites_bucket_and_answers_429_e1030_when_it_is_spent(seven_units: ApiClient) -> None:
    first = seven_units.units()
    second = seven_units.enrolments()
    assert int(second.headers["X-Rate-Limit-Remaining"]) == int(first.headers["X-Rate-Limit-Remaining"]) - 1
    for _ in range(int(second.headers["X-Rate-Limit-Remaining"])):
        seven_units.whoami()
    refused = seven_units.units()
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "E1030"
    assert int(refused.headers["Retry-After"]) >= 1


def test_if_none_match_gets_304_without_spending_the_bucket(seven_units: ApiClient) -> None:
    first = seven_units.units("limit=3")
    again = seven_units.units("limit=3", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["X-Rate-Limit-Remaining"] == first.headers["X-Rate-Limit-Remaining"]
    # Another page, endpoint or token scope is another answer.
    assert seven_units.units("limit=4").headers["ETag"] != first.headers["ETag"]
    assert seven_units.enrolments("limit=3").headers["ETag"] != first.headers["ETag"]
    # A bad query gets its E3010 whatever the precondition says.
    bad = seven_units.units("limit=0", headers={"If-None-Match": "*"})
    assert bad.status_code == 400


def test_another_tokens_scope_has_another_etag(client: FlaskClient, world: worlds.World) -> None:
    edu, univ = get(client, world, "EDU"), get(client, world, "UNIV")
    assert edu.headers["ETag"] != univ.headers["ETag"]
    again = ApiClient(client, world.tokens["UNIV"]).units(headers={"If-None-Match": edu.headers["ETag"]})
    assert again.status_code == 200
