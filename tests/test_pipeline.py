"""The /api/v1 pipeline's steps on their own, and the query parsed once per request."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from southrock_api.api import parameters, pipeline
from southrock_api.api.auth import Principal
from southrock_api.api.errors import BAD_PARAMETER, ApiError
from southrock_api.api.parameters import EnrolmentQuery, PageQuery, Parameters
from tests import factories

PRINCIPAL = Principal(1, "srpk_test", "business_unit", 7, "EDU", "Education", None)


@pytest.fixture()
def authorization(session: Session) -> str:
    """A business-unit token that sees one completed enrolment."""
    bu = factories.business_unit(session)
    unit = factories.work_unit(session, bu)
    factories.enrolment(session, factories.learner(session, unit), factories.course(session))
    issued = factories.token(session, bu)
    session.commit()
    return issued.authorization


@pytest.mark.parametrize(
    "path",
    ["/api/v1", "/api/v1?x=1", "/api/v1/enrolments?limit=2&SDATE=2017-01-01", "/api/v1/enrolments?limit=0", "/api/v1?%zz"],
)
def test_the_query_is_parsed_once_per_request(client: FlaskClient, authorization: str, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    calls: list[bytes] = []
    real = parameters.parse_query

    def counting(query_string: bytes) -> list[tuple[str, str]]:
        calls.append(query_string)
        return real(query_string)

    monkeypatch.setattr(parameters, "parse_query", counting)
    response = client.get(path, headers={"Authorization": authorization})
    assert response.status_code in (200, 400)
    assert len(calls) == 1


def test_read_parameters_loads_only_the_enrolments_endpoint_and_keeps_an_error() -> None:
    whoami = pipeline.read_parameters(b"limit=0", "api.whoami")
    assert whoami == Parameters([("limit", "0")], None)
    loaded = pipeline.read_parameters(b"ORGCODES=A&ORGCODES=B&SDATE=2017-01-01&after=xyz", pipeline.ENROLMENTS_ENDPOINT)
    assert isinstance(loaded, Parameters)
    assert loaded.enrolments == EnrolmentQuery(["A", "B"], dt.date(2017, 1, 1), None, 1, 200, "xyz")
    bad = pipeline.read_parameters(b"limit=0", pipeline.ENROLMENTS_ENDPOINT)
    assert isinstance(bad, ApiError) and bad.error is BAD_PARAMETER
    assert bad.message == "Invalid parameter found: limit, expected Positive Integer no greater than 500"


def test_read_parameters_loads_the_units_paging_and_ignores_the_enrolments_filters() -> None:
    loaded = pipeline.read_parameters(b"limit=3&ORGCODES=A&SDATE=nonsense", pipeline.UNITS_ENDPOINT)
    assert isinstance(loaded, Parameters)
    assert (loaded.enrolments, loaded.units) == (None, PageQuery(1, 3))
    bad = pipeline.read_parameters(b"start=0", pipeline.UNITS_ENDPOINT)
    assert isinstance(bad, ApiError) and bad.error is BAD_PARAMETER


def test_the_entity_tag_ignores_order_and_the_cursor_and_a_bad_query_has_none() -> None:
    def tag(query: bytes, data_version: str = "v1", principal: Principal = PRINCIPAL) -> Any:
        read = pipeline.read_parameters(query, pipeline.ENROLMENTS_ENDPOINT)
        return pipeline.entity_tag(pipeline.ENROLMENTS_ENDPOINT, data_version, principal, read)

    assert tag(b"limit=5&SDATE=2017-01-01") == tag(b"SDATE=2017-01-01&limit=5&after=abc")
    assert tag(b"limit=5") != tag(b"limit=6")
    assert tag(b"limit=5") != tag(b"limit=5", data_version="v2")
    other_unit = Principal(2, "srpk_other", "business_unit", 8, "UNI", "University", None)
    assert tag(b"limit=5") != tag(b"limit=5", principal=other_unit)
    assert tag(b"limit=0") is None


def test_the_last_used_write_is_scheduled_at_most_once_a_minute(app: Flask) -> None:
    from southrock_api.api.auth import TokenCache
    from southrock_api.data.db import EMPTY, get_database

    now = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    database, cache = get_database(app), TokenCache()
    assert pipeline.last_used_writer(database, cache, EMPTY, PRINCIPAL, now) is not None
    recent = Principal(1, "srpk_test", "business_unit", 7, "EDU", "Education", now - dt.timedelta(seconds=30))
    assert pipeline.last_used_writer(database, cache, EMPTY, recent, now) is None
