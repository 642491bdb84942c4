"""The optimised report paths return exactly what the report's simple definition returns.

The simple definition: join every completed enrolment to its learner, course and work
unit, keep the visible units and the date range, sort by ORG_CODE, CRS_CODE, LR_ID,
SCH_ID, take rows start..start+limit-1, and dump them with EnrolmentSchema.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any, Iterator

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, event, select
from sqlalchemy.orm import Session

from southrock_api.data.db import bump_data_version, get_database, read_versions
from southrock_api.report import summary
from southrock_api.report.summary import Filters, SortKey, fetch_page
from southrock_api.data.models import COMPLETED, BusinessUnit, Course, Enrolment, Learner, WorkUnit
from southrock_api.api.rendering import EnrolmentSchema, RowRenderer, enrolment_renderer, enrolment_row_format
from southrock_api.report.visibility import WorkUnitInfo, hierarchy
from tests import factories, hierarchies

FIRST_DAY = dt.date(2020, 1, 1)


def by_definition(session: Session, units: list[WorkUnitInfo], filters: Filters) -> list[dict[str, Any]]:
    """Every row of the report, computed the plain way and dumped by marshmallow."""
    query = (
        select(WorkUnit, Course, Learner, Enrolment)
        .join(Learner, Learner.id == Enrolment.learner_id)
        .join(Course, Course.id == Enrolment.course_id)
        .join(WorkUnit, WorkUnit.id == Learner.work_unit_id)
        .where(Enrolment.status == COMPLETED, WorkUnit.id.in_([unit.id for unit in units]))
        .order_by(WorkUnit.code, Course.code, Learner.lr_id, Enrolment.sch_id)
    )
    if filters.sdate:
        query = query.where(Enrolment.completed_on >= filters.sdate)
    if filters.edate:
        query = query.where(Enrolment.completed_on <= filters.edate)
    rows: list[dict[str, Any]] = []
    for rnum, (unit, course, learner, enrolment) in enumerate(session.execute(query), start=1):
        assert enrolment.score_hundredths is not None  # completed
        rows.append(
            {
                "org_code": unit.code, "org_name": unit.name, "crs_code": course.code, "crs_desc": course.description,
                "lr_id": learner.lr_id, "lr_sname": learner.surname, "lr_fname": learner.first_name,
                "lr_email": learner.email, "completed_on": enrolment.completed_on,
                "score": Decimal(enrolment.score_hundredths) / 100, "rnum": rnum, "sch_id": enrolment.sch_id,
            }
        )
    dumped = EnrolmentSchema(many=True).dump(rows)
    for row, source in zip(dumped, rows):
        row["_key"] = SortKey(source["org_code"], source["crs_code"], source["lr_id"], source["sch_id"])
    return dumped


def without_keys(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{name: value for name, value in row.items() if name != "_key"} for row in rows]


def as_dumped(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """A page's rows as the dicts they encode, checking the JSON encoding on the way."""
    dumped = [dict(zip(enrolment_renderer.keys, row)) for row in rows]
    assert json.loads(enrolment_renderer.json_array(rows)) == dumped
    return dumped


@pytest.fixture()
def statements(connection: Connection) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every SQL statement (with its named parameters) run on the test's connection."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        named = context.compiled_parameters[0] if context is not None and context.compiled_parameters else {}
        seen.append((statement, dict(named)))

    event.listen(connection, "before_cursor_execute", record)
    yield seen
    event.remove(connection, "before_cursor_execute", record)


dates = st.none() | st.integers(0, 30).map(lambda days: FIRST_DAY + dt.timedelta(days=days))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=hierarchies.plans(), limit=st.integers(1, 9), sdate=dates, edate=dates, data=st.data())
def test_pages_by_start_and_by_cursor_equal_the_definition(
    app: Flask, connection: Connection, plan: hierarchies.Plan, limit: int, sdate: dt.date | None,
    edate: dt.date | None, data: st.DataObject,
) -> None:
    savepoint = connection.begin_nested()
    try:
        with get_database(app).session_factory() as session:
            built = hierarchies.build(session, plan, uuid.uuid4().hex[:4])
            version = read_versions(session).data
            kind = built.token.unit_type
            model = BusinessUnit if kind == "business_unit" else WorkUnit
            unit_id = session.scalar(select(model.id).where(model.code == built.token.unit_code))
            assert unit_id is not None
            visible = hierarchy(session, version).visible_work_units(kind, unit_id)
            orgcodes = data.draw(st.lists(st.sampled_from(sorted(built.all_org_codes)), max_size=3))
            units = hierarchy(session, version).visible(kind, unit_id, orgcodes or None)
            # By definition: the visible units, in code order, that ORGCODES names.
            assert units == [info for info in visible if not orgcodes or info.code in orgcodes]
            filters = Filters(sdate, edate)
            expected = by_definition(session, units, filters)
            start = data.draw(st.integers(1, len(expected) + 2))
            page = fetch_page(session, version, units, filters, start, limit, row_format=enrolment_row_format)
            assert page.total == len(expected)
            assert as_dumped(page.rows) == without_keys(expected[start - 1 : start - 1 + limit])
            assert page.last == (expected[start - 2 + len(page.rows)]["_key"] if page.rows else None)
            if start > 1 and start - 1 <= len(expected):
                # Resuming from row start-1's key gives the same page as skipping start-1 rows.
                resumed = fetch_page(session, version, units, filters, start, limit, expected[start - 2]["_key"], row_format=enrolment_row_format)
                assert resumed == page
            # With the units' running totals cached under their key: twice, the second from the cache.
            units_key = (kind, unit_id, tuple(sorted(set(orgcodes))))
            for _ in range(2):
                assert fetch_page(session, version, units, filters, start, limit, None, units_key, row_format=enrolment_row_format) == page
    finally:
        savepoint.rollback()


@pytest.fixture()
def two_units(session: Session) -> tuple[str, list[WorkUnitInfo]]:
    """Two work units with ten completed enrolments each; returns (data version, visible units)."""
    bu = factories.business_unit(session)
    course = factories.course(session)
    for code in ("RA", "RB"):
        unit = factories.work_unit(session, bu, code=code)
        for _ in range(10):
            factories.enrolment(session, factories.learner(session, unit), course)
    session.commit()
    version = read_versions(session).data
    return version, hierarchy(session, version).visible_work_units("business_unit", bu.id)


def count_queries(statements: list[tuple[str, dict[str, Any]]]) -> int:
    return sum("count(*)" in statement.lower() for statement, _ in statements)


def test_the_total_is_counted_once_per_data_version_and_filters(
    session: Session, two_units: tuple[str, list[WorkUnitInfo]], statements: list[tuple[str, dict[str, Any]]]
) -> None:
    version, units = two_units
    for start in (1, 5, 12, 19):
        assert fetch_page(session, version, units, Filters(), start, 4, row_format=enrolment_row_format).total == 20
    assert count_queries(statements) == 1
    fetch_page(session, version, units, Filters(sdate=FIRST_DAY), 1, 4, row_format=enrolment_row_format)
    assert count_queries(statements) == 2
    new_version = bump_data_version(session)
    session.commit()
    assert fetch_page(session, new_version, units, Filters(), 1, 4, row_format=enrolment_row_format).total == 20
    assert count_queries(statements) == 3


@pytest.fixture()
def page_queries(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The parameters of every page statement fetch_page runs (it runs them on the DB-API cursor)."""
    seen: list[dict[str, Any]] = []
    real = summary._page_query

    def spy(slices: list[Any], filters: Filters) -> Any:
        shape, parameters = real(slices, filters)
        seen.append({name: value for name, value in parameters.items() if value is not None})
        return shape, parameters

    monkeypatch.setattr(summary, "_page_query", spy)
    return seen


def test_a_followed_cursor_seeks_instead_of_skipping(
    session: Session, two_units: tuple[str, list[WorkUnitInfo]], page_queries: list[dict[str, Any]]
) -> None:
    version, units = two_units
    first = fetch_page(session, version, units, Filters(), 1, 4, row_format=enrolment_row_format)
    assert first.last is not None
    followed = fetch_page(session, version, units, Filters(), 5, 4, first.last, row_format=enrolment_row_format)
    assert followed == fetch_page(session, version, units, Filters(), 5, 4, row_format=enrolment_row_format)
    _, by_cursor, by_start = page_queries
    assert not by_cursor["offset"] and "after_sch_id" in by_cursor
    assert by_start["offset"] == 4
    # Skipping by `start` offsets into the first unit only: the whole unit before it is counted.
    deep = fetch_page(session, version, units, Filters(), 15, 4, row_format=enrolment_row_format)
    assert page_queries[-1]["offset"] == 4 and page_queries[-1]["unit_0"] == units[1].id
    assert [row["RNUM"] for row in as_dumped(deep.rows)] == ["15", "16", "17", "18"]


@given(
    completed_on=st.dates(dt.date(1900, 1, 1), dt.date(2999, 12, 31)),
    hundredths=st.integers(0, 10000),
    text=st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"])),
    rnum=st.integers(1, 2**31),
)
def test_the_row_renderer_dumps_what_the_schema_dumps(completed_on: dt.date, hundredths: int, text: str, rnum: int) -> None:
    schema = EnrolmentSchema()
    renderer = RowRenderer(schema)
    row = {
        "org_code": text, "org_name": text, "crs_code": text, "crs_desc": text, "lr_id": text, "lr_sname": text,
        "lr_fname": text, "lr_email": text, "completed_on": completed_on, "score": Decimal(hundredths).scaleb(-2),
        "rnum": str(rnum), "sch_id": text,
    }
    rendered = {}
    for key, attribute in zip(renderer.keys, renderer.attributes):
        if renderer.is_text(attribute):
            rendered[key] = row[attribute]
        else:
            rendered[key] = renderer.converter(attribute)(row[attribute])
    dumped = schema.dump({**row, "rnum": rnum})
    assert rendered == dumped and list(rendered) == list(dumped)
    encoded = renderer.json_array([tuple(rendered.values()), (None, 1, 2.5, text, "", "%s", '"', "\\", "\n", "é中", "x", "y")])
    assert json.loads(encoded) == [dumped, dict(zip(renderer.keys, [None, 1, 2.5, text, "", "%s", '"', "\\", "\n", "é中", "x", "y"]))]
    # The SQLite path hands the converter ISO text; the text it returns is the same.
    assert renderer.converter("completed_on", dt.date.fromisoformat)(completed_on.isoformat()) == rendered["SCH_AEDATE"]


def test_the_report_caches_keep_only_the_most_recently_used_entries() -> None:
    """Per-unit counts and running totals are bounded per worker, whatever the number of queries."""
    from southrock_api.report.summary import _Recent

    recent = _Recent(2)
    recent.put("a", 1)
    recent.put("b", 2)
    assert recent.get("a") == 1  # now the most recent
    recent.put("c", 3)
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (1, None, 3)
