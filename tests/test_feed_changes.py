"""GET /api/v1/enrolments/changes: after a snapshot, each changed enrolment once, as the token sees it now.

The invariant: a copy built from a snapshot and then its changes equals the listing, for every
token and filter; and a token is never told of a SCH_ID outside its units.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import IssuedToken
from southrock_api.data.feed_tokens import ChangesToken, scope_of
from southrock_api.api.rendering import enrolment_row_format
from southrock_api.data.changes import last_position, pruned_through, seal_key
from southrock_api.data.db import read_versions
from southrock_api.data.models import BusinessUnit, ChangeImport
from southrock_api.report.changes import FeedScope, read_changes
from southrock_api.report.summary import Filters
from southrock_api.report.visibility import hierarchy
from tests.apiclient import ApiClient
from tests.feeds import (
    BASE,
    ENROLMENTS_HEADER,
    LEARNERS_HEADER,
    Importer,
    all_changes,
    apply,
    copy_of,
    listing,
    next_query,
    since,
    snapshot_lines,
    tokens,
    without_rnum,
)

SINCE_ERROR = "Invalid parameter found: since, expected a changes token from X-Changes-Token issued to this token's unit"


@pytest.fixture()
def importer(session: Session, tmp_path: Path) -> Importer:
    """The base organisation imported once (EDU ⊃ UNI: UNIV-STUD ⊃ UNIV-STUD-1; CORP: CORP-1)."""
    importer = Importer(session, tmp_path)
    importer.run(BASE)
    return importer


@pytest.fixture()
def issued(session: Session, importer: Importer) -> dict[str, IssuedToken]:
    """Tokens of two business units and a work unit."""
    return tokens(session, "EDU", "CORP", "UNIV-STUD-1")


@pytest.fixture()
def apis(client: FlaskClient, issued: dict[str, IssuedToken]) -> dict[str, ApiClient]:
    return {code: ApiClient(client, token) for code, token in issued.items()}


def snapshot(api: ApiClient, query: str = "") -> tuple[dict[str, dict[str, str]], str]:
    """A copy from a snapshot, and its changes token."""
    response = api.snapshot(query)
    rows, _closing = snapshot_lines(response)
    return copy_of(rows), response.headers["X-Changes-Token"]


def kinds(changes: list[dict[str, str]]) -> dict[str, str]:
    return {change["SCH_ID"]: change["CHANGE"] for change in changes}


def test_after_an_import_the_changes_are_exactly_the_changed_rows(apis: dict[str, ApiClient], importer: Importer) -> None:
    edu, corp = apis["EDU"], apis["CORP"]
    copy, token = snapshot(edu)
    _corp_copy, corp_token = snapshot(corp)
    importer.run(
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,C1,COMPLETED,2017-01-19,90,100\n"  # score changed
            + "S2,betty.student,C2,COMPLETED,2017-01-03,99.5,\n"  # as it was
            + "S6,john.student,C2,COMPLETED,2017-04-01,60,100\n"  # new
        }
    )
    changes, _next, _pages = all_changes(edu, token)
    now = listing(edu)
    assert kinds(changes) == {"S1": "UPSERT", "S6": "UPSERT"}
    by_id = {row["SCH_ID"]: row for row in now}
    for change in changes:
        # CHANGE first, then the listing's properties in the listing's order, without RNUM.
        assert list(change) == ["CHANGE", *without_rnum(by_id[change["SCH_ID"]])]
        assert {**without_rnum(by_id[change["SCH_ID"]]), "CHANGE": "UPSERT"} == change
    assert apply(copy, changes) == copy_of(now)
    # CORP's units saw none of it: not a word.
    corp_changes, _next, _pages = all_changes(corp, corp_token)
    assert corp_changes == []


LEAVES_AND_ENTERS = {
    "learner moved out": {"learners.csv": LEARNERS_HEADER + "john.student,John,Student,john@test.example,CORP-1\n"},
    "no longer completed": {"enrolments.csv": ENROLMENTS_HEADER + "S2,betty.student,C2,WITHDRAWN,,,\n"},
    "date moved": {"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,C1,COMPLETED,2017-05-05,100,100\n"},
    "now completed": {"enrolments.csv": ENROLMENTS_HEADER + "S3,betty.student,C1,COMPLETED,2017-01-20,50,100\n"},
    "work unit moved": {
        "work_units.csv": "ORG_CODE,ORG_NAME,ORGGRP_CODE,PARENT_ORG_CODE\nUNIV-STUD-1,Students 中 1,CORP,CORP-1\n"
    },
}
# (change, token, its snapshot's filters) → what the token is told. Tokens of units that never saw
# a row are told nothing of it.
EXPECTED = {
    ("learner moved out", "EDU", ""): {"S1": "DELETE", "S5": "DELETE"},
    ("learner moved out", "CORP", ""): {"S1": "UPSERT", "S5": "UPSERT"},
    ("learner moved out", "UNIV-STUD-1", ""): {},
    ("learner moved out", "EDU", "ORGCODES=UNIV-STUD-1"): {},
    ("no longer completed", "EDU", ""): {"S2": "DELETE"},
    ("no longer completed", "UNIV-STUD-1", ""): {"S2": "DELETE"},
    ("no longer completed", "CORP", ""): {},
    ("date moved", "EDU", "SDATE=2017-01-01&EDATE=2017-01-31"): {"S1": "DELETE"},
    ("date moved", "EDU", ""): {"S1": "UPSERT"},
    ("date moved", "EDU", "SDATE=2017-05-01"): {"S1": "UPSERT"},
    ("date moved", "CORP", ""): {},
    ("now completed", "EDU", ""): {"S3": "UPSERT"},
    ("now completed", "UNIV-STUD-1", "EDATE=2017-01-31"): {"S3": "UPSERT"},
    # Outside the filter, in the token's unit: a deletion of a row the copy never held (harmless,
    # and never of a unit the token cannot see).
    ("now completed", "UNIV-STUD-1", "EDATE=2017-01-10"): {"S3": "DELETE"},
    ("now completed", "CORP", ""): {},
    ("work unit moved", "EDU", ""): {"S2": "DELETE"},
    ("work unit moved", "CORP", ""): {"S2": "UPSERT"},
    ("work unit moved", "UNIV-STUD-1", ""): {"S2": "UPSERT"},
}


@pytest.mark.parametrize(("change", "token", "query"), list(EXPECTED))
def test_a_row_leaving_or_entering_the_scope_and_a_copy_that_equals_the_listing(
    apis: dict[str, ApiClient], importer: Importer, change: str, token: str, query: str
) -> None:
    api = apis[token]
    copy, changes_token = snapshot(api, query)
    importer.run(LEAVES_AND_ENTERS[change])
    changes, _next, _pages = all_changes(api, changes_token)
    assert kinds(changes) == EXPECTED[change, token, query]
    assert apply(copy, changes) == copy_of(listing(api, query))


def test_deletions_and_rows_named_in_no_file_are_followed_over_many_imports(
    apis: dict[str, ApiClient], importer: Importer
) -> None:
    """Round after round, the copy stays the listing; a row changed twice in a round comes once."""
    api = apis["EDU"]
    copy, token = snapshot(api, "SDATE=2017-01-10")
    steps = [
        {"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,C1,COMPLETED,2017-01-19,10,100\n"},
        {"courses.csv": "CRS_CODE,CRS_DESC\nC1,Robotic Control II\n"},
        {"learners.csv": LEARNERS_HEADER + "betty.student,Betty,Student,betty@test.example,UNIV-STUD\n"},
        {"enrolments.csv": ENROLMENTS_HEADER + "S5,john.student,C2,COMPLETED,2017-01-01,70,100\n"},
    ]
    for step in steps:
        importer.run(step)
        changes, token, _pages = all_changes(api, token)
        assert len(kinds(changes)) == len(changes)
        copy = apply(copy, changes)
        assert copy == copy_of(listing(api, "SDATE=2017-01-10"))
    # Two imports between polls: each enrolment once, as it is now.
    importer.run({"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,C1,COMPLETED,2017-01-19,20,100\n"})
    importer.run({"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,C1,COMPLETED,2017-01-19,30,100\n"})
    changes, token, _pages = all_changes(api, token)
    assert [(change["SCH_ID"], change["SCH_SCORE"]) for change in changes] == [("S1", "30.00")]
    assert apply(copy, changes) == copy_of(listing(api, "SDATE=2017-01-10"))


FOUR_CHANGES = {
    "enrolments.csv": ENROLMENTS_HEADER
    + "S1,john.student,C1,COMPLETED,2017-01-19,1,100\n"
    + "S2,betty.student,C2,COMPLETED,2017-01-03,2,\n"
    + "S5,john.student,C2,COMPLETED,2017-03-01,5,100\n"
    + "S6,john.student,C1,COMPLETED,2017-04-01,6,100\n"
}


def test_small_pages_give_each_enrolment_once_and_a_next_link_only_while_more_remain(
    apis: dict[str, ApiClient], importer: Importer
) -> None:
    api = apis["EDU"]
    _copy, token = snapshot(api)
    importer.run(FOUR_CHANGES)
    seen: list[str] = []
    query: str | None = since(token, 1)
    links = []
    while query is not None:
        response = api.changes(query)
        page = response.get_json()
        assert len(page) == 1
        seen.append(page[0]["SCH_ID"])
        query = next_query(response)
        links.append(query is not None)
        if query is not None:
            # The next link carries the response's token and the same limit.
            assert query == since(response.headers["X-Changes-Token"], 1)
        token = response.headers["X-Changes-Token"]
    assert sorted(seen) == ["S1", "S2", "S5", "S6"]
    assert links == [True, True, True, False]
    caught_up = api.changes(since(token, 1))
    assert caught_up.get_json() == [] and "Link" not in caught_up.headers
    assert caught_up.headers["X-Changes-Token"] == token


def test_pages_of_three_then_one(apis: dict[str, ApiClient], importer: Importer) -> None:
    api = apis["EDU"]
    copy, token = snapshot(api)
    importer.run(FOUR_CHANGES)
    first = api.changes(since(token, 3))
    assert len(first.get_json()) == 3 and next_query(first) is not None
    second = api.changes(next_query(first) or "")
    assert len(second.get_json()) == 1 and next_query(second) is None
    changes = first.get_json() + second.get_json()
    assert apply(copy, changes) == copy_of(listing(api))


def test_caught_up_is_an_empty_array_and_a_token_and_polling_it_costs_nothing(
    apis: dict[str, ApiClient], importer: Importer
) -> None:
    api = apis["UNIV-STUD-1"]
    _copy, token = snapshot(api)
    response = api.changes(since(token))
    assert response.status_code == 200
    assert response.get_json() == [] and "Link" not in response.headers
    # Caught up, the token to poll with is the one sent.
    assert response.headers["X-Changes-Token"] == token
    again = api.changes(since(token), headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["X-Rate-Limit-Remaining"] == response.headers["X-Rate-Limit-Remaining"]
    other_limit = api.changes(since(token, 7), headers={"If-None-Match": response.headers["ETag"]})
    assert other_limit.status_code == 200
    importer.run({"enrolments.csv": ENROLMENTS_HEADER + "S2,betty.student,C2,COMPLETED,2017-01-03,50,\n"})
    moved = api.changes(since(token), headers={"If-None-Match": response.headers["ETag"]})
    assert moved.status_code == 200
    assert kinds(moved.get_json()) == {"S2": "UPSERT"}
    assert moved.headers["X-Changes-Token"] != token


def _edited(token: str) -> str:
    body, seal = token.split(".")
    return body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + seal


@pytest.mark.parametrize(
    "make",
    [
        lambda token, other: "",
        lambda token, other: "since=",
        lambda token, other: "since=garbage",
        lambda token, other: "since=" + token[:-3],
        lambda token, other: "since=" + token[: len(token) // 2],
        lambda token, other: "since=" + _edited(token),
        lambda token, other: "since=" + token + "." + token,
        lambda token, other: "since=" + "A" * 70_000,
        lambda token, other: "since=" + other,
    ],
    ids=["missing", "empty", "garbage", "truncated", "half", "edited", "doubled", "huge", "other unit's"],
)
def test_a_since_that_is_not_this_units_token_is_e3010(
    apis: dict[str, ApiClient], make: object, session: Session
) -> None:
    api = apis["EDU"]
    _copy, token = snapshot(api)
    _copy, other = snapshot(apis["CORP"])
    query = make(token, other)  # type: ignore[operator]
    response = api.changes(query)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "E3010"
    if not query.startswith("since=" + "A" * 100):  # a query that long is refused as a whole first
        assert response.get_json()["error"]["message"] == SINCE_ERROR


def test_a_token_sealed_with_another_key_or_for_another_scope_is_e3010(
    apis: dict[str, ApiClient], session: Session, issued: dict[str, IssuedToken]
) -> None:
    position = last_position(session.connection())
    key = seal_key(session.connection())
    forged = ChangesToken.start(scope_of("business_unit", "EDU"), None, None, None, position).encode("not the key")
    elsewhere = ChangesToken.start(scope_of("business_unit", "CORP"), None, None, None, position).encode(key)
    for text in (forged, elsewhere):
        response = apis["EDU"].changes(since(text))
        assert response.status_code == 400
        assert response.get_json()["error"]["message"] == SINCE_ERROR
    # A token named for a work unit of the same code as a business unit is not that unit's.
    work_unit_scoped = ChangesToken.start(scope_of("work_unit", "EDU"), None, None, None, position).encode(key)
    assert apis["EDU"].changes(since(work_unit_scoped)).status_code == 400


@pytest.mark.parametrize(
    ("extra", "name", "expected"),
    [
        ("limit=0", "limit", "Positive Integer no greater than 5000"),
        ("limit=5001", "limit", "Positive Integer no greater than 5000"),
        ("limit=abc", "limit", "Positive Integer no greater than 5000"),
        ("limit=-1", "limit", "Positive Integer no greater than 5000"),
        ("limit=1&limit=2", "limit", "a single value"),
        ("ORGCODES=UNIV-STUD", "ORGCODES", "no value: the filters are those of the snapshot, carried by the changes token"),
        ("SDATE=2017-01-01", "SDATE", "no value: the filters are those of the snapshot, carried by the changes token"),
        ("EDATE=2017-01-01", "EDATE", "no value: the filters are those of the snapshot, carried by the changes token"),
    ],
)
def test_a_bad_limit_or_a_filter_is_e3010(apis: dict[str, ApiClient], extra: str, name: str, expected: str) -> None:
    api = apis["EDU"]
    _copy, token = snapshot(api)
    response = api.changes(since(token) + "&" + extra)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "message": f"Invalid parameter found: {name}, expected {expected}",
        "code": "E3010",
    }


@pytest.mark.parametrize("limit", [1, 5000])
def test_the_limits_bounds_are_accepted(apis: dict[str, ApiClient], limit: int) -> None:
    api = apis["EDU"]
    _copy, token = snapshot(api)
    assert api.changes(since(token, limit)).status_code == 200


def test_a_token_older_than_the_change_log_keeps_is_e3020_410(
    apis: dict[str, ApiClient], importer: Importer, session: Session
) -> None:
    api = apis["EDU"]
    _copy, token = snapshot(api)
    importer.run({"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,C1,COMPLETED,2017-01-19,11,100\n"})
    # Both imports so far were recorded long ago; the next one prunes them.
    session.execute(update(ChangeImport).values(recorded_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)))
    session.commit()
    importer.run({"enrolments.csv": ENROLMENTS_HEADER + "S1,john.student,C1,COMPLETED,2017-01-19,12,100\n"}, retention_days=30)
    assert pruned_through(session.connection()) > 0
    response = api.changes(since(token))
    assert response.status_code == 410
    assert response.get_json() == {"error": {"message": "Changes token expired: take a new snapshot", "code": "E3020"}}
    # A new snapshot's token is served.
    copy, fresh = snapshot(api)
    assert api.changes(since(fresh)).get_json() == []
    assert copy == copy_of(listing(api))


def test_a_page_may_end_on_the_scan_budget_with_fewer_rows_and_more_to_come(
    apis: dict[str, ApiClient], importer: Importer, session: Session
) -> None:
    """Changes the token cannot see still cost the scan: the page ends early, even empty, at a position to resume from."""
    origin = last_position(session.connection())
    importer.run(
        {
            "enrolments.csv": ENROLMENTS_HEADER
            + "S1,john.student,C1,COMPLETED,2017-01-19,1,100\n"
            + "S2,betty.student,C2,COMPLETED,2017-01-03,2,\n"
            + "S4,carl.corp,C1,COMPLETED,2017-02-01,4,100\n"
        }
    )
    connection = session.connection()
    end = last_position(connection)
    corp_id = session.scalar(select(BusinessUnit.id).where(BusinessUnit.code == "CORP"))
    assert corp_id is not None
    data_version = read_versions(session).data
    units = hierarchy(session, data_version).visible("business_unit", corp_id, None)
    corp = FeedScope("B:CORP", None, units, Filters(), data_version)
    first = read_changes(connection, corp, origin, end, origin, 10, enrolment_row_format, budget=2)
    assert first.changes == [] and first.more and origin < first.cursor < end
    rest = read_changes(connection, corp, origin, end, first.cursor, 10, enrolment_row_format, budget=2)
    assert [change.sch_id for change in rest.changes] == ["S4"] and not rest.more and rest.cursor == end



def test_a_token_from_beyond_the_newest_position_is_e3020(
    apis: dict[str, ApiClient], session: Session
) -> None:
    """A database restored from before the token was issued: its copy is ahead of the log."""
    connection = session.connection()
    ahead = ChangesToken.start("B:EDU", None, None, None, last_position(connection) + 5).encode(seal_key(connection))
    response = apis["EDU"].changes(since(ahead))
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "E3020"
