"""The Completed Training Summary query (spec §17): filters, order, paging and totals.

Rows are ordered by work unit code, course code, learner id and SCH_ID. Because
ORG_CODE leads the order, the result is the visible work units in code order,
each contributing one range of the `ix_enrolments_report` index. Per-unit row
counts (cached per data version and date range) locate any `start` without
scanning the rows before it, and give X-Total-Count without a COUNT per page.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterator

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.orm import Session

from southrock_api.models import COMPLETED, Course, Enrolment, Learner
from southrock_api.visibility import WorkUnitInfo


@dataclass(frozen=True)
class Filters:
    """The date range of a request; ORGCODES is applied to the visible units instead."""

    sdate: dt.date | None = None
    edate: dt.date | None = None


@dataclass(frozen=True)
class SortKey:
    """A row's position in the report order: where a following page resumes."""

    org_code: str
    crs_code: str
    lr_id: str
    sch_id: str


@dataclass(frozen=True)
class EnrolmentRow:
    """One row of the report, before it is rendered as JSON."""

    rnum: int
    org_code: str
    org_name: str
    crs_code: str
    crs_desc: str
    lr_id: str
    lr_sname: str
    lr_fname: str
    lr_email: str
    completed_on: dt.date
    score: Decimal
    sch_id: str


@dataclass(frozen=True)
class Page:
    """One page of the report and the size of the whole result."""

    rows: list[EnrolmentRow]
    total: int


def _completed(query: Select, filters: Filters) -> Select:  # type: ignore[type-arg]
    query = query.where(Enrolment.status == COMPLETED)
    if filters.sdate is not None:
        query = query.where(Enrolment.completed_on >= filters.sdate)
    if filters.edate is not None:
        query = query.where(Enrolment.completed_on <= filters.edate)
    return query


class _CountCache:
    """Per-work-unit row counts keyed by (data version, filters); a small LRU per process."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, Filters], dict[int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, data_version: str, filters: Filters) -> dict[int, int]:
        key = (data_version, filters)
        with self._lock:
            counts = self._entries.get(key)
            if counts is not None:
                self._entries.move_to_end(key)
                return counts
        query = _completed(
            select(Enrolment.work_unit_id, func.count()).group_by(Enrolment.work_unit_id), filters
        )
        counts = {unit_id: count for unit_id, count in session.execute(query)}
        with self._lock:
            self._entries[key] = counts
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return counts


unit_counts = _CountCache()


def _unit_rows(
    session: Session,
    unit: WorkUnitInfo,
    filters: Filters,
    offset: int,
    limit: int,
    after: SortKey | None,
) -> Iterator[tuple]:  # type: ignore[type-arg]
    query = _completed(
        select(
            Enrolment.crs_code,
            Course.description,
            Enrolment.lr_id,
            Learner.surname,
            Learner.first_name,
            Learner.email,
            Enrolment.completed_on,
            Enrolment.score_hundredths,
            Enrolment.sch_id,
        )
        .select_from(Enrolment)
        .join(Learner, Learner.id == Enrolment.learner_id)
        .join(Course, Course.id == Enrolment.course_id)
        .where(Enrolment.work_unit_id == unit.id),
        filters,
    )
    if after is not None and after.org_code == unit.code:
        query = query.where(
            tuple_(Enrolment.crs_code, Enrolment.lr_id, Enrolment.sch_id)
            > tuple_(after.crs_code, after.lr_id, after.sch_id)
        )
    query = query.order_by(Enrolment.crs_code, Enrolment.lr_id, Enrolment.sch_id).limit(limit)
    if offset:
        query = query.offset(offset)
    return iter(session.execute(query))


def fetch_page(
    session: Session,
    data_version: str,
    units: list[WorkUnitInfo],
    filters: Filters,
    start: int,
    limit: int,
    after: SortKey | None = None,
) -> Page:
    """Return rows start..start+limit-1 (1-based) of the report over these units.

    `after`, when given, must be the sort key of row start-1: the page then
    resumes from it by index seek instead of skipping start-1 rows.
    """
    counts = unit_counts.get(session, data_version, filters)
    sizes = [counts.get(unit.id, 0) for unit in units]
    total = sum(sizes)
    rows: list[EnrolmentRow] = []
    skip = start - 1
    index = 0
    # Skip whole work units using their counts; only the first unit of the page is offset into.
    while index < len(units) and skip >= sizes[index]:
        skip -= sizes[index]
        index += 1
    if after is not None and index < len(units) and units[index].code == after.org_code:
        skip = 0
    rnum = start
    while index < len(units) and len(rows) < limit:
        unit = units[index]
        if sizes[index]:
            for row in _unit_rows(session, unit, filters, skip, limit - len(rows), after):
                rows.append(_row(rnum, unit, row))
                rnum += 1
        skip = 0
        after = None
        index += 1
    return Page(rows, total)


def _row(rnum: int, unit: WorkUnitInfo, row: tuple) -> EnrolmentRow:  # type: ignore[type-arg]
    crs_code, crs_desc, lr_id, surname, first_name, email, completed_on, score, sch_id = row
    return EnrolmentRow(
        rnum=rnum,
        org_code=unit.code,
        org_name=unit.name,
        crs_code=crs_code,
        crs_desc=crs_desc,
        lr_id=lr_id,
        lr_sname=surname,
        lr_fname=first_name,
        lr_email=email,
        completed_on=completed_on,
        score=Decimal(score).scaleb(-2),
        sch_id=sch_id,
    )
