"""spec §12: start/limit paging, the Link header and X-Total-Count."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from southrock_api.data.db import bump_data_version, get_database
from southrock_api.data.models import WorkUnit
from tests import factories, hierarchies
from tests.apiclient import ApiClient

LINK = re.compile(r'<([^>]+)>; rel="(\w+)"')
# More pages than any walk here can take: a next link that never ends fails instead of looping.
MAX_PAGES = 1000


def links(response: TestResponse) -> dict[str, str]:
    return {rel: url for url, rel in LINK.findall(response.headers.get("Link", ""))}


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture()
def api(client: FlaskClient, session: Session) -> ApiClient:
    """Replaces the shared api: a business-unit token over ten completed enrolments, seven in WU and three in WV."""
    bu = factories.business_unit(session)
    unit = factories.work_unit(session, bu, code="WU")
    other = factories.work_unit(session, bu, code="WV")
    course = factories.course(session)
    for _ in range(7):
        factories.enrolment(session, factories.learner(session, unit), course)
    for _ in range(3):
        factories.enrolment(session, factories.learner(session, other), course)
    token = factories.token(session, bu)
    session.commit()
    return ApiClient(client, token)


def test_link_header_has_the_spec_format_and_absolute_urls(api: ApiClient) -> None:
    response = api.enrolments("start=4&limit=3")
    header = response.headers["Link"]
    assert [rel for _, rel in LINK.findall(header)] == ["next", "last", "first", "prev"]
    rels = links(response)
    assert all(url.startswith("http://localhost/api/v1/enrolments?") for url in rels.values())
    assert dict(query_of(rels["next"]))["start"] == "7"
    assert dict(query_of(rels["last"])) == {"start": "10", "limit": "3"}
    assert dict(query_of(rels["first"])) == {"start": "1", "limit": "3"}
    assert dict(query_of(rels["prev"])) == {"start": "1", "limit": "3"}
    assert response.headers["X-Total-Count"] == "10"


def test_first_page_has_no_prev_and_last_page_has_no_next(api: ApiClient) -> None:
    first = links(api.enrolments("limit=4"))
    assert "prev" not in first and "next" in first
    last = links(api.enrolments("start=9&limit=4"))
    assert "next" not in last and "prev" in last
    exact = links(api.enrolments("start=6&limit=5"))
    assert "next" not in exact


def test_prev_from_an_offgrid_start_stops_before_this_page(api: ApiClient) -> None:
    prev = dict(query_of(links(api.enrolments("start=3&limit=5"))["prev"]))
    assert prev == {"start": "1", "limit": "2"}


def test_links_keep_every_other_parameter_including_repeated_orgcodes(api: ApiClient) -> None:
    response = api.enrolments("ORGCODES=WU&ORGCODES=WV&SDATE=2017-01-01&extra=x%20y&limit=2")
    for url in links(response).values():
        pairs = query_of(url)
        assert [v for k, v in pairs if k == "ORGCODES"] == ["WU", "WV"]
        assert ("SDATE", "2017-01-01") in pairs and ("extra", "x y") in pairs


def test_a_start_past_the_end_is_an_empty_page(api: ApiClient) -> None:
    response = api.enrolments("start=11")
    assert response.status_code == 200
    assert response.get_json() == []
    assert response.headers["X-Total-Count"] == "10"
    assert "next" not in links(response)


@pytest.mark.parametrize("start", [11, 12, 999, 2**31 - 1])
def test_prev_from_past_the_end_is_the_last_page(api: ApiClient, start: int) -> None:
    found = links(api.enrolments(f"start={start}&limit=5"))
    assert dict(query_of(found["prev"])) == dict(query_of(found["last"])) == {"start": "6", "limit": "5"}


def test_an_empty_result_still_has_first_and_last(api: ApiClient) -> None:
    response = api.enrolments("ORGCODES=NONE")
    assert response.headers["X-Total-Count"] == "0"
    assert set(links(response)) == {"first", "last"}


def test_a_stale_cursor_is_ignored_after_the_data_changes(api: ApiClient, session: Session) -> None:
    first = api.enrolments("limit=4")
    next_url = path_and_query(links(first)["next"])
    # An import between two pages sorts a new row first, so the cursor no longer describes row 4.
    unit = session.scalar(select(WorkUnit).where(WorkUnit.code == "WU"))
    assert unit is not None
    factories.enrolment(session, factories.learner(session, unit, lr_id="aaa"), factories.course(session, code="AAA"))
    session.commit()
    followed = api.get(next_url)
    direct = api.enrolments("start=5&limit=4")
    assert followed.get_json() == direct.get_json()
    assert followed.headers["X-Total-Count"] == "11"


def walk(api: ApiClient, query: str) -> tuple[list[dict[str, str]], int]:
    """Follow next links from the first page; return every row and the page count."""
    rows: list[dict[str, str]] = []
    url: str | None = f"/api/v1/enrolments?{query}"
    pages = 0
    while url:
        assert pages < MAX_PAGES, "the next links never end"
        response = api.get(url)
        assert response.status_code == 200
        rows.extend(response.get_json())
        pages += 1
        nxt = links(response).get("next")
        url = path_and_query(nxt) if nxt else None
    return rows, pages


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# At least 12 enrolments and pages of at most 7: most examples walk several pages, not one.
@given(plan=hierarchies.plans(min_rows=12), limit=st.integers(1, 7), data=st.data())
def test_following_next_yields_every_visible_row_once_in_order(
    app: Flask, connection: Connection, plan: hierarchies.Plan, limit: int, data: st.DataObject
) -> None:
    app.config["RATE_LIMIT"] = "1000000 per minute"  # this test is about rows, not the bucket
    savepoint = connection.begin_nested()
    try:
        with get_database(app).session_factory() as session:
            built = hierarchies.build(session, plan, uuid.uuid4().hex[:4])
        api = ApiClient(app.test_client(), built.token)
        orgcodes = data.draw(st.lists(st.sampled_from(sorted(built.all_org_codes)), max_size=3))
        query = "".join(f"ORGCODES={code}&" for code in orgcodes) + f"limit={limit}"
        expected = built.expected
        if orgcodes:
            expected = [row for row in expected if row["ORG_CODE"] in orgcodes]
            expected = [{**row, "RNUM": str(n)} for n, row in enumerate(expected, start=1)]
        rows, pages = walk(api, query)
        assert rows == expected
        assert pages == max(1, -(-len(expected) // limit))
        # Pages reached through links equal pages asked for by start directly.
        start = data.draw(st.integers(1, len(expected) + 2))
        direct = api.enrolments(f"{query}&start={start}")
        assert direct.get_json() == expected[start - 1 : start - 1 + limit]
        assert direct.headers["X-Total-Count"] == str(len(expected))
    finally:
        savepoint.rollback()


@pytest.mark.parametrize(
    "after",
    [
        "not-base64!",
        "W10",  # []
        base64.urlsafe_b64encode(b"[" * 20_000).decode(),  # nesting deep enough to recurse
        "A" * 5000,
    ],
)
def test_a_malformed_cursor_is_ignored(api: ApiClient, after: str) -> None:
    response = api.enrolments(f"start=3&limit=2&after={after}")
    assert response.status_code == 200
    assert response.get_json() == api.enrolments("start=3&limit=2").get_json()


def _edited(after: str, position: int, value: str) -> str:
    """The cursor with one of its key parts (0-3: ORG_CODE, CRS_CODE, LR_ID, SCH_ID) replaced."""
    raw = json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
    raw[2 + position] = value
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("position", "value"),
    [
        (1, "~"),  # a key later in the order: rows would be skipped yet numbered from start
        (2, ""),  # an earlier one: rows would repeat
        (1, "\ud800"),  # a lone surrogate no database can bind
        (1, "\x00"),  # NUL, which PostgreSQL refuses in text
        (3, "x" * 65),  # longer than any stored code
    ],
)
def test_an_edited_cursor_is_ignored(api: ApiClient, position: int, value: str) -> None:
    next_url = links(api.enrolments("limit=3"))["next"]
    after = dict(query_of(next_url))["after"]
    response = api.enrolments(f"start=4&limit=3&after={_edited(after, position, value)}")
    assert response.status_code == 200
    assert response.get_json() == api.enrolments("start=4&limit=3").get_json()
    assert [row["RNUM"] for row in response.get_json()] == ["4", "5", "6"]


def test_x_data_version_stays_while_paging_and_changes_with_an_import(api: ApiClient, session: Session) -> None:
    first = api.enrolments("limit=3")
    following = api.get(path_and_query(links(first)["next"]))
    version = first.headers["X-Data-Version"]
    assert following.headers["X-Data-Version"] == version and len(version) == 16
    bump_data_version(session)
    session.commit()
    assert api.enrolments("limit=3").headers["X-Data-Version"] != version


@pytest.mark.parametrize("query", ["after=a&after=b", "AFTER=a"])
def test_after_follows_the_rules_of_every_parameter(api: ApiClient, query: str) -> None:
    response = api.enrolments(f"start=4&{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "E3010"


@pytest.mark.parametrize(("limit", "next_start", "last_start"), [(9, "10", "10"), (5, "6", "6"), (10, None, "1"), (3, "4", "10")])
def test_next_and_last_at_the_edges_of_a_ten_row_result(api: ApiClient, limit: int, next_start: str | None, last_start: str) -> None:
    rels = links(api.enrolments(f"limit={limit}"))
    assert (dict(query_of(rels["next"]))["start"] if "next" in rels else None) == next_start
    assert dict(query_of(rels["last"]))["start"] == last_start


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 9, 10])
def test_following_next_from_first_lands_exactly_on_last(api: ApiClient, limit: int) -> None:
    response = api.enrolments(f"limit={limit}")
    last = dict(query_of(links(response)["last"]))["start"]
    rows = response.get_json()
    pages = 1
    while "next" in links(response):
        assert pages < MAX_PAGES, "the next links never end"
        pages += 1
        response = api.get(path_and_query(links(response)["next"]))
        rows += response.get_json()
    assert dict(parse_qsl(urlsplit(response.request.url).query)).get("start", "1") == last
    assert [row["RNUM"] for row in rows] == [str(n) for n in range(1, 11)]


def test_a_cursor_is_ignored_under_other_filters(client: FlaskClient, session: Session) -> None:
    """A cursor names a row of one result: another date range or ORGCODES is another result."""
    bu = factories.business_unit(session)
    unit, other = factories.work_unit(session, bu, code="AA"), factories.work_unit(session, bu, code="BB")
    course = factories.course(session)
    for unit_, day in [(unit, 1), (unit, 2), (unit, 10), (unit, 11), (unit, 12), (other, 13), (other, 14), (other, 15)]:
        factories.enrolment(session, factories.learner(session, unit_, lr_id=f"lr{day:02d}"), course, completed_on=dt.date(2020, 1, day))
    api = ApiClient(client, factories.token(session, bu))
    session.commit()
    after = dict(query_of(links(api.enrolments("limit=3"))["next"]))["after"]
    # Each filter drops rows before row 3 of the unfiltered result, so its row 4 is another row.
    for filters in ("SDATE=2020-01-05", "EDATE=2020-01-12&SDATE=2020-01-02", "ORGCODES=BB"):
        with_cursor = api.enrolments(f"{filters}&limit=3&start=4&after={after}")
        assert with_cursor.get_json() == api.enrolments(f"{filters}&limit=3&start=4").get_json()


def test_prev_from_the_page_holding_the_last_row_is_the_page_before_it(api: ApiClient) -> None:
    found = links(api.enrolments("start=10&limit=5"))
    assert dict(query_of(found["prev"])) == {"start": "5", "limit": "5"}
