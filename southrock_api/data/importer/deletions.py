"""Deleting rows: a delta's deletions.csv, and what a --full import's files no longer hold.

Deletions run after every file is written, children before parents (enrolments, learners,
courses, work units, business units). A deletion that would leave a row referring to a deleted
one, or a --full import that would delete more than its share of the enrolments, is a problem
like any other: the import is refused and nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from typing import Any

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute

from southrock_api.data.changes import ChangeRecorder
from southrock_api.data.importer.formats import (
    BUSINESS_UNITS,
    COURSES,
    DELETIONS,
    ENROLMENTS,
    LEARNERS,
    WORK_UNITS,
    FileSpec,
)
from southrock_api.data.importer.problems import Problems, show
from southrock_api.data.importer.reading import CsvReader
from southrock_api.data.models import ApiToken, BusinessUnit, Course, Enrolment, Learner, WorkUnit

# The share of the stored enrolments a --full import deletes without being told it may
# (--max-delete): beyond it, a truncated or empty extract is the likelier explanation.
MAX_DELETE_PERCENT = 10.0
_PER_STATEMENT = 500
Attribute = InstrumentedAttribute[Any]


@dataclass
class Deleted:
    """How many rows of each kind the import deleted."""

    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """`deleted 3 enrolments, 1 learner`, or '' if nothing was."""
        parts = [f"{count} {kind if count != 1 else kind.rstrip('s')}" for kind, count in self.counts.items() if count]
        return "deleted " + ", ".join(parts) if parts else ""


class Deletions:
    """Finds, checks and deletes the rows an import removes."""

    def __init__(
        self,
        connection: Connection,
        reader: CsvReader,
        problems: Problems,
        recorder: ChangeRecorder,
        file_keys: dict[str, dict[str, int]],
        full: bool,
        max_delete_percent: float,
    ) -> None:
        self.connection = connection
        self.reader = reader
        self.problems = problems
        self.recorder = recorder
        self.file_keys = file_keys
        self.full = full
        self.max_delete_percent = max_delete_percent
        self.deleted = Deleted()

    def apply(self) -> None:
        """Check every deletion, then (if no problem was found) make them."""
        enrolments = self._doomed_enrolments()
        if self.problems.found:
            return
        learners = self._absent(LEARNERS, Learner.lr_id, Learner.id)
        courses = self._absent(COURSES, Course.code, Course.id)
        work_units = self._absent(WORK_UNITS, WorkUnit.code, WorkUnit.id)
        business_units = self._absent(BUSINESS_UNITS, BusinessUnit.code, BusinessUnit.id)
        self._delete_enrolments(enrolments)
        # A referrer that is deleted too is no problem: only one that stays is.
        none: dict[str, int] = {}
        self._check_unreferenced(LEARNERS, "LR_ID", learners, [(Enrolment.learner_id, "enrolment", Enrolment.sch_id, none)])
        self._check_unreferenced(COURSES, "CRS_CODE", courses, [(Enrolment.course_id, "enrolment", Enrolment.sch_id, none)])
        self._check_unreferenced(
            WORK_UNITS,
            "ORG_CODE",
            work_units,
            [
                (Learner.work_unit_id, "learner", Learner.lr_id, learners),
                (WorkUnit.parent_id, "work unit", WorkUnit.code, work_units),
                (ApiToken.work_unit_id, "API token", ApiToken.public_key, none),
            ],
        )
        self._check_unreferenced(
            BUSINESS_UNITS,
            "ORGGRP_CODE",
            business_units,
            [
                (WorkUnit.business_unit_id, "work unit", WorkUnit.code, work_units),
                (BusinessUnit.parent_id, "business unit", BusinessUnit.code, business_units),
                (ApiToken.business_unit_id, "API token", ApiToken.public_key, none),
            ],
        )
        if self.problems.found:
            return
        self._delete(ApiToken.work_unit_id, list(work_units.values()))
        self._delete(ApiToken.business_unit_id, list(business_units.values()))
        for kind, ids, column in (
            ("learners", learners, Learner.id),
            ("courses", courses, Course.id),
            ("work units", work_units, WorkUnit.id),
            ("business units", business_units, BusinessUnit.id),
        ):
            self._delete(column, list(ids.values()))
            self.deleted.counts[kind] = len(ids)

    def _doomed_enrolments(self) -> dict[str, int]:
        """SCH_ID → id of every enrolment to delete: named in deletions.csv, or (--full) absent from enrolments.csv."""
        doomed: dict[str, int] = {}
        in_file = self.file_keys.get(ENROLMENTS.name, {})
        if self.reader.present(DELETIONS):
            named: dict[str, int] = {}
            for line, (sch_id,) in self.reader.rows(DELETIONS, {}):
                if sch_id in in_file:
                    self.problems.add(DELETIONS, line, f"SCH_ID {show(sch_id)} is also in enrolments.csv (line {in_file[sch_id]})")
                else:
                    named.setdefault(sch_id, line)
            stored = self._stored_enrolments(named)
            for sch_id, line in named.items():
                if sch_id not in stored:
                    self.problems.add(DELETIONS, line, f"SCH_ID {show(sch_id)} is not a stored enrolment")
            doomed.update(stored)
        if self.full and self.reader.present(ENROLMENTS) and ENROLMENTS.name not in self.reader.unreadable:
            rows = self.connection.execute(select(Enrolment.sch_id, Enrolment.id))
            doomed.update((sch_id, enrolment_id) for sch_id, enrolment_id in rows if sch_id not in in_file)
            total = int(self.connection.scalar(select(func.count()).select_from(Enrolment)) or 0)
            percent = 100 * len(doomed) / total if total else 0.0
            if percent > self.max_delete_percent:
                self.problems.add_to_file(
                    ENROLMENTS,
                    f"this --full import would delete {len(doomed):,} of the {total:,} stored enrolments "
                    f"({percent:.1f} %), more than --max-delete {self.max_delete_percent:g} % allows; if the "
                    f"extract is complete, run it again with --max-delete {math.ceil(percent)}",
                )
        return doomed

    def _stored_enrolments(self, sch_ids: Iterable[str]) -> dict[str, int]:
        wanted = list(sch_ids)
        found: dict[str, int] = {}
        for start in range(0, len(wanted), _PER_STATEMENT):
            chunk = wanted[start : start + _PER_STATEMENT]
            rows = self.connection.execute(select(Enrolment.sch_id, Enrolment.id).where(Enrolment.sch_id.in_(chunk)))
            found.update((sch_id, enrolment_id) for sch_id, enrolment_id in rows)
        return found

    def _absent(self, spec: FileSpec, code: Attribute, id_: Attribute) -> dict[str, int]:
        """Code → id of the stored rows a --full import's file no longer holds (none without --full or the file)."""
        if not self.full or not self.reader.present(spec) or spec.name in self.reader.unreadable:
            return {}
        in_file = self.file_keys.get(spec.name, {})
        rows = self.connection.execute(select(code, id_))
        return {row_code: row_id for row_code, row_id in rows if row_code not in in_file}

    def _delete_enrolments(self, doomed: dict[str, int]) -> None:
        # The log keeps where each was first; RTOPilot push state goes with its enrolment (ON DELETE CASCADE).
        self.recorder.enrolments_changing(list(doomed))
        self._delete(Enrolment.id, list(doomed.values()))
        self.deleted.counts["enrolments"] = len(doomed)

    def _check_unreferenced(
        self,
        spec: FileSpec,
        key_column: str,
        absent: dict[str, int],
        references: list[tuple[Attribute, str, Attribute, dict[str, int]]],
    ) -> None:
        """A problem for each absent row that a row staying (not deleted too) still refers to."""
        if not absent:
            return
        code_of = {row_id: code for code, row_id in absent.items()}
        ids = list(code_of)
        for column, what, name, deleted_too in references:
            referring: dict[int, tuple[str, int]] = {}
            for start in range(0, len(ids), _PER_STATEMENT):
                chunk = ids[start : start + _PER_STATEMENT]
                query = select(column, name).where(column.in_(chunk))
                if column.class_ is ApiToken:
                    # A revoked token goes with its unit (the audit log keeps its story); a live one stays.
                    query = query.where(ApiToken.revoked_at.is_(None))
                for row_id, referrer in self.connection.execute(query):
                    if referrer in deleted_too:
                        continue
                    first, count = referring.get(row_id, (referrer, 0))
                    referring[row_id] = (min(first, referrer), count + 1)
            for row_id, (first, count) in sorted(referring.items(), key=lambda item: code_of[item[0]]):
                more = f" ({count} in all)" if count > 1 else ""
                self.problems.add_to_file(
                    spec,
                    f"{key_column} {show(code_of[row_id])} is not in the file, so --full would delete it, "
                    f"but {what} {show(first)} still refers to it{more}",
                )

    def _delete(self, column: Attribute, ids: list[int]) -> None:
        for start in range(0, len(ids), _PER_STATEMENT):
            self.connection.execute(delete(column.class_).where(column.in_(ids[start : start + _PER_STATEMENT])))
