"""The Completed Training Summary query (spec §17): filters, order, paging and totals.

Rows are ordered by work unit code, course code, learner id and SCH_ID. Because
ORG_CODE leads the order, the result is the visible work units in code order,
each contributing one range of the covering `ix_enrolments_report` index.
Per-unit row counts (cached per data version and date range) locate any `start`
without reading the rows before it, give X-Total-Count without a COUNT per page,
and say exactly how many rows each unit on the page contributes; the page is
then one statement: one LIMITed index range per unit, OFFSET only inside the
first, joined to learners and courses for the names. See docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from operator import itemgetter
from typing import Any, Callable, cast

from sqlalchemy import (
    Date,
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from southrock_api.data.db import execute_compiled
from southrock_api.data.models import COMPLETED, Course, Enrolment, Learner
from southrock_api.report.visibility import WorkUnitInfo


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


# The attributes a row of the report supplies, in the order fetch_page assembles them.
SUPPLIED = (
    "org_code", "org_name", "crs_code", "crs_desc", "lr_id", "lr_sname", "lr_fname", "lr_email",
    "completed_on", "score", "rnum", "sch_id",
)


# Hashed by identity (eq=False): fetch_page looks its _writer up on every page.
@dataclass(frozen=True, eq=False)
class RowFormat:
    """How the caller writes a page's rows (the API: as EnrolmentSchema dumps them, api.rendering).

    `attributes` (names from SUPPLIED) is a row's order; `date` writes a completion date and
    `score` a score; every other value is text already and is kept as it is. Make one and
    reuse it: the memoised converters fetch_page derives from it are kept per format object.
    """

    attributes: tuple[str, ...]
    date: Callable[[dt.date], Any]
    score: Callable[[Decimal], Any]

    def __post_init__(self) -> None:
        unknown = [name for name in self.attributes if name not in SUPPLIED]
        if unknown:  # a field added to the caller's schema must be supplied here too
            raise ValueError(f"the report does not supply attribute(s) {unknown}")


@dataclass(frozen=True)
class Page:
    """One page of the report written in a RowFormat, the result's size and the last row's key.

    Each row holds the written values in the order of the format's `attributes`.
    """

    rows: list[tuple[Any, ...]]
    total: int
    last: SortKey | None


@dataclass(frozen=True)
class _Slice:
    """The rows one work unit contributes to a page: `take` rows after `offset` or after `after`."""

    unit: WorkUnitInfo
    offset: int
    take: int
    after: SortKey | None


# Written into the SQL, not bound: only then may a planner use the partial indexes
# (WHERE status = 'COMPLETED') for every execution of a prepared statement.
_IS_COMPLETED = Enrolment.status == literal_column(f"'{COMPLETED}'", String)


def _completed(query: Select, filters: Filters) -> Select:
    query = query.where(_IS_COMPLETED)
    if filters.sdate is not None:
        query = query.where(Enrolment.completed_on >= filters.sdate)
    if filters.edate is not None:
        query = query.where(Enrolment.completed_on <= filters.edate)
    return query


class _Recent:
    """The `size` most recently used entries of a mapping; safe to share between threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """Return the entry (now the most recent), or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, value: Any) -> None:
        """Store an entry, forgetting the least recently used beyond `size`."""
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class _CountCache:
    """Per-work-unit row counts keyed by (data version, filters); a small LRU per process."""

    def __init__(self, size: int = 32, layouts: int = 64) -> None:
        self._counts = _Recent(size)
        self._layouts = _Recent(layouts)

    def layout(
        self,
        session: Session,
        data_version: str,
        filters: Filters,
        units: list[WorkUnitInfo],
        units_key: Hashable | None,
    ) -> tuple[list[int], list[int]]:
        """Return (rows per unit, running totals) of these units; units_key, if any, must name exactly them.

        A business unit may see thousands of work units: their sizes are summed once per
        version, range and unit set, not on every page. An entry of 2,500 units holds about
        100 kB, so only the most recent `layouts` unit sets are kept. Without a key nothing is kept.
        """
        key = (data_version, filters, units_key)
        found: tuple[list[int], list[int]] | None = self._layouts.get(key) if units_key is not None else None
        if found is not None:
            return found
        counts = self.get(session, data_version, filters)
        sizes = [counts.get(unit.id, 0) for unit in units]
        found = (sizes, list(accumulate(sizes)))
        if units_key is not None:
            self._layouts.put(key, found)
        return found

    def get(self, session: Session, data_version: str, filters: Filters) -> dict[int, int]:
        """Return {work unit id: completed rows in the date range}, counting on a miss only."""
        key = (data_version, filters)
        counts: dict[int, int] | None = self._counts.get(key)
        if counts is not None:
            return counts
        # One pass, index-only on SQLite (ix_enrolments_completed_on); once per version and range.
        query = _completed(
            select(Enrolment.work_unit_id, func.count()).group_by(Enrolment.work_unit_id), filters
        )
        counts = {unit_id: count for unit_id, count in session.connection().execute(query)}
        self._counts.put(key, counts)
        return counts


unit_counts = _CountCache()


def _plan(
    units: list[WorkUnitInfo],
    sizes: list[int],
    ends: list[int],
    start: int,
    limit: int,
    after: SortKey | None,
    max_units: int | None = None,
) -> list[_Slice]:
    """Split rows start..start+limit-1 into per-unit slices using the units' row counts (at most max_units slices)."""
    index = bisect_right(ends, start - 1)  # the unit holding row `start`
    if index == len(units):
        return []
    skip = start - 1 - (ends[index - 1] if index else 0)
    # A cursor for row start-1 in the same unit seeks to it instead of skipping `skip` rows.
    resume = after if after is not None and units[index].code == after.org_code else None
    slices: list[_Slice] = []
    remaining = limit
    while index < len(units) and remaining and (max_units is None or len(slices) < max_units):
        take = min(sizes[index] - skip, remaining)
        if take > 0:
            slices.append(_Slice(units[index], 0 if resume else skip, take, resume))
            remaining -= take
        skip, resume = 0, None
        index += 1
    return slices


class _unindexed(FunctionElement[dt.date]):
    """A date column that SQLite must not choose an index for (rendered `+column` there).

    For a date range SQLite would otherwise read ix_enrolments_completed_on, fetch each
    row from the table and sort the unit's rows; ix_enrolments_report yields them in
    order, covered, and stops after `take`.
    """

    type = Date()
    inherit_cache = True


@compiles(_unindexed)
def _compile_unindexed(element: _unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_unindexed, "sqlite")
def _compile_unindexed_sqlite(element: _unindexed, compiler: Any, **kw: Any) -> str:
    # SQLite's documented way to keep a term from using an index: a unary plus.
    return "+" + str(compiler.process(element.clauses, **kw))


@dataclass(frozen=True)
class _Shape:
    """What a page statement's SQL depends on; its values are bound parameters."""

    slices: int
    first_offset: bool
    first_after: bool
    sdate: bool
    edate: bool


def _branch(position: int, shape: _Shape) -> Select:
    """One unit's slice: an index-only range of ix_enrolments_report."""
    query = select(
        literal_column(str(position), Integer).label("position"),
        Enrolment.crs_code,
        Enrolment.lr_id,
        Enrolment.sch_id,
        # Fetched raw: ISO text from SQLite, a date from psycopg; the renderer takes both.
        Enrolment.completed_on,
        Enrolment.score_hundredths,
        Enrolment.learner_id,
        Enrolment.course_id,
    ).where(Enrolment.work_unit_id == bindparam(f"unit_{position}"), _IS_COMPLETED)
    if shape.sdate:
        query = query.where(_unindexed(Enrolment.completed_on) >= bindparam("sdate", type_=Date))
    if shape.edate:
        query = query.where(_unindexed(Enrolment.completed_on) <= bindparam("edate", type_=Date))
    if position == 0 and shape.first_after:
        query = query.where(
            tuple_(Enrolment.crs_code, Enrolment.lr_id, Enrolment.sch_id)
            > tuple_(
                bindparam("after_crs_code", type_=String),
                bindparam("after_lr_id", type_=String),
                bindparam("after_sch_id", type_=String),
            )
        )
    query = query.order_by(Enrolment.crs_code, Enrolment.lr_id, Enrolment.sch_id)
    query = query.limit(bindparam(f"take_{position}", type_=Integer))
    if position == 0 and shape.first_offset:
        query = query.offset(bindparam("offset", type_=Integer))
    # A subquery, because SQLite allows no LIMIT on the arms of a bare UNION ALL.
    return select(query.subquery())


def _page_statement(shape: _Shape) -> Select:
    """Build the statement for a page of this shape (compiled once per shape by _compiled)."""
    branches = [_branch(position, shape) for position in range(shape.slices)]
    page = (branches[0] if len(branches) == 1 else union_all(*branches)).subquery("page")
    return (
        select(
            page.c.position,
            page.c.crs_code,
            Course.description,
            page.c.lr_id,
            Learner.surname,
            Learner.first_name,
            Learner.email,
            page.c.completed_on,
            page.c.score_hundredths,
            page.c.sch_id,
        )
        .join(Learner, Learner.id == page.c.learner_id)
        .join(Course, Course.id == page.c.course_id)
        # No ORDER BY: SQLite would push it into every arm as a temporary B-tree (a quarter of
        # a 500-row page's time). _page_rows sorts the ≤ limit rows instead; codes compare by
        # code point in Python as in the database (BINARY; COLLATE "C" on PostgreSQL).
    )


def _page_query(slices: list[_Slice], filters: Filters) -> tuple[_Shape, dict[str, Any]]:
    """The shape of a page's statement and the values of its parameters."""
    first = slices[0]
    shape = _Shape(
        len(slices), bool(first.offset), first.after is not None, filters.sdate is not None, filters.edate is not None
    )
    parameters: dict[str, Any] = {"sdate": filters.sdate, "edate": filters.edate, "offset": first.offset}
    if first.after is not None:
        parameters.update(
            after_crs_code=first.after.crs_code, after_lr_id=first.after.lr_id, after_sch_id=first.after.sch_id
        )
    for position, piece in enumerate(slices):
        parameters[f"unit_{position}"] = piece.unit.id
        parameters[f"take_{position}"] = piece.take
    return shape, parameters


@functools.lru_cache(maxsize=256)
def _compiled(shape: _Shape, dialect: Dialect) -> SQLCompiler:
    """The page statement compiled for a dialect, once per shape."""
    return cast(SQLCompiler, _page_statement(shape).compile(dialect=dialect))


def _page_rows(connection: Connection, slices: list[_Slice], filters: Filters) -> list[tuple[Any, ...]]:
    """Run a page's statement, compiled once per shape, on the DB-API cursor; rows in report order."""
    shape, parameters = _page_query(slices, filters)
    if connection.dialect.name == "sqlite":
        # What SQLAlchemy's Date type would bind: SQLite keeps dates as ISO text.
        for name in ("sdate", "edate"):
            if parameters[name] is not None:
                parameters[name] = parameters[name].isoformat()
    rows = execute_compiled(connection.connection, _compiled(shape, connection.dialect), parameters)
    rows.sort(key=_REPORT_ORDER)  # rows arrive nearly in order: a linear pass, mostly
    return rows


# (position, crs_code, lr_id, sch_id) of a page statement's row.
_REPORT_ORDER = itemgetter(0, 1, 3, 9)


def _as_date(raw: str | dt.date) -> dt.date:
    return raw if isinstance(raw, dt.date) else dt.date.fromisoformat(raw)


def _as_score(hundredths: int) -> Decimal:
    return Decimal(hundredths).scaleb(-2)


# Distinct raw values whose text each _Writer converter remembers (dates and scores need far fewer).
TEXT_MEMO_SIZE = 16384


@dataclass(frozen=True)
class _Writer:
    """A RowFormat as fetch_page applies it: converters of raw values, and a pick into the format's order."""

    date_text: Callable[[Any], Any]
    score_text: Callable[[Any], Any]
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None  # None: SUPPLIED order already


@functools.lru_cache(maxsize=8)
def _writer(row_format: RowFormat) -> _Writer:
    """The format's converters memoised by raw value: the format runs once per distinct date or score, not per row."""

    def date_text(raw: str | dt.date) -> Any:
        return row_format.date(_as_date(raw))

    def score_text(hundredths: int) -> Any:
        return row_format.score(_as_score(hundredths))

    memo = functools.lru_cache(maxsize=TEXT_MEMO_SIZE)
    pick = None
    if row_format.attributes != SUPPLIED:
        pick = itemgetter(*(SUPPLIED.index(name) for name in row_format.attributes))
    return _Writer(memo(date_text), memo(score_text), pick)


def converters(row_format: RowFormat) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """The format's date and score converters for raw values as the database returns them, memoised."""
    writer = _writer(row_format)
    return writer.date_text, writer.score_text


def fetch_page(
    session: Session,
    data_version: str,
    units: list[WorkUnitInfo],
    filters: Filters,
    start: int,
    limit: int,
    after: SortKey | None = None,
    units_key: Hashable | None = None,
    *,
    row_format: RowFormat,
    max_units: int | None = None,
) -> Page:
    """Return rows start..start+limit-1 (1-based) of the report over these units, written in row_format.

    `after`, when given, must be the sort key of row start-1: the page then
    resumes from it by index seek instead of skipping start-1 rows. `units_key`,
    when given, must identify the unit list within the data version (the token's
    unit and ORGCODES do): the units' running totals are then cached under it. `max_units`
    bounds the work units (the statement's arms) one page reads: a page then ends early, at the
    end of its last unit's slice (SQLite allows 500 arms in one compound statement).
    """
    sizes, ends = unit_counts.layout(session, data_version, filters, units, units_key)
    total = ends[-1] if ends else 0
    slices = _plan(units, sizes, ends, start, limit, after, max_units)
    if not slices:
        return Page([], total, None)
    raw = _page_rows(session.connection(), slices, filters)
    units_at = [(piece.unit.code, piece.unit.name) for piece in slices]
    writer = _writer(row_format)
    date_text, score_text = writer.date_text, writer.score_text
    rows = [
        (*units_at[position], crs_code, crs_desc, lr_id, surname, first_name, email,
         date_text(completed_on), score_text(score), str(rnum), sch_id)
        for rnum, (position, crs_code, crs_desc, lr_id, surname, first_name, email, completed_on, score, sch_id)
        in enumerate(raw, start=start)
    ]
    # The single pass above builds rows in SUPPLIED order; a format that orders them otherwise
    # costs a second, cheap pass.
    if writer.pick is not None:
        pick = writer.pick
        rows = [pick(row) for row in rows]
    last = raw[-1] if raw else None
    return Page(rows, total, SortKey(units_at[last[0]][0], last[1], last[3], last[9]) if last else None)
