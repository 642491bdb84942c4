"""spec §17: GET /api/v1/enrolments — properties, visibility, filters and order."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from southrock_api.data.models import BusinessUnit, Enrolment, WorkUnit
from tests import factories, worlds
from tests.apiclient import ApiClient

# The spec's properties (§17.1.4, §17.1.5), and SCH_ID, the row's stable key (§5.2b allows new ones).
SPEC_FIELDS = {
    "ORG_CODE", "ORG_NAME", "CRS_CODE", "CRS_DESC", "LR_ID", "LR_SNAME",
    "LR_FNAME", "LR_EMAIL", "SCH_AEDATE", "SCH_SCORE", "RNUM",
}
FIELDS = SPEC_FIELDS | {"SCH_ID"}


@pytest.fixture()
def world(session: Session) -> worlds.World:
    return worlds.build(session)


def get(client: FlaskClient, world: worlds.World, token: str, query: str = "") -> TestResponse:
    """GET /api/v1/enrolments?query with the world's token for a unit."""
    return ApiClient(client, world.tokens[token]).enrolments(query)


def org_codes(rows: list[dict[str, str]]) -> set[str]:
    return {row["ORG_CODE"] for row in rows}


def test_rows_have_the_spec_properties_and_types(client: FlaskClient, world: worlds.World) -> None:
    response = get(client, world, "UNIV-STUD")
    assert response.status_code == 200
    rows = response.get_json()
    assert rows and all(set(row) == FIELDS for row in rows)
    first = rows[0]
    # spec §17.1.4 shows RNUM and SCH_SCORE as strings, dates as YYYY-MM-DD.
    assert first["RNUM"] == "1" and isinstance(first["RNUM"], str)
    assert first["SCH_SCORE"] == "87.50"
    assert {row["SCH_SCORE"] for row in rows} == {"100.00", "87.50"}
    assert first["SCH_AEDATE"] == "2017-01-07"
    assert first["ORG_CODE"] == "UNIV-STUD" and first["ORG_NAME"] == "University - Students"
    assert first["CRS_CODE"] == "INFCRTL_GRP3" and first["CRS_DESC"] == "Robotic Control"
    assert first["LR_FNAME"] == "Betty" and first["LR_SNAME"] == "Student"
    assert first["LR_EMAIL"] == "betty.univ-stud@example.test"


def test_each_row_carries_its_enrolments_sch_id(client: FlaskClient, world: worlds.World, session: Session) -> None:
    """SCH_ID is the stored enrolment's id: stable across pages and requests, one per completion."""
    rows = get(client, world, "UNIV-STUD").get_json()
    stored = {
        sch_id: (lr_id, crs_code)
        for sch_id, lr_id, crs_code in session.execute(select(Enrolment.sch_id, Enrolment.lr_id, Enrolment.crs_code))
    }
    assert [stored[row["SCH_ID"]] for row in rows] == [(row["LR_ID"], row["CRS_CODE"]) for row in rows]
    assert len({row["SCH_ID"] for row in rows}) == len(rows)
    assert get(client, world, "UNIV-STUD", "start=2&limit=1").get_json()[0]["SCH_ID"] == rows[1]["SCH_ID"]


@pytest.mark.parametrize(
    ("token", "visible"),
    [
        ("EDU", {"UNIV", "UNIV-STUD", "VOC-1", "CORP-SUB"}),
        ("EDU-VOC", {"VOC-1"}),
        ("CORP", {"CORP-1", "CORP-SUB"}),
        ("UNIV", {"UNIV", "UNIV-STUD", "CORP-SUB"}),
        ("UNIV-STUD", {"UNIV-STUD"}),
        ("CORP-1", {"CORP-1"}),
    ],
)
def test_a_token_sees_its_units_and_everything_below_them_only(
    client: FlaskClient, world: worlds.World, token: str, visible: set[str]
) -> None:
    rows = get(client, world, token, "limit=500").get_json()
    assert org_codes(rows) == visible
    assert [row["LR_ID"] + row["CRS_CODE"] for row in rows]  # non-empty
    assert len(rows) == len(worlds.visible_sch_ids(world, *visible))


def test_only_completed_enrolments_are_listed(client: FlaskClient, world: worlds.World) -> None:
    response = get(client, world, "CORP-1")
    # Two learners × two completed courses; their IN_PROGRESS and WITHDRAWN rows never appear.
    assert response.headers["X-Total-Count"] == "4"
    assert len(response.get_json()) == 4


def test_order_is_work_unit_course_learner_and_rnum_counts_from_start(client: FlaskClient, world: worlds.World) -> None:
    rows = get(client, world, "EDU", "limit=500").get_json()
    keys = [(row["ORG_CODE"], row["CRS_CODE"], row["LR_ID"]) for row in rows]
    assert keys == sorted(keys)
    assert [row["RNUM"] for row in rows] == [str(n) for n in range(1, len(rows) + 1)]
    page = get(client, world, "EDU", "start=3&limit=2").get_json()
    assert [row["RNUM"] for row in page] == ["3", "4"]
    assert page == rows[2:4]


def test_order_is_by_code_point_whatever_the_database_collation(client: FlaskClient, session: Session) -> None:
    """Mixed case and punctuation sort as SQLite's BINARY does, also where PostgreSQL's default is en-US."""
    root = factories.business_unit(session, code="Mixed-ROOT")
    units = [factories.work_unit(session, root, code=code) for code in ("b-unit", "B-UNIT2", "a_unit", "Zed")]
    courses = [factories.course(session, code=code) for code in ("crs-b", "CRS-A", "crs_c", "Crs-D")]
    for number, unit in enumerate(units):
        for course, lr_id in zip(courses, ("lr-x", "LR-Y", "lr_z", "Lr-W")):
            factories.enrolment(session, factories.learner(session, unit, lr_id=f"{lr_id}{number}"), course)
    token = factories.token(session, root)
    session.commit()
    response = ApiClient(client, token).enrolments("limit=500")
    keys = [(row["ORG_CODE"], row["CRS_CODE"], row["LR_ID"]) for row in response.get_json()]
    assert len(keys) == 16
    # An en-US collation would put 'a_unit' first and 'crs-b' before 'CRS-A'.
    assert keys == sorted(keys)
    assert keys[0] == ("B-UNIT2", "CRS-A", "LR-Y1")
    assert [key[1] for key in keys[:4]] == ["CRS-A", "Crs-D", "crs-b", "crs_c"]


def test_a_business_unit_and_a_work_unit_with_the_same_id_see_their_own_units(client: FlaskClient, session: Session) -> None:
    """Ids are per table: the visible units are a function of the unit's kind and id together."""
    shared_id = 987_654
    owner = BusinessUnit(id=shared_id, code="SAME-ID-BU", name="Same id (business unit)")
    elsewhere = factories.business_unit(session)
    session.add(owner)
    session.flush()
    mine = factories.work_unit(session, owner, code="OWNED")
    same_id = WorkUnit(id=shared_id, code="SAME-ID-WU", name="Same id (work unit)", business_unit_id=elsewhere.id)
    session.add(same_id)
    session.flush()
    course = factories.course(session)
    for unit in (mine, same_id):
        factories.enrolment(session, factories.learner(session, unit), course)
    tokens = {unit.code: factories.token(session, unit) for unit in (owner, same_id)}
    session.commit()
    seen = {
        code: org_codes(ApiClient(client, token).enrolments().get_json())
        for code, token in tokens.items()
    }
    assert seen == {"SAME-ID-BU": {"OWNED"}, "SAME-ID-WU": {"SAME-ID-WU"}}


def test_orgcodes_selects_visible_work_units(client: FlaskClient, world: worlds.World) -> None:
    rows = get(client, world, "EDU", "ORGCODES=VOC-1&ORGCODES=UNIV").get_json()
    assert org_codes(rows) == {"VOC-1", "UNIV"}


@pytest.mark.parametrize("query", ["ORGCODES=CORP-1", "ORGCODES=NOPE", "ORGCODES=CORP-1&ORGCODES=NOPE"])
def test_orgcodes_the_token_cannot_see_never_widen_the_result(client: FlaskClient, world: worlds.World, query: str) -> None:
    response = get(client, world, "UNIV-STUD", query)
    assert response.status_code == 200
    assert response.get_json() == []
    assert response.headers["X-Total-Count"] == "0"


def test_invisible_orgcodes_are_ignored_beside_visible_ones(client: FlaskClient, world: worlds.World) -> None:
    rows = get(client, world, "UNIV", "ORGCODES=CORP-1&ORGCODES=UNIV-STUD").get_json()
    assert org_codes(rows) == {"UNIV-STUD"}


@pytest.mark.parametrize(
    ("query", "dates"),
    [
        ("SDATE=2017-01-19", {"2017-01-19", "2017-01-20"}),
        ("EDATE=2017-01-02", {"2017-01-01", "2017-01-02"}),
        ("SDATE=2017-01-05&EDATE=2017-01-06", {"2017-01-05", "2017-01-06"}),
        ("SDATE=2017-01-05&EDATE=2017-01-05", {"2017-01-05"}),
        ("SDATE=2030-01-01", set()),
    ],
)
def test_sdate_and_edate_are_inclusive_bounds_on_the_completion_date(
    client: FlaskClient, world: worlds.World, query: str, dates: set[str]
) -> None:
    response = get(client, world, "EDU", query + "&limit=500")
    rows = response.get_json()
    assert {row["SCH_AEDATE"] for row in rows} == dates
    assert response.headers["X-Total-Count"] == str(len(rows))


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=+5", "limit"),
        ("limit=", "limit"),
        ("start=0", "start"),
        ("start=x", "start"),
        ("start=1&start=2", "start"),
        ("SDATE=2017-1-1", "SDATE"),
        ("SDATE=20170101", "SDATE"),
        ("SDATE=2017-02-30", "SDATE"),
        ("EDATE=yesterday", "EDATE"),
        ("SDATE=2017-02-01&EDATE=2017-01-01", "EDATE"),
        ("ORGCODES=", "ORGCODES"),
    ],
)
def test_bad_parameters_are_e3010_naming_the_parameter(
    client: FlaskClient, world: worlds.World, query: str, parameter: str
) -> None:
    response = get(client, world, "EDU", query)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "E3010"
    assert error["message"].startswith(f"Invalid parameter found: {parameter}, expected ")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("EDATE=31/12/2017", "Date YYYY-MM-DD"),
        ("EDATE=2017-02-30&limit=5", "Date YYYY-MM-DD"),
        ("SDATE=2017-01-01&EDATE=31/12/2017", "Date YYYY-MM-DD on or after SDATE"),
        ("SDATE=2017-02-01&EDATE=2017-01-01", "Date YYYY-MM-DD on or after SDATE"),
    ],
)
def test_an_edate_message_names_sdate_only_when_sdate_was_sent(
    client: FlaskClient, world: worlds.World, query: str, expected: str
) -> None:
    # spec §13's format, "Invalid parameter found: NAME, expected …", about what the request sent.
    response = get(client, world, "EDU", query)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "message": f"Invalid parameter found: EDATE, expected {expected}",
        "code": "E3010",
    }


def test_the_spec_example_message_for_limit(client: FlaskClient, world: worlds.World) -> None:
    error = get(client, world, "EDU", "limit=abc").get_json()["error"]
    assert error["message"].startswith("Invalid parameter found: limit, expected Positive Integer")


def test_parameter_order_does_not_matter_and_unknown_parameters_are_ignored(
    client: FlaskClient, world: worlds.World
) -> None:
    # spec §5.1: order is irrelevant; new parameters may appear and must not break anything.
    one = get(client, world, "EDU", "SDATE=2017-01-02&limit=3&ORGCODES=UNIV&ORGCODES=VOC-1").get_json()
    two = get(client, world, "EDU", "ORGCODES=VOC-1&future=1&limit=3&ORGCODES=UNIV&SDATE=2017-01-02").get_json()
    assert one == two and len(one) == 3


@pytest.mark.parametrize(
    ("query", "name", "expected"),
    [
        ("orgcodes=UNIV", "orgcodes", "ORGCODES, repeated for each value (ORGCODES=A&ORGCODES=B)"),
        ("ORGCODES%5B%5D=UNIV", "ORGCODES[]", "ORGCODES, repeated for each value (ORGCODES=A&ORGCODES=B)"),
        ("ORGCODES%5B0%5D=UNIV", "ORGCODES[0]", "ORGCODES, repeated for each value (ORGCODES=A&ORGCODES=B)"),
        ("%EF%BB%BFORGCODES=UNIV", "\ufeffORGCODES", "ORGCODES, repeated for each value (ORGCODES=A&ORGCODES=B)"),
        ("Sdate=2017-01-02", "Sdate", "SDATE"),
        ("SDATE%20=2017-01-02", "SDATE ", "SDATE"),
        ("LIMIT=3", "LIMIT", "limit"),
        ("limit%E2%80%8B=3", "limit\u200b", "limit"),
    ],
)
def test_a_known_parameter_in_disguise_is_refused_not_ignored(
    client: FlaskClient, world: worlds.World, query: str, name: str, expected: str
) -> None:
    # Ignored, `orgcodes=UNIV` or `ORGCODES[]=UNIV` (as qs and axios write lists) would silently
    # return every unit the token sees.
    response = get(client, world, "EDU", query)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "message": f"Invalid parameter found: {name}, expected {expected} (parameter names are exact: case-sensitive, no brackets)",
        "code": "E3010",
    }


@pytest.mark.parametrize("query", ["future=1", "future%5B%5D=1", "ORGCODE=UNIV", "ORGCODESX=UNIV", "OR%5B%5DGCODES=UNIV"])
def test_other_unknown_parameters_are_still_ignored(client: FlaskClient, world: worlds.World, query: str) -> None:
    # spec §5.1c: parameters added later must not break an older server's clients.
    assert get(client, world, "EDU", query).status_code == 200


def test_default_page_size_is_200(client: FlaskClient, session: Session) -> None:
    bu = factories.business_unit(session)
    unit = factories.work_unit(session, bu)
    course = factories.course(session)
    person = factories.learner(session, unit)
    for _ in range(205):
        factories.enrolment(session, person, course)
    issued = factories.token(session, bu)
    session.commit()
    response = ApiClient(client, issued).enrolments()
    assert len(response.get_json()) == 200
    assert response.headers["X-Total-Count"] == "205"


def test_repeated_unknown_parameters_are_ignored_too(client: FlaskClient, world: worlds.World) -> None:
    response = get(client, world, "CORP-1", "tag=1&tag=2&_=3&_=4")
    assert response.status_code == 200
    assert len(response.get_json()) == 4
