"""GET /api/v1/enrolments/snapshot: every row the listing pages through, as JSON Lines, closed, gzip when asked."""

from __future__ import annotations

import gzip
import json

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from southrock_api.api import feed_views
from tests import worlds
from tests.apiclient import ApiClient
from tests.feeds import listing, snapshot_lines

QUERIES = [
    "",
    "ORGCODES=UNIV-STUD&ORGCODES=CORP-SUB&ORGCODES=NOT-A-UNIT",
    "SDATE=2017-01-05&EDATE=2017-01-15",
    "ORGCODES=CORP-SUB&ORGCODES=UNIV&SDATE=2017-01-10",
]


@pytest.fixture()
def world(session: Session) -> worlds.World:
    return worlds.build(session)


def api_of(client: FlaskClient, world: worlds.World, token: str) -> ApiClient:
    return ApiClient(client, world.tokens[token])


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("token", ["EDU", "CORP", "UNIV", "UNIV-STUD", "CORP-1"])
def test_the_snapshot_is_every_row_of_the_listing_in_its_order(
    client: FlaskClient, world: worlds.World, token: str, query: str
) -> None:
    api = api_of(client, world, token)
    rows, closing = snapshot_lines(api.snapshot(query))
    expected = listing(api, query)
    assert rows == expected
    # The same properties in the same order, RNUM counting from 1 as the listing numbers them.
    assert [list(row) for row in rows] == [list(row) for row in expected]
    assert closing == {"END": True, "ROWS": len(expected)}


@pytest.mark.parametrize("query", QUERIES[:2])
def test_rows_read_in_many_blocks_are_the_same_rows(
    client: FlaskClient, world: worlds.World, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    """Blocks end inside a unit (resumed by key) and at the units' limit per statement."""
    api = api_of(client, world, "EDU")
    whole, _closing = snapshot_lines(api.snapshot(query))
    for rows, units in ((3, 500), (5000, 2), (1, 1), (2, 1)):
        monkeypatch.setattr(feed_views, "SNAPSHOT_BLOCK_ROWS", rows)
        monkeypatch.setattr(feed_views, "SNAPSHOT_BLOCK_UNITS", units)
        assert snapshot_lines(api.snapshot(query)) == (whole, {"END": True, "ROWS": len(whole)})


def test_the_stream_is_json_lines_closed_by_its_record(client: FlaskClient, world: worlds.World) -> None:
    response = api_of(client, world, "UNIV-STUD").snapshot()
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["X-Changes-Token"]
    assert response.headers["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in response.headers
    lines = response.get_data(as_text=True).split("\n")
    assert lines[-1] == "" and lines[-2] == '{"END":true,"ROWS":4}'
    assert all(json.loads(line)["ORG_CODE"] == "UNIV-STUD" for line in lines[:-2])


def test_an_empty_result_is_only_the_closing_record(client: FlaskClient, world: worlds.World) -> None:
    response = api_of(client, world, "EDU").snapshot("ORGCODES=CORP-1")  # not EDU's
    assert response.get_data(as_text=True) == '{"END":true,"ROWS":0}\n'


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "br;q=1, gzip;q=0.5", "*"])
def test_gzip_when_accepted_decodes_to_the_same_lines(client: FlaskClient, world: worlds.World, accept: str) -> None:
    api = api_of(client, world, "EDU")
    plain = api.snapshot()
    assert plain.data  # read to its end before the next request, as a server would
    packed = api.snapshot(headers={"Accept-Encoding": accept})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed.data) == plain.data
    # Two representations: a cache must never answer one with the other.
    assert packed.headers["ETag"] != plain.headers["ETag"]
    assert packed.headers["X-Changes-Token"] == plain.headers["X-Changes-Token"]


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "deflate"])
def test_no_gzip_unless_accepted(client: FlaskClient, world: worlds.World, accept: str) -> None:
    response = api_of(client, world, "EDU").snapshot(headers={"Accept-Encoding": accept})
    assert "Content-Encoding" not in response.headers
    assert snapshot_lines(response)[1]["END"] is True


def test_paging_parameters_are_not_the_snapshots_and_are_ignored(client: FlaskClient, world: worlds.World) -> None:
    api = api_of(client, world, "EDU")
    assert api.snapshot("start=3&limit=1&after=xyz").data == api.snapshot().data


@pytest.mark.parametrize(
    "query",
    ["SDATE=2017-1-1", "EDATE=2016-01-01&SDATE=2017-01-01", "ORGCODES=", "SDATE=2017-01-01&SDATE=2017-01-02", "orgcodes=A"],
)
def test_filters_are_refused_as_the_listing_refuses_them(client: FlaskClient, world: worlds.World, query: str) -> None:
    api = api_of(client, world, "EDU")
    response = api.snapshot(query)
    assert response.status_code == 400
    assert response.get_json() == api.enrolments(query).get_json()
    assert response.get_json()["error"]["code"] == "E3010"


def test_a_snapshot_counts_once_and_an_unchanged_one_costs_nothing(client: FlaskClient, world: worlds.World) -> None:
    api = api_of(client, world, "EDU")
    # Each read to its end before the next request: a stream's request ends with its body.
    first = api.snapshot("SDATE=2017-01-01")
    assert snapshot_lines(first)[1]["END"] is True
    second = api.snapshot("SDATE=2017-01-01")
    assert second.data == first.data
    assert int(first.headers["X-Rate-Limit-Remaining"]) - int(second.headers["X-Rate-Limit-Remaining"]) == 1
    again = api.snapshot("SDATE=2017-01-01", headers={"If-None-Match": second.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["X-Rate-Limit-Remaining"] == second.headers["X-Rate-Limit-Remaining"]
    other = api.snapshot("SDATE=2017-01-02", headers={"If-None-Match": second.headers["ETag"]})
    assert other.status_code == 200
    assert snapshot_lines(other)[1]["END"] is True
