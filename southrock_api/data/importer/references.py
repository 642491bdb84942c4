"""Each kind of row in dependency order: its codes resolved to ids and checked against the known codes, then written."""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.orm import aliased

from southrock_api.data.changes import ChangeRecorder
from southrock_api.data.importer.formats import BUSINESS_UNITS, COURSES, ENROLMENTS, LEARNERS, WORK_UNITS, FileSpec
from southrock_api.data.importer.problems import Problems, show
from southrock_api.data.importer.reading import CsvReader
from southrock_api.data.importer.values import EnrolmentValues, parse_once
from southrock_api.data.importer.writing import (
    FileCounts,
    count_rows,
    execute_batches,
    indexes_rebuilt_for_bulk_load,
    table_writer,
    upsert,
    write_rows,
)
from southrock_api.data.models import (
    COMPLETED,
    ENROLMENT_STATUSES,
    REPORT_INDEX_COLUMNS,
    BusinessUnit,
    Course,
    Enrolment,
    Learner,
    WorkUnit,
)

# The enrolments.csv size per row, for the row count that decides an index rebuild.
BYTES_PER_ENROLMENT = 64
ENROLMENT_COLUMNS = (
    "sch_id", "learner_id", "course_id", "status", "completed_on",
    "score_hundredths", "progress", "work_unit_id", "crs_code", "lr_id",
)
# The report's order (spec §17), which leads the enrolments' widest index.
REPORT_ORDER = REPORT_INDEX_COLUMNS[:4]
_STATUSES = frozenset(ENROLMENT_STATUSES)


class _AnyCode:
    """Contains every code: stands in for the codes of a file that could not be read."""

    def __contains__(self, code: object) -> bool:
        return True


_ANY_CODE = _AnyCode()


class References:
    """What rows may refer to (ids of stored rows, codes known so far), and the loading of each file in turn."""

    def __init__(
        self, connection: Connection, reader: CsvReader, problems: Problems, recorder: ChangeRecorder
    ) -> None:
        self.connection = connection
        self.recorder = recorder
        self.reader = reader
        self.problems = problems
        self.sqlite = connection.dialect.name == "sqlite"
        # Foreign keys resolve through code → id dictionaries, loaded once per table
        # (and again once the import has written it).
        self.business_unit_ids = _ids(connection, BusinessUnit.code, BusinessUnit.id)
        self.work_unit_ids = _ids(connection, WorkUnit.code, WorkUnit.id)
        self.course_ids = _ids(connection, Course.code, Course.id)
        self.learners = _learners(connection)
        # Codes that exist or are created by this import, for reference checks
        # that still work once a problem has stopped the writing.
        self.known_business_units = set(self.business_unit_ids)
        self.known_work_units = set(self.work_unit_ids)
        self.known_courses = set(self.course_ids)
        self.known_learners: set[str] = set()
        # What was written, file by file, while no problem had been found.
        self.files: list[FileCounts] = []
        # Each file's keys (and lines): what a --full import keeps. enrolments.csv's are kept
        # only when asked for (keep_enrolment_keys): a million of them cost memory.
        self.file_keys: dict[str, dict[str, int]] = {}
        self.keep_enrolment_keys = False
        self.moved_learners = 0

    def load(self) -> None:
        """Read, check and (while no problem is found) write every file present, in dependency order."""
        for spec, load in (
            (BUSINESS_UNITS, self._business_units),
            (WORK_UNITS, self._work_units),
            (COURSES, self._courses),
            (LEARNERS, self._learners_file),
            (ENROLMENTS, self._enrolments),
        ):
            if self.reader.present(spec):
                load()
            if spec is WORK_UNITS and self.writing and (self.reader.present(BUSINESS_UNITS) or self.reader.present(WORK_UNITS)):
                # Both trees are written: every work unit whose rows look or are seen otherwise now.
                self.recorder.units_written()

    @property
    def writing(self) -> bool:
        """No problem so far, so rows are still written."""
        return not self.problems.found

    def known(self, spec: FileSpec, codes: set[str]) -> Container[str]:
        """The codes a reference to spec's rows may use."""
        return _ANY_CODE if spec.name in self.reader.unreadable else codes

    # -- business units and work units: whole files, a tree each --------------

    def _business_units(self) -> None:
        keys: dict[str, int] = {}
        rows = list(self.reader.rows(BUSINESS_UNITS, keys))
        self.file_keys[BUSINESS_UNITS.name] = keys
        lines = {row[0]: line for line, row in rows}
        self.known_business_units |= keys.keys()
        for line, (_code, _name, parent) in rows:
            if parent and parent not in self.known_business_units:
                self.problems.add(BUSINESS_UNITS, line, f"PARENT_ORGGRP_CODE {show(parent)} is not a known business unit")
        table: Table = BusinessUnit.__table__  # type: ignore[assignment]
        parents = self._stored_parents(BusinessUnit)
        parents.update((code, parent or None) for _line, (code, _name, parent) in rows)
        self._check_cycles(BUSINESS_UNITS, "business-unit", parents, lines)
        if not self.writing:
            return
        before = count_rows(self.connection, table)
        execute_batches(
            self.connection,
            upsert(self.connection, table, "code"),
            ({"code": code, "name": name} for _line, (code, name, _parent) in rows),
        )
        self.business_unit_ids = _ids(self.connection, BusinessUnit.code, BusinessUnit.id)
        self._set_parents(table, self.business_unit_ids, ((code, parent) for _line, (code, _name, parent) in rows))
        self._record(BUSINESS_UNITS, table, before, len(rows))

    def _work_units(self) -> None:
        keys: dict[str, int] = {}
        rows = list(self.reader.rows(WORK_UNITS, keys))
        self.file_keys[WORK_UNITS.name] = keys
        lines = {row[0]: line for line, row in rows}
        self.known_work_units |= keys.keys()
        known_business_units = self.known(BUSINESS_UNITS, self.known_business_units)
        for line, (_code, _name, business, parent) in rows:
            if business not in known_business_units:
                self.problems.add(WORK_UNITS, line, f"ORGGRP_CODE {show(business)} is not a known business unit")
            if parent and parent not in self.known_work_units:
                self.problems.add(WORK_UNITS, line, f"PARENT_ORG_CODE {show(parent)} is not a known work unit")
        table: Table = WorkUnit.__table__  # type: ignore[assignment]
        parents = self._stored_parents(WorkUnit)
        parents.update((code, parent or None) for _line, (code, _name, _business, parent) in rows)
        self._check_cycles(WORK_UNITS, "work-unit", parents, lines)
        if not self.writing:
            return
        before = count_rows(self.connection, table)
        business_ids = self.business_unit_ids
        execute_batches(
            self.connection,
            upsert(self.connection, table, "code"),
            (
                {"code": code, "name": name, "business_unit_id": business_ids[business]}
                for _line, (code, name, business, _parent) in rows
            ),
        )
        self.work_unit_ids = _ids(self.connection, WorkUnit.code, WorkUnit.id)
        self._set_parents(table, self.work_unit_ids, ((code, parent) for _line, (code, _n, _b, parent) in rows))
        self._record(WORK_UNITS, table, before, len(rows))

    def _stored_parents(self, model: type[BusinessUnit] | type[WorkUnit]) -> dict[str, str | None]:
        """Each stored unit's code and its parent's code: the tree an import must not make cyclic."""
        child, parent = aliased(model), aliased(model)
        rows = self.connection.execute(
            select(child.code, parent.code).outerjoin(parent, child.parent_id == parent.id)
        ).all()
        return {code: parent_code for code, parent_code in rows}

    def _check_cycles(self, spec: FileSpec, kind: str, parents: dict[str, str | None], lines: dict[str, int]) -> None:
        """Report each parent cycle that passes through a row of this file once."""
        settled: set[str] = set()
        for start in lines:
            chain: list[str] = []
            on_chain: set[str] = set()
            node: str | None = start
            while node is not None and node not in settled and node not in on_chain:
                chain.append(node)
                on_chain.add(node)
                node = parents.get(node)
            if node is not None and node in on_chain:
                cycle = chain[chain.index(node):]
                at = min(lines[code] for code in cycle if code in lines)
                self.problems.add(spec, at, f"{kind} hierarchy cycle: " + " → ".join([*cycle, node]))
            settled.update(chain)

    def _set_parents(self, table: Table, ids: dict[str, int], pairs: Iterable[tuple[str, str]]) -> None:
        # Parents are set after every row of the file exists, so a child may come before its parent.
        statement = update(table).where(table.c.id == bindparam("b_id")).values(parent_id=bindparam("b_parent_id"))
        execute_batches(
            self.connection,
            statement,
            ({"b_id": ids[code], "b_parent_id": ids[parent] if parent else None} for code, parent in pairs),
        )

    def _record(self, spec: FileSpec, table: Table, before: int, rows: int) -> None:
        inserted = count_rows(self.connection, table) - before
        self.files.append(FileCounts(spec.name, inserted, rows - inserted))

    # -- courses, learners and enrolments: streamed in batches -----------------

    def _courses(self) -> None:
        course_ids = self.course_ids
        writer = table_writer(
            self.connection,
            Course.__table__,  # type: ignore[arg-type]
            ("code", "description"),
            self.course_ids,
            on_change=lambda codes: self.recorder.courses_changed(course_ids[code] for code in codes),
        )
        keys: dict[str, int] = {}
        self.file_keys[COURSES.name] = keys
        rows = ((code, description) for _line, (code, description) in self.reader.rows(COURSES, keys))
        write_rows(writer, rows, self.problems)
        self.known_courses |= keys.keys()
        if self.writing:
            self.course_ids = _ids(self.connection, Course.code, Course.id)
            self.files.append(writer.counts(COURSES))

    def _learners_file(self) -> None:
        writer = table_writer(
            self.connection,
            Learner.__table__,  # type: ignore[arg-type]
            ("lr_id", "first_name", "surname", "email", "work_unit_id"),
            self.learners,
            # Before the rows (and their enrolments' work unit) change: the log keeps where they were.
            on_change=lambda lr_ids: self.recorder.learners_changed(self.learners[lr_id][0] for lr_id in lr_ids),
        )
        moved: list[dict[str, int]] = []
        keys: dict[str, int] = {}
        self.file_keys[LEARNERS.name] = keys
        write_rows(writer, self._learner_rows(keys, moved), self.problems)
        self.known_learners |= keys.keys()
        if not self.writing:
            return
        # The report index reads the enrolment's own copy of the work unit, so a
        # learner's move must reach every enrolment, in enrolments.csv or not.
        enrolments: Table = Enrolment.__table__  # type: ignore[assignment]
        execute_batches(
            self.connection,
            update(enrolments)
            .where(enrolments.c.learner_id == bindparam("b_learner_id"))
            .values(work_unit_id=bindparam("b_work_unit_id")),
            moved,
        )
        self.moved_learners = len(moved)
        self.learners = _learners(self.connection)
        self.files.append(writer.counts(LEARNERS))

    def _learner_rows(self, keys: dict[str, int], moved: list[dict[str, int]]) -> Iterator[tuple[Any, ...]]:
        """Learner rows with their work unit's id; moved collects the stored learners whose work unit changes."""
        existing, work_unit_ids = self.learners, self.work_unit_ids
        known_work_units = self.known(WORK_UNITS, self.known_work_units)
        for line, (lr_id, first_name, surname, email, org_code) in self.reader.rows(LEARNERS, keys):
            work_unit_id = work_unit_ids.get(org_code)
            if work_unit_id is None:
                if org_code not in known_work_units:
                    self.problems.add(LEARNERS, line, f"ORG_CODE {show(org_code)} is not a known work unit")
                continue
            current = existing.get(lr_id)
            if current is not None and current[1] != work_unit_id:
                moved.append({"b_learner_id": current[0], "b_work_unit_id": work_unit_id})
            yield lr_id, first_name, surname, email, work_unit_id

    def _enrolments(self) -> None:
        table: Table = Enrolment.__table__  # type: ignore[assignment]
        writer = table_writer(
            self.connection, table, ENROLMENT_COLUMNS, merge_order=REPORT_ORDER, on_change=self.recorder.enrolments_changing
        )
        rows = (self.reader.directory / ENROLMENTS.name).stat().st_size // BYTES_PER_ENROLMENT
        with indexes_rebuilt_for_bulk_load(self.connection, table, rows):
            write_rows(writer, self._enrolment_rows(), self.problems)
        if self.writing:
            self.files.append(writer.counts(ENROLMENTS))

    def _enrolment_rows(self) -> Iterator[tuple[Any, ...]]:
        """Enrolment rows in ENROLMENT_COLUMNS order, with the learner's and course's ids and work unit."""
        learners, known_learners = self.learners, self.known(LEARNERS, self.known_learners)
        course_ids, known_courses = self.course_ids, self.known(COURSES, self.known_courses)
        problem = self.problems.add
        values = EnrolmentValues(self.problems, self.sqlite)
        dates: dict[str, Any] = {}
        scores: dict[str, int] = {}
        progresses: dict[str, int] = {}
        keys: dict[str, int] = {}
        if self.keep_enrolment_keys:
            self.file_keys[ENROLMENTS.name] = keys
        for line, (sch_id, lr_id, crs_code, status, aedate, score, progress) in self.reader.rows(ENROLMENTS, keys):
            ok = True
            learner = learners.get(lr_id)
            if learner is None and lr_id not in known_learners:
                problem(ENROLMENTS, line, f"LR_ID {show(lr_id)} is not a known learner")
                ok = False
            course_id = course_ids.get(crs_code)
            if course_id is None and crs_code not in known_courses:
                problem(ENROLMENTS, line, f"CRS_CODE {show(crs_code)} is not a known course")
                ok = False
            if status not in _STATUSES:
                problem(ENROLMENTS, line, f"SCH_STATUS {show(status)} is not one of " + ", ".join(ENROLMENT_STATUSES))
                ok = False
            completed_on = None
            if aedate:
                completed_on = parse_once(dates, aedate, line, values.date)
                ok = ok and completed_on is not None
            elif status == COMPLETED:
                problem(ENROLMENTS, line, "SCH_AEDATE is required when SCH_STATUS is COMPLETED")
                ok = False
            hundredths = None
            if score:
                hundredths = parse_once(scores, score, line, values.score)
                ok = ok and hundredths is not None
            elif status == COMPLETED:
                problem(ENROLMENTS, line, "SCH_SCORE is required when SCH_STATUS is COMPLETED")
                ok = False
            if progress:
                percent = parse_once(progresses, progress, line, values.progress)
                ok = ok and percent is not None
                if status == COMPLETED and percent is not None and percent != 100:
                    problem(ENROLMENTS, line, f"SCH_PROGRESS must be 100 when SCH_STATUS is COMPLETED, not {progress}")
                    ok = False
            else:
                percent = 100 if status == COMPLETED else 0
            if not ok or learner is None or course_id is None:
                continue
            # In ENROLMENT_COLUMNS order.
            yield sch_id, learner[0], course_id, status, completed_on, hundredths, percent, learner[1], crs_code, lr_id


def _ids(connection: Connection, code: Any, id_: Any) -> dict[str, int]:
    """Code → id of every stored row of code's table."""
    return dict(connection.execute(select(code, id_)).all())


def _learners(connection: Connection) -> dict[str, tuple[int, int]]:
    """LR_ID → (learner id, work unit id) of every stored learner."""
    rows = connection.execute(select(Learner.lr_id, Learner.id, Learner.work_unit_id))
    return {lr_id: (learner_id, work_unit_id) for lr_id, learner_id, work_unit_id in rows}
