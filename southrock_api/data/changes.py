"""The change log an import writes: which enrolments changed for some token, and where they were in the trees.

Every enrolment whose row as some token sees it changes (inserted, any property changed, through
its own row or a rename or move of its learner, course or work unit, into or out of COMPLETED,
deleted, or its work unit moved in either tree) gets one `enrolment_changes` row per import, with
its unit path before and after. A unit path (`unit_paths`) is a work unit's code and every unit
whose tokens see it (`B:code`, `W:code`), so whether a token saw a row at any position is a
membership test that needs no history of the trees. See docs/architecture.md, "Exact copies".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from southrock_api.data.models import (
    BusinessUnit,
    ChangeImport,
    ChangeLogState,
    EnrolmentChange,
    UnitPath,
    WorkUnit,
)

DEFAULT_RETENTION_DAYS = 30
# Rows of ids per statement when enrolments are looked up by the units, learners or courses they touch.
_IDS_PER_STATEMENT = 500


@dataclass(frozen=True)
class Trees:
    """Both unit trees as stored: what a unit path is computed from."""

    work_units: dict[int, tuple[str, str, int, int | None]]  # id → (code, name, business unit id, parent id)
    business_units: dict[int, tuple[str, int | None]]  # id → (code, parent id)

    @classmethod
    def load(cls, connection: Connection) -> Trees:
        """Read both trees."""
        work_units = {
            wu_id: (code, name, bu_id, parent_id)
            for wu_id, code, name, bu_id, parent_id in connection.execute(
                select(WorkUnit.id, WorkUnit.code, WorkUnit.name, WorkUnit.business_unit_id, WorkUnit.parent_id)
            )
        }
        business_units = {
            bu_id: (code, parent_id)
            for bu_id, code, parent_id in connection.execute(
                select(BusinessUnit.id, BusinessUnit.code, BusinessUnit.parent_id)
            )
        }
        return cls(work_units, business_units)

    def paths(self) -> dict[int, str]:
        """Work unit id → its unit path text."""
        bu_chains: dict[int, list[str]] = {}

        def bu_chain(bu_id: int) -> list[str]:
            found = bu_chains.get(bu_id)
            if found is None:
                found = []
                node: int | None = bu_id
                seen: set[int] = set()
                while node is not None and node not in seen:  # the importer refuses cycles; never loop
                    seen.add(node)
                    code, parent = self.business_units[node]
                    found.append("B:" + code)
                    node = parent
                bu_chains[bu_id] = found
            return found

        paths: dict[int, str] = {}
        for wu_id, (code, _name, _bu, _parent) in self.work_units.items():
            # A business unit's token sees the work units of its business units and every work unit
            # below those (report.visibility): so every ancestor's business units count.
            units: set[str] = set()
            node: int | None = wu_id
            seen: set[int] = set()
            while node is not None and node not in seen:
                seen.add(node)
                node_code, _n, node_bu, parent = self.work_units[node]
                units.add("W:" + node_code)
                units.update(bu_chain(node_bu))
                node = parent
            paths[wu_id] = unit_path_text(code, units)
        return paths

    def rows_of(self) -> dict[int, tuple[str, str]]:
        """Work unit id → (unit path text, name): what a row shows of its unit and who sees it."""
        paths = self.paths()
        return {wu_id: (paths[wu_id], name) for wu_id, (_code, name, _bu, _parent) in self.work_units.items()}


def unit_path_text(work_unit_code: str, units: Iterable[str]) -> str:
    """A unit path's stored text: JSON, the work unit's code first, then the units that see it in order."""
    return json.dumps([work_unit_code, *sorted(units)], ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class UnitPathInfo:
    """A unit path read back: the work unit's code and the units whose tokens see it."""

    work_unit_code: str
    seen_by: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> UnitPathInfo:
        """Read a unit path's text."""
        code, *units = json.loads(text)
        return cls(code, frozenset(units))

    def visible_to(self, scope: str, orgcodes: frozenset[str] | None) -> bool:
        """Whether a token of `scope` ("B:code" or "W:code"), narrowed to ORGCODES, sees rows of this unit."""
        return scope in self.seen_by and (orgcodes is None or self.work_unit_code in orgcodes)


def path_ids(connection: Connection, texts: Iterable[str]) -> dict[str, int]:
    """Unit path text → its id, storing the texts not stored yet."""
    wanted = {hashlib.sha256(text.encode()).hexdigest(): text for text in set(texts)}
    digests = list(wanted)

    def stored() -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(digests), _IDS_PER_STATEMENT):
            chunk = digests[start : start + _IDS_PER_STATEMENT]
            rows = connection.execute(select(UnitPath.id, UnitPath.digest).where(UnitPath.digest.in_(chunk)))
            found.update((wanted[digest], path_id) for path_id, digest in rows)
        return found

    known = stored()
    missing = [digest for digest in digests if wanted[digest] not in known]
    if missing:
        connection.execute(insert(UnitPath), [{"units": wanted[digest], "digest": digest} for digest in missing])
        known = stored()
    return known


class ChangeRecorder:
    """Collects, while an import writes, the enrolments it changes; `finish` writes them to the log.

    Everything goes through the import's connection and transaction: a failed import records
    nothing, and a committed one's changes are visible exactly when its rows are.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # The log positions (before, last] this import wrote, once finished.
        self.positions = (0, 0)
        self.sqlite = connection.dialect.name == "sqlite"
        if not self.sqlite:
            # One import at a time takes positions and commits: a reader that has seen a
            # position has seen every position before it (no gap a later commit could fill).
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7013461)")
        self.trees_before = Trees.load(connection)
        self.units_before = self.trees_before.rows_of()
        # Enrolments stored from here on (ids above this) are new: their log rows come from one
        # statement at the end, not one capture each.
        self.last_old_id = int(connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM enrolments").scalar_one())
        # Kept for the connection's life and emptied per import: creating and dropping them on every
        # import would churn the catalog (and, in one long transaction, PostgreSQL's lock table).
        connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE IF NOT EXISTS import_changes "
            "(sch_id VARCHAR(64) PRIMARY KEY, units_before INTEGER, was_completed BOOLEAN NOT NULL)"
        )
        connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE IF NOT EXISTS import_unit_paths "
            "(work_unit_id INTEGER PRIMARY KEY, units_before INTEGER, units_after INTEGER)"
        )
        connection.exec_driver_sql("DELETE FROM import_changes")
        connection.exec_driver_sql("DELETE FROM import_unit_paths")
        before_ids = path_ids(connection, (text for text, _name in self.units_before.values()))
        self._fill_paths({wu_id: before_ids[text] for wu_id, (text, _name) in self.units_before.items()}, "units_before")

    def _fill_paths(self, ids: dict[int, int], column: str) -> None:
        if self.sqlite:
            upsert = (
                f"INSERT INTO import_unit_paths (work_unit_id, {column}) VALUES (?, ?) "
                f"ON CONFLICT (work_unit_id) DO UPDATE SET {column} = excluded.{column}"
            )
        else:
            upsert = (
                f"INSERT INTO import_unit_paths (work_unit_id, {column}) VALUES (%s, %s) "
                f"ON CONFLICT (work_unit_id) DO UPDATE SET {column} = excluded.{column}"
            )
        if ids:
            self.connection.exec_driver_sql(upsert, list(ids.items()))

    def _capture(self, where: str, parameters: list[Any], completed_only: bool) -> None:
        """Keep, for the enrolments `where` selects, their unit path and status before the import (the first capture wins)."""
        completed = " AND e.status = 'COMPLETED'" if completed_only else ""
        self.connection.exec_driver_sql(
            "INSERT INTO import_changes (sch_id, units_before, was_completed) "
            "SELECT e.sch_id, p.units_before, e.status = 'COMPLETED' FROM enrolments e "
            "JOIN import_unit_paths p ON p.work_unit_id = e.work_unit_id "
            f"WHERE {where}{completed} ON CONFLICT (sch_id) DO NOTHING",
            tuple(parameters),
        )

    def _capture_ids(self, column: str, ids: Iterable[int], completed_only: bool = True) -> None:
        ids = list(ids)
        for start in range(0, len(ids), _IDS_PER_STATEMENT):
            chunk = ids[start : start + _IDS_PER_STATEMENT]
            marks = ", ".join(["?" if self.sqlite else "%s"] * len(chunk))
            self._capture(f"e.{column} IN ({marks})", chunk, completed_only)

    def units_written(self) -> None:
        """After both trees are written: the completed enrolments of every work unit whose path or name changed."""
        self.trees_after = Trees.load(self.connection)
        after = self.trees_after.rows_of()
        changed = [wu_id for wu_id, row in self.units_before.items() if after.get(wu_id) != row]
        self._capture_ids("work_unit_id", changed)
        after_ids = path_ids(self.connection, (text for text, _name in after.values()))
        self._fill_paths({wu_id: after_ids[text] for wu_id, (text, _name) in after.items()}, "units_after")

    def learners_changed(self, learner_ids: Iterable[int]) -> None:
        """Before a learner's enrolments move with it: the completed enrolments of learners whose row changed."""
        self._capture_ids("learner_id", learner_ids)

    def courses_changed(self, course_ids: Iterable[int]) -> None:
        """The completed enrolments of courses whose description changed."""
        self._capture_ids("course_id", course_ids)

    def enrolments_changing(self, sch_ids: list[str]) -> None:
        """Before they are written or deleted: stored enrolments whose row changes, completed or not."""
        for start in range(0, len(sch_ids), _IDS_PER_STATEMENT):
            chunk = sch_ids[start : start + _IDS_PER_STATEMENT]
            marks = ", ".join(["?" if self.sqlite else "%s"] * len(chunk))
            self._capture(f"e.sch_id IN ({marks})", chunk, completed_only=False)

    def finish(self, now: dt.datetime, retention_days: int) -> int:
        """Write the log rows of this import (new enrolments, then the captured ones) and prune; return how many."""
        if not hasattr(self, "trees_after"):  # neither tree file was imported: paths as before
            self.connection.exec_driver_sql("UPDATE import_unit_paths SET units_after = units_before")
        before = self._last_position()
        # Only rows that were or are COMPLETED: no token ever saw any other.
        self.connection.exec_driver_sql(
            "INSERT INTO enrolment_changes (sch_id, units_before, units_after) "
            "SELECT c.sch_id, c.units_before, p.units_after FROM import_changes c "
            "LEFT JOIN enrolments e ON e.sch_id = c.sch_id "
            "LEFT JOIN import_unit_paths p ON p.work_unit_id = e.work_unit_id "
            "WHERE c.was_completed OR e.status = 'COMPLETED' ORDER BY c.sch_id"
        )
        self.connection.exec_driver_sql(
            "INSERT INTO enrolment_changes (sch_id, units_before, units_after) "
            "SELECT e.sch_id, NULL, p.units_after FROM enrolments e "
            "JOIN import_unit_paths p ON p.work_unit_id = e.work_unit_id "
            f"WHERE e.id > {self.last_old_id} AND e.status = 'COMPLETED' ORDER BY e.id"
        )
        last = self._last_position()
        self.positions = (before, last)
        self.connection.exec_driver_sql("DELETE FROM import_changes")
        self.connection.exec_driver_sql("DELETE FROM import_unit_paths")
        written = last - before
        if written:
            self.connection.execute(insert(ChangeImport).values(last_position=last, recorded_at=now, changes=written))
        prune(self.connection, now - dt.timedelta(days=retention_days))
        return written

    def _last_position(self) -> int:
        return int(self.connection.scalar(select(func.coalesce(func.max(EnrolmentChange.position), 0))) or 0)


def prune(connection: Connection, before: dt.datetime) -> int:
    """Delete the log rows of imports recorded before `before`; return the last position pruned (0 if none ever)."""
    through = connection.scalar(
        select(func.max(ChangeImport.last_position)).where(ChangeImport.recorded_at < before)
    )
    if through is None:
        return pruned_through(connection)
    connection.execute(delete(EnrolmentChange).where(EnrolmentChange.position <= through))
    connection.execute(delete(ChangeImport).where(ChangeImport.last_position <= through))
    connection.execute(update(ChangeLogState).where(ChangeLogState.id == 1).values(pruned_through=through))
    return int(through)


def pruned_through(connection: Connection) -> int:
    """Every position up to this one may be gone: a feed token from before it needs a new snapshot."""
    return int(connection.scalar(select(ChangeLogState.pruned_through).where(ChangeLogState.id == 1)) or 0)


def last_position(connection: Connection) -> int:
    """The newest position recorded (0 for an empty log): what a snapshot read now is exact as of."""
    newest = connection.scalar(select(func.max(EnrolmentChange.position)))
    if newest is None:
        # An empty log (a new site, or everything pruned) still has a place in the sequence.
        newest = connection.scalar(select(func.max(ChangeImport.last_position)))
    return int(newest or 0) if newest is not None else pruned_through(connection)


def seal_key(connection: Connection) -> str:
    """The site's key for sealing feed tokens."""
    return str(connection.scalar(select(ChangeLogState.seal_key).where(ChangeLogState.id == 1)))
