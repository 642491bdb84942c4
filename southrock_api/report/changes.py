"""The change feed for one token: since a position, each changed enrolment once, as that token sees it now.

A round covers the log's positions (origin, end]. Its candidates are the enrolments whose last
change up to `end` lies after the round's cursor, in position order, so each enrolment comes
once per round and a page ends at a position the next page resumes after. A candidate whose
current row the token sees (spec §7: a visible work unit, COMPLETED, its date within the
filters) is an UPSERT with every property; otherwise it is a DELETE, but only if the token
saw its unit at some change since the origin (data.changes.UnitPathInfo), so a token is never
told of a SCH_ID outside its units; otherwise nothing. See docs/architecture.md, "Exact copies".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, select
from sqlalchemy.orm import aliased

from southrock_api.data.changes import UnitPathInfo
from southrock_api.data.models import COMPLETED, Course, Enrolment, EnrolmentChange, Learner, UnitPath
from southrock_api.report.summary import Filters, RowFormat, converters
from southrock_api.report.visibility import WorkUnitInfo

# Candidates read per statement, and at most per page: a page of a round whose changes the token
# cannot see ends after this many, with fewer rows than asked (even none) and a next link.
SCAN_CHUNK = 1000
SCAN_BUDGET = 50_000


@dataclass(frozen=True)
class FeedScope:
    """What a token's copy holds: its scope ("B:code"/"W:code"), its ORGCODES, the units it sees now, its dates; and the data version read."""

    scope: str
    orgcodes: frozenset[str] | None
    units: list[WorkUnitInfo]
    filters: Filters
    data_version: str  # of the request's snapshot: what the units and the cached unit paths are of


@dataclass(frozen=True)
class Change:
    """One enrolment's change: its row now (the format's values, without RNUM), or None to delete it."""

    sch_id: str
    row: tuple[Any, ...] | None


@dataclass(frozen=True)
class FeedPage:
    """A page of a round: its changes, the position it reached, and whether the round holds more."""

    changes: list[Change]
    cursor: int
    more: bool


_later = aliased(EnrolmentChange)
_CANDIDATES = (
    select(EnrolmentChange.position, EnrolmentChange.sch_id)
    .where(
        EnrolmentChange.position > bindparam("after"),
        EnrolmentChange.position <= bindparam("end"),
        # The enrolment's last change of the round (ix_enrolment_changes_sch_id answers it).
        ~exists().where(
            and_(
                _later.sch_id == EnrolmentChange.sch_id,
                _later.position > EnrolmentChange.position,
                _later.position <= bindparam("end"),
            )
        ),
    )
    .order_by(EnrolmentChange.position)
    .limit(bindparam("take"))
)
_PATHS_SINCE = select(EnrolmentChange.sch_id, EnrolmentChange.units_before, EnrolmentChange.units_after).where(
    EnrolmentChange.sch_id.in_(bindparam("sch_ids", expanding=True)),
    EnrolmentChange.position > bindparam("origin"),
)
_UNIT_PATHS = select(UnitPath.id, UnitPath.units).where(UnitPath.id.in_(bindparam("ids", expanding=True)))

# unit_paths rows are never changed or deleted, so each is read once per process; the cache
# is kept for one data version at a time all the same: a database restored from a backup (or a
# test rolled back) may give an id to another path.
_paths: dict[int, UnitPathInfo] = {}
_paths_version: list[str] = [""]
_paths_lock = threading.Lock()

def _candidates(connection: Connection, after: int, end: int, take: int) -> list[tuple[int, str]]:
    rows = connection.execute(_CANDIDATES, {"after": after, "end": end, "take": take})
    return [(int(position), sch_id) for position, sch_id in rows]


def _current_rows(connection: Connection, sch_ids: list[str], filters: Filters) -> list[tuple[Any, ...]]:
    """The rows of these enrolments that are COMPLETED within the dates, whatever their unit."""
    query = (
        select(
            Enrolment.sch_id,
            Enrolment.work_unit_id,
            Enrolment.crs_code,
            Course.description,
            Enrolment.lr_id,
            Learner.surname,
            Learner.first_name,
            Learner.email,
            Enrolment.completed_on,
            Enrolment.score_hundredths,
        )
        .join(Learner, Learner.id == Enrolment.learner_id)
        .join(Course, Course.id == Enrolment.course_id)
        .where(Enrolment.sch_id.in_(bindparam("sch_ids", expanding=True)), Enrolment.status == COMPLETED)
    )
    if filters.sdate is not None:
        query = query.where(Enrolment.completed_on >= filters.sdate)
    if filters.edate is not None:
        query = query.where(Enrolment.completed_on <= filters.edate)
    return [tuple(row) for row in connection.execute(query, {"sch_ids": sch_ids})]


def unit_paths(connection: Connection, ids: set[int], data_version: str) -> dict[int, UnitPathInfo]:
    """The unit paths with these ids, read from the database only the first time each is asked for."""
    with _paths_lock:
        if _paths_version[0] != data_version:
            _paths.clear()
            _paths_version[0] = data_version
        known = dict(_paths)
    missing = [path_id for path_id in ids if path_id not in known]
    if missing:
        read = {path_id: UnitPathInfo.parse(text) for path_id, text in connection.execute(_UNIT_PATHS, {"ids": missing})}
        known.update(read)
        with _paths_lock:
            if _paths_version[0] == data_version:
                _paths.update(read)
    return {path_id: known[path_id] for path_id in ids if path_id in known}

def _seen_since(connection: Connection, sch_ids: list[str], origin: int, scope: FeedScope) -> set[str]:
    """Those of the enrolments that were in the token's units before or after some change since `origin`."""
    changes = list(connection.execute(_PATHS_SINCE, {"sch_ids": sch_ids, "origin": origin}))
    paths = unit_paths(
        connection, {path for _sch, *ids in changes for path in ids if path is not None}, scope.data_version
    )
    seen = set()
    for sch_id, *ids in changes:
        for path_id in ids:
            path = paths.get(path_id) if path_id is not None else None
            if path is not None and path.visible_to(scope.scope, scope.orgcodes):
                seen.add(sch_id)
    return seen


def _decide(
    connection: Connection, sch_ids: list[str], origin: int, scope: FeedScope, row_format: RowFormat
) -> dict[str, Change]:
    """The change each of these enrolments makes to the token's copy; absent where it makes none."""
    units = {unit.id: unit for unit in scope.units}
    date_text, score_text = converters(row_format)
    decided: dict[str, Change] = {}
    for sch_id, unit_id, crs_code, crs_desc, lr_id, surname, first_name, email, completed_on, score in _current_rows(
        connection, sch_ids, scope.filters
    ):
        unit = units.get(unit_id)
        if unit is None:
            continue
        values = {
            "org_code": unit.code, "org_name": unit.name, "crs_code": crs_code, "crs_desc": crs_desc,
            "lr_id": lr_id, "lr_sname": surname, "lr_fname": first_name, "lr_email": email,
            "completed_on": date_text(completed_on), "score": score_text(score), "sch_id": sch_id,
        }
        decided[sch_id] = Change(sch_id, tuple(values[name] for name in row_format.attributes if name != "rnum"))
    gone = [sch_id for sch_id in sch_ids if sch_id not in decided]
    if gone:
        for sch_id in _seen_since(connection, gone, origin, scope):
            decided[sch_id] = Change(sch_id, None)
    return decided


def read_changes(
    connection: Connection,
    scope: FeedScope,
    origin: int,
    end: int,
    cursor: int,
    limit: int,
    row_format: RowFormat,
    budget: int = SCAN_BUDGET,
) -> FeedPage:
    """The next page of the round (origin, end] after `cursor`: at most `limit` changes, written in row_format.

    Read in the caller's one snapshot. The page's cursor is the position of its last change when
    it filled up, `end` once the round has nothing more, and the last position scanned when the
    scan budget ran out first (the page then holds fewer than `limit` changes).
    """
    changes: list[Change] = []
    scanned = 0
    position = cursor
    while True:
        take = min(SCAN_CHUNK, budget - scanned)
        if take <= 0:
            return FeedPage(changes, position, bool(_candidates(connection, position, end, 1)))
        candidates = _candidates(connection, position, end, take)
        if not candidates:
            return FeedPage(changes, end, False)
        decided = _decide(connection, [sch_id for _position, sch_id in candidates], origin, scope, row_format)
        for candidate_position, sch_id in candidates:
            scanned += 1
            position = candidate_position
            change = decided.get(sch_id)
            if change is None:
                continue
            changes.append(change)
            if len(changes) == limit:
                more = bool(_candidates(connection, position, end, 1))
                return FeedPage(changes, position if more else end, more)
        if len(candidates) < take:
            return FeedPage(changes, end, False)
