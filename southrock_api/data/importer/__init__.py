"""CSV import: validate every row with FILE:LINE messages and upsert it all in one transaction.

The files are read in dependency order (business units, work units, courses,
learners, enrolments), each once: rows are checked as they stream past and
written in batches of BATCH_ROWS while no problem has been found. The first
problem stops the writing; reading goes on to report up to MAX_PROBLEMS, and the
transaction is rolled back, so a failed (or killed) import leaves nothing behind.
Foreign keys resolve through code → id dictionaries loaded once per table.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import sys
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

import click
from sqlalchemy import Connection, Executable, Insert, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from southrock_api.data.models import INVISIBLE
from southrock_api.data.db import bump_data_version
from southrock_api.data.models import (
    CODE_LENGTH,
    COMPLETED,
    ENROLMENT_STATUSES,
    NAME_LENGTH,
    REPORT_INDEX_COLUMNS,
    BusinessUnit,
    Course,
    Enrolment,
    Learner,
    WorkUnit,
)

MAX_PROBLEMS = 50
BATCH_ROWS = 10_000
# Rebuild the enrolment indexes after the load when the file (estimated from its
# size) holds at least this many rows and at least half as many as the table.
REBUILD_MIN_ROWS = 100_000
BYTES_PER_ENROLMENT = 64
ENROLMENT_COLUMNS = (
    "sch_id", "learner_id", "course_id", "status", "completed_on",
    "score_hundredths", "progress", "work_unit_id", "crs_code", "lr_id",
)
# The report's order (spec §17), which leads the enrolments' widest index.
REPORT_ORDER = REPORT_INDEX_COLUMNS[:4]
# SQLite page cache for the import's connection (negative = KiB): big enough that
# the enrolment indexes of a million-row load stay in memory between batches.
SQLITE_IMPORT_CACHE_KIB = 512 * 1024

# Control characters (C0 except CR/LF, DEL, C1), the Unicode line and paragraph
# separators, lone surrogates (undecodable bytes, via surrogateescape) and anything
# beyond the BMP, which needs 4 bytes in UTF-8 (spec §10).
_BAD_CHARACTERS = "\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\U00010000-\U0010ffff"
_BAD_TEXT = re.compile(f"[{_BAD_CHARACTERS}]")
# In a code, a space at either end or an invisible character would make a key that looks like
# another and is not. A row with none of these characters needs no closer look (one scan);
# _bad_codes says which codes of the others are wrong. A file of codes only (enrolments.csv)
# is scanned once for these and for _BAD_TEXT together.
_SPACE_OR_INVISIBLE = re.compile(f"[\\s{INVISIBLE}]")
_INVISIBLE_CHARACTER = re.compile(f"[{INVISIBLE}]")
_BAD_TEXT_SPACE_OR_INVISIBLE = re.compile(f"[{_BAD_CHARACTERS}\\s{INVISIBLE}]")
# ASCII digits only: \d would take ９ or ٥ too, and int() would read them.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_SCORE = re.compile(r"(\d{1,3})(?:\.(\d{1,2}))?", re.ASCII)
_PROGRESS = re.compile(r"\d{1,3}", re.ASCII)
_STATUSES = frozenset(ENROLMENT_STATUSES)
# What the csv module says when a quoted field runs to the end of the file or past its size limit.
_RAN_ON = frozenset({"unexpected end of data", f"field larger than field limit ({csv.field_size_limit()})"})


class ImportFailed(Exception):
    """The import was rejected; nothing was written. `problems` holds `FILE:LINE: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"import rejected with {len(problems)} problem(s)")
        self.problems = problems


@dataclass(frozen=True)
class FileCounts:
    """How many rows of one file created new records and how many updated existing ones."""

    file: str
    inserted: int
    updated: int


@dataclass
class ImportReport:
    """What an import changed, per file."""

    files: list[FileCounts] = field(default_factory=list)
    moved_learners: int = 0

    def summary(self) -> str:
        """One line: counts per file inserted/updated."""
        parts = [f"{counts.file} {counts.inserted} inserted, {counts.updated} updated" for counts in self.files]
        line = "imported " + "; ".join(parts)
        if self.moved_learners:
            learners = "learner" if self.moved_learners == 1 else "learners"
            line += f" ({self.moved_learners} {learners} moved to another work unit)"
        return line


@dataclass(frozen=True)
class _FileSpec:
    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    # Columns holding names or descriptions; every other column is a code.
    long_columns: tuple[str, ...] = ()

    def limit(self, column: str) -> int:
        return NAME_LENGTH if column in self.long_columns else CODE_LENGTH


BUSINESS_UNITS = _FileSpec(
    "business_units.csv",
    ("ORGGRP_CODE", "ORGGRP_NAME", "PARENT_ORGGRP_CODE"),
    required=("ORGGRP_CODE", "ORGGRP_NAME"),
    long_columns=("ORGGRP_NAME",),
)
WORK_UNITS = _FileSpec(
    "work_units.csv",
    ("ORG_CODE", "ORG_NAME", "ORGGRP_CODE", "PARENT_ORG_CODE"),
    required=("ORG_CODE", "ORG_NAME", "ORGGRP_CODE"),
    long_columns=("ORG_NAME",),
)
COURSES = _FileSpec("courses.csv", ("CRS_CODE", "CRS_DESC"), required=("CRS_CODE", "CRS_DESC"), long_columns=("CRS_DESC",))
LEARNERS = _FileSpec(
    "learners.csv",
    ("LR_ID", "LR_FNAME", "LR_SNAME", "LR_EMAIL", "ORG_CODE"),
    required=("LR_ID", "LR_FNAME", "LR_SNAME", "ORG_CODE"),
    long_columns=("LR_FNAME", "LR_SNAME", "LR_EMAIL"),
)
ENROLMENTS = _FileSpec(
    "enrolments.csv",
    ("SCH_ID", "LR_ID", "CRS_CODE", "SCH_STATUS", "SCH_AEDATE", "SCH_SCORE", "SCH_PROGRESS"),
    required=("SCH_ID", "LR_ID", "CRS_CODE", "SCH_STATUS"),
)
FILES = (BUSINESS_UNITS, WORK_UNITS, COURSES, LEARNERS, ENROLMENTS)


class _Progress(Protocol):
    def update(self, n_steps: int) -> None: ...


class _AnyCode:
    """Contains every code: stands in for the codes of a file that could not be read."""

    def __contains__(self, code: object) -> bool:
        return True


_ANY_CODE = _AnyCode()


class _TooManyProblems(Exception):
    """Raised once MAX_PROBLEMS have been collected: reading on would only add noise."""


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _describe_bad_character(character: str) -> str:
    point = ord(character)
    if 0xDC80 <= point <= 0xDCFF:
        return f"is not valid UTF-8 (byte 0x{point - 0xDC00:02X})"
    if point > 0xFFFF:
        return (
            f"contains U+{point:X}, a character outside the Basic Multilingual Plane "
            "(4 bytes in UTF-8); only characters of up to 3 bytes are supported (spec §10)"
        )
    return f"contains a control character (U+{point:04X})"


class _Import:
    """One import: the open transaction, what is known so far and the problems found."""

    def __init__(self, session: Session, directory: Path, progress: _Progress) -> None:
        self.connection: Connection = session.connection()
        self.directory = directory
        self.progress = progress
        self.problems: list[str] = []
        self.report = ImportReport()
        self.sqlite = self.connection.dialect.name == "sqlite"
        self.business_unit_ids = self._ids(BusinessUnit.code, BusinessUnit.id)
        self.work_unit_ids = self._ids(WorkUnit.code, WorkUnit.id)
        self.course_ids = self._ids(Course.code, Course.id)
        self.learners = self._learners()
        # Codes that exist or are created by this import, for reference checks
        # that still work once a problem has stopped the writing.
        self.known_business_units = set(self.business_unit_ids)
        self.known_work_units = set(self.work_unit_ids)
        self.known_courses = set(self.course_ids)
        self.known_learners: set[str] = set()
        # Files whose header was unusable: what they would define is unknown, so
        # references to their kind of row are not checked (no cascade of errors).
        self.unreadable: set[str] = set()

    # -- reading --------------------------------------------------------------

    def problem(self, spec: _FileSpec, line: int, message: str) -> None:
        self.problems.append(f"{spec.name}:{line}: {message}")
        if len(self.problems) >= MAX_PROBLEMS:
            raise _TooManyProblems

    @property
    def writing(self) -> bool:
        return not self.problems

    def known(self, spec: _FileSpec, codes: set[str]) -> Container[str]:
        """The codes a reference to spec's rows may use."""
        return _ANY_CODE if spec.name in self.unreadable else codes

    def read(self, spec: _FileSpec, keys: dict[str, int]) -> Iterator[tuple[int, Sequence[str]]]:
        """Yield (line, fields in spec order) of each row that passes the checks all files share.

        keys receives the key (first column) and line of every row, rejected
        ones included, so that references to a rejected row are not reported too.
        """
        path = self.directory / spec.name
        # utf-8-sig drops a BOM; surrogateescape turns undecodable bytes into lone
        # surrogates that _BAD_TEXT reports with their line instead of aborting.
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            reader = csv.reader(self._lines(spec, handle), strict=True)
            problems_before = len(self.problems)
            order = self._header(spec, reader)
            if len(self.problems) > problems_before:
                self.unreadable.add(spec.name)
                return
            width = len(spec.columns)
            # Listing the first required column twice keeps itemgetter returning a tuple
            # (given one index it returns the bare string, and `"" in` would then test substrings).
            required_indexes = [spec.columns.index(name) for name in spec.required]
            required = itemgetter(required_indexes[0], *required_indexes)
            shortest_limit = min(spec.limit(name) for name in spec.columns)
            code_indexes = [index for index, name in enumerate(spec.columns) if name not in spec.long_columns]
            # Names hold spaces, so where there are names the codes are looked at on their own.
            suspect = _BAD_TEXT if spec.long_columns else _BAD_TEXT_SPACE_OR_INVISIBLE
            codes = itemgetter(code_indexes[0], *code_indexes) if spec.long_columns else None
            previous = reader.line_num
            # The byte position in the file drives the progress bar.
            binary = cast(BinaryIO, handle.buffer)
            position = binary.tell()
            countdown = BATCH_ROWS
            while True:
                try:
                    for raw in reader:
                        line = previous + 1
                        previous = reader.line_num
                        countdown -= 1
                        if not countdown:
                            countdown = BATCH_ROWS
                            now = binary.tell()
                            self.progress.update(now - position)
                            position = now
                        if len(raw) != width:
                            # Blank lines (a trailing one, say) carry no row.
                            if raw:
                                self.problem(spec, line, f"expected {width} fields, found {len(raw)}")
                            continue
                        row = raw if order is None else order(raw)
                        if row[0]:
                            first = keys.setdefault(row[0], line)
                            if first != line:
                                self.problem(spec, line, f"duplicate {spec.columns[0]} {_show(row[0])} (first on line {first})")
                                continue
                        if previous != line:
                            self.problem(spec, line, f"a value spans lines {line}–{previous}; line breaks are not allowed")
                            continue
                        joined = ",".join(row)
                        if suspect.search(joined):
                            if _BAD_TEXT.search(joined):
                                self._report_bad_text(spec, line, row)
                                continue
                            if self._bad_codes(spec, line, row):
                                continue
                        if codes is not None and _SPACE_OR_INVISIBLE.search("".join(codes(row))):
                            if self._bad_codes(spec, line, row):
                                continue
                        if max(map(len, row)) > shortest_limit and not self._lengths_ok(spec, line, row):
                            continue
                        if "" in required(row):
                            self._report_empty(spec, line, row)
                            continue
                        yield line, row
                    break
                except csv.Error as error:
                    # Reported where the record began: an unclosed quote makes the csv module read on
                    # to the end of the file (or the field limit) before it gives up.
                    began = previous + 1
                    hint = " (a quote opened on this line is never closed?)" if str(error) in _RAN_ON else ""
                    self.problem(spec, began, f"malformed CSV: {error}{hint}")
                    previous = reader.line_num
            self.progress.update(binary.tell() - position)

    def _lines(self, spec: _FileSpec, handle: Iterable[str]) -> Iterator[str]:
        """The file's lines, reporting any that a carriage return alone ends (LF and CRLF only)."""
        # Read with newline="", a lone CR ends a line too: a stray one would split a row in two.
        for number, text in enumerate(handle, start=1):
            if text.endswith("\r"):
                self.problem(spec, number, "a carriage return (CR) alone ends this line; lines must end with LF or CRLF")
            yield text

    def _header(self, spec: _FileSpec, reader: Any) -> Callable[[list[str]], Sequence[str]] | None:
        """Check the header (reporting what is wrong); return None for spec order, else a reordering getter."""
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            self.problem(spec, 1, "the file is empty; expected the header " + ",".join(spec.columns))
            return None
        except csv.Error as error:
            self.problem(spec, 1, f"malformed CSV: {error}")
            return None
        problems_before = len(self.problems)
        for name in header:
            match = _BAD_TEXT.search(name)
            if match:
                self.problem(spec, 1, f"header {_describe_bad_character(match.group())}")
        missing = [name for name in spec.columns if name not in header]
        unknown = [name for name in header if name not in spec.columns]
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if missing:
            self.problem(spec, 1, "missing column(s) " + ", ".join(missing) + "; expected " + ",".join(spec.columns))
        if unknown:
            self.problem(spec, 1, "unknown column(s) " + ", ".join(_show(name) for name in unknown))
        if duplicated:
            self.problem(spec, 1, "repeated column(s) " + ", ".join(duplicated))
        if len(self.problems) > problems_before:
            return None
        if tuple(header) == spec.columns:
            # The usual case: rows are already in spec order, no reordering per row.
            return None
        return itemgetter(*(header.index(name) for name in spec.columns))

    def _report_bad_text(self, spec: _FileSpec, line: int, row: Sequence[str]) -> None:
        for name, value in zip(spec.columns, row):
            match = _BAD_TEXT.search(value)
            if match:
                self.problem(spec, line, f"{name} {_describe_bad_character(match.group())}")

    def _bad_codes(self, spec: _FileSpec, line: int, row: Sequence[str]) -> bool:
        """Report codes with a space at either end or an invisible character; whether there were any."""
        found = False
        for name, value in zip(spec.columns, row):
            if name in spec.long_columns:
                continue
            if value != value.strip():
                self.problem(spec, line, f"{name} {_show(value)} starts or ends with a space")
                found = True
            invisible = _INVISIBLE_CHARACTER.search(value)
            if invisible:
                self.problem(spec, line, f"{name} {_show(value)} contains an invisible character (U+{ord(invisible.group()):04X})")
                found = True
        return found

    def _lengths_ok(self, spec: _FileSpec, line: int, row: Sequence[str]) -> bool:
        ok = True
        for name, value in zip(spec.columns, row):
            if len(value) > spec.limit(name):
                self.problem(spec, line, f"{name} is longer than {spec.limit(name)} characters ({len(value)})")
                ok = False
        return ok

    def _report_empty(self, spec: _FileSpec, line: int, row: Sequence[str]) -> None:
        for name, value in zip(spec.columns, row):
            if name in spec.required and not value:
                self.problem(spec, line, f"{name} is empty")

    def check_cycles(self, spec: _FileSpec, kind: str, parents: dict[str, str | None], lines: dict[str, int]) -> None:
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
                self.problem(spec, at, f"{kind} hierarchy cycle: " + " → ".join([*cycle, node]))
            settled.update(chain)

    # -- database -------------------------------------------------------------

    def _ids(self, code: Any, id_: Any) -> dict[str, int]:
        return dict(self.connection.execute(select(code, id_)).all())

    def _learners(self) -> dict[str, tuple[int, int]]:
        rows = self.connection.execute(select(Learner.lr_id, Learner.id, Learner.work_unit_id))
        return {lr_id: (learner_id, work_unit_id) for lr_id, learner_id, work_unit_id in rows}

    def count(self, table: Table) -> int:
        return int(self.connection.scalar(select(func.count()).select_from(table)) or 0)

    def upsert(self, table: Table, key: str) -> Insert:
        """INSERT … ON CONFLICT (key) DO UPDATE every other column, for SQLite or PostgreSQL."""
        dialect = sqlite if self.sqlite else postgresql
        statement = dialect.insert(table)
        updates = {column.name: statement.excluded[column.name] for column in table.columns if column.name not in (key, "id")}
        return statement.on_conflict_do_update(index_elements=[key], set_=updates)

    def execute_batches(self, statement: Executable, rows: Iterable[dict[str, Any]]) -> None:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                self.connection.execute(statement, batch)
                batch = []
        if batch:
            self.connection.execute(statement, batch)

    def record(self, spec: _FileSpec, table: Table, before: int, rows: int) -> None:
        inserted = self.count(table) - before
        self.report.files.append(FileCounts(spec.name, inserted, rows - inserted))

    # -- the five files -------------------------------------------------------

    def writer(
        self,
        table: Table,
        columns: tuple[str, ...],
        existing_keys: Container[str] | None = None,
        merge_order: tuple[str, ...] = (),
    ) -> _TableWriter:
        """A batch writer for table suited to the database."""
        if self.sqlite:
            return _SqliteWriter(self, table, columns, existing_keys)
        return _PostgresWriter(self, table, columns, merge_order)

    def present(self, spec: _FileSpec) -> bool:
        return (self.directory / spec.name).is_file()

    def business_units(self) -> None:
        if not self.present(BUSINESS_UNITS):
            return
        keys: dict[str, int] = {}
        rows = list(self.read(BUSINESS_UNITS, keys))
        lines = {row[0]: line for line, row in rows}
        self.known_business_units |= keys.keys()
        for line, (_code, _name, parent) in rows:
            if parent and parent not in self.known_business_units:
                self.problem(BUSINESS_UNITS, line, f"PARENT_ORGGRP_CODE {_show(parent)} is not a known business unit")
        table: Table = BusinessUnit.__table__  # type: ignore[assignment]
        parents = self._stored_parents(BusinessUnit)
        parents.update((code, parent or None) for _line, (code, _name, parent) in rows)
        self.check_cycles(BUSINESS_UNITS, "business-unit", parents, lines)
        if not self.writing:
            return
        before = self.count(table)
        self.execute_batches(
            self.upsert(table, "code"),
            ({"code": code, "name": name} for _line, (code, name, _parent) in rows),
        )
        self.business_unit_ids = self._ids(BusinessUnit.code, BusinessUnit.id)
        self._set_parents(table, self.business_unit_ids, ((code, parent) for _line, (code, _name, parent) in rows))
        self.record(BUSINESS_UNITS, table, before, len(rows))

    def _stored_parents(self, model: type[BusinessUnit] | type[WorkUnit]) -> dict[str, str | None]:
        """Each stored unit's code and its parent's code: the tree an import must not make cyclic."""
        child, parent = aliased(model), aliased(model)
        rows = self.connection.execute(
            select(child.code, parent.code).outerjoin(parent, child.parent_id == parent.id)
        ).all()
        return {code: parent_code for code, parent_code in rows}

    def _set_parents(self, table: Table, ids: dict[str, int], pairs: Iterable[tuple[str, str]]) -> None:
        # Parents are set after every row of the file exists, so a child may come before its parent.
        statement = update(table).where(table.c.id == bindparam("b_id")).values(parent_id=bindparam("b_parent_id"))
        self.execute_batches(
            statement, ({"b_id": ids[code], "b_parent_id": ids[parent] if parent else None} for code, parent in pairs)
        )

    def work_units(self) -> None:
        if not self.present(WORK_UNITS):
            return
        keys: dict[str, int] = {}
        rows = list(self.read(WORK_UNITS, keys))
        lines = {row[0]: line for line, row in rows}
        self.known_work_units |= keys.keys()
        known_business_units = self.known(BUSINESS_UNITS, self.known_business_units)
        for line, (_code, _name, business, parent) in rows:
            if business not in known_business_units:
                self.problem(WORK_UNITS, line, f"ORGGRP_CODE {_show(business)} is not a known business unit")
            if parent and parent not in self.known_work_units:
                self.problem(WORK_UNITS, line, f"PARENT_ORG_CODE {_show(parent)} is not a known work unit")
        table: Table = WorkUnit.__table__  # type: ignore[assignment]
        parents = self._stored_parents(WorkUnit)
        parents.update((code, parent or None) for _line, (code, _name, _business, parent) in rows)
        self.check_cycles(WORK_UNITS, "work-unit", parents, lines)
        if not self.writing:
            return
        before = self.count(table)
        business_ids = self.business_unit_ids
        self.execute_batches(
            self.upsert(table, "code"),
            (
                {"code": code, "name": name, "business_unit_id": business_ids[business]}
                for _line, (code, name, business, _parent) in rows
            ),
        )
        self.work_unit_ids = self._ids(WorkUnit.code, WorkUnit.id)
        self._set_parents(table, self.work_unit_ids, ((code, parent) for _line, (code, _n, _b, parent) in rows))
        self.record(WORK_UNITS, table, before, len(rows))

    def courses(self) -> None:
        if not self.present(COURSES):
            return
        writer = self.writer(Course.__table__, ("code", "description"), self.course_ids)  # type: ignore[arg-type]
        batch: list[tuple[Any, ...]] = []
        keys: dict[str, int] = {}
        for _line, (code, description) in self.read(COURSES, keys):
            batch.append((code, description))
            if len(batch) == BATCH_ROWS:
                writer.write(batch)
        writer.write(batch)
        writer.finish()
        self.known_courses |= keys.keys()
        if self.writing:
            self.course_ids = self._ids(Course.code, Course.id)
            self.report.files.append(writer.counts(COURSES))

    def learners_file(self) -> None:
        if not self.present(LEARNERS):
            return
        existing, work_unit_ids = self.learners, self.work_unit_ids
        known_work_units = self.known(WORK_UNITS, self.known_work_units)
        writer = self.writer(
            Learner.__table__, ("lr_id", "first_name", "surname", "email", "work_unit_id"), existing  # type: ignore[arg-type]
        )
        batch: list[tuple[Any, ...]] = []
        moved: list[dict[str, int]] = []
        keys: dict[str, int] = {}
        for line, (lr_id, first_name, surname, email, org_code) in self.read(LEARNERS, keys):
            work_unit_id = work_unit_ids.get(org_code)
            if work_unit_id is None:
                if org_code not in known_work_units:
                    self.problem(LEARNERS, line, f"ORG_CODE {_show(org_code)} is not a known work unit")
                continue
            current = existing.get(lr_id)
            if current is not None and current[1] != work_unit_id:
                moved.append({"b_learner_id": current[0], "b_work_unit_id": work_unit_id})
            batch.append((lr_id, first_name, surname, email, work_unit_id))
            if len(batch) == BATCH_ROWS:
                writer.write(batch)
        writer.write(batch)
        writer.finish()
        self.known_learners |= keys.keys()
        if not self.writing:
            return
        # The report index reads the enrolment's own copy of the work unit, so a
        # learner's move must reach every enrolment, in enrolments.csv or not.
        enrolments: Table = Enrolment.__table__  # type: ignore[assignment]
        self.execute_batches(
            update(enrolments)
            .where(enrolments.c.learner_id == bindparam("b_learner_id"))
            .values(work_unit_id=bindparam("b_work_unit_id")),
            moved,
        )
        self.report.moved_learners = len(moved)
        self.learners = self._learners()
        self.report.files.append(writer.counts(LEARNERS))

    def enrolments(self) -> None:
        if not self.present(ENROLMENTS):
            return
        table: Table = Enrolment.__table__  # type: ignore[assignment]
        path = self.directory / ENROLMENTS.name
        writer = self.writer(table, ENROLMENT_COLUMNS, merge_order=REPORT_ORDER)
        # A bulk load into SQLite is much faster with the secondary indexes built
        # once at the end than updated row by row; the DDL is part of the
        # transaction, so readers and a rollback still see the old indexes.
        # (Not on PostgreSQL: DROP INDEX would lock readers out.)
        rebuild = self.sqlite and path.stat().st_size // BYTES_PER_ENROLMENT >= max(REBUILD_MIN_ROWS, self.count(table) // 2)
        with _secondary_indexes_dropped(self.connection, table.name) if rebuild else nullcontext():
            self._enrolment_rows(writer)
        if self.writing:
            self.report.files.append(writer.counts(ENROLMENTS))

    def _enrolment_rows(self, writer: _TableWriter) -> None:
        batch: list[tuple[Any, ...]] = []
        learners, known_learners = self.learners, self.known(LEARNERS, self.known_learners)
        course_ids, known_courses = self.course_ids, self.known(COURSES, self.known_courses)
        dates: dict[str, Any] = {}
        scores: dict[str, int] = {}
        progresses: dict[str, int] = {}
        for line, (sch_id, lr_id, crs_code, status, aedate, score, progress) in self.read(ENROLMENTS, {}):
            ok = True
            learner = learners.get(lr_id)
            if learner is None and lr_id not in known_learners:
                self.problem(ENROLMENTS, line, f"LR_ID {_show(lr_id)} is not a known learner")
                ok = False
            course_id = course_ids.get(crs_code)
            if course_id is None and crs_code not in known_courses:
                self.problem(ENROLMENTS, line, f"CRS_CODE {_show(crs_code)} is not a known course")
                ok = False
            if status not in _STATUSES:
                self.problem(ENROLMENTS, line, f"SCH_STATUS {_show(status)} is not one of " + ", ".join(ENROLMENT_STATUSES))
                ok = False
            completed_on = None
            if aedate:
                completed_on = _parse_once(dates, aedate, line, self._date)
                ok = ok and completed_on is not None
            elif status == COMPLETED:
                self.problem(ENROLMENTS, line, "SCH_AEDATE is required when SCH_STATUS is COMPLETED")
                ok = False
            hundredths = None
            if score:
                hundredths = _parse_once(scores, score, line, self._score)
                ok = ok and hundredths is not None
            elif status == COMPLETED:
                self.problem(ENROLMENTS, line, "SCH_SCORE is required when SCH_STATUS is COMPLETED")
                ok = False
            if progress:
                percent = _parse_once(progresses, progress, line, self._progress)
                ok = ok and percent is not None
                if status == COMPLETED and percent is not None and percent != 100:
                    self.problem(ENROLMENTS, line, f"SCH_PROGRESS must be 100 when SCH_STATUS is COMPLETED, not {progress}")
                    ok = False
            else:
                percent = 100 if status == COMPLETED else 0
            if not ok or learner is None or course_id is None:
                continue
            # In ENROLMENT_COLUMNS order.
            batch.append(
                (sch_id, learner[0], course_id, status, completed_on, hundredths, percent, learner[1], crs_code, lr_id)
            )
            if len(batch) == BATCH_ROWS:
                writer.write(batch)
        writer.write(batch)
        writer.finish()

    def _date(self, line: int, text: str) -> Any:
        value = None
        if _DATE.fullmatch(text):
            try:
                value = dt.date.fromisoformat(text)
            except ValueError:
                pass
        if value is None:
            self.problem(ENROLMENTS, line, f"SCH_AEDATE {_show(text)} is not a date in the form YYYY-MM-DD")
            return None
        return text if self.sqlite else value

    def _score(self, line: int, text: str) -> int | None:
        match = _SCORE.fullmatch(text)
        if match is None:
            self.problem(ENROLMENTS, line, f"SCH_SCORE {_show(text)} is not a number with at most two decimals")
            return None
        # Integer arithmetic on the digits: exact, no float rounding.
        hundredths = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
        if hundredths > 10000:
            self.problem(ENROLMENTS, line, f"SCH_SCORE {text} is outside 0–100")
            return None
        return hundredths

    def _progress(self, line: int, text: str) -> int | None:
        if not _PROGRESS.fullmatch(text) or int(text) > 100:
            self.problem(ENROLMENTS, line, f"SCH_PROGRESS {_show(text)} is not a whole number from 0 to 100")
            return None
        return int(text)

    def run(self) -> ImportReport:
        self.business_units()
        self.work_units()
        self.courses()
        self.learners_file()
        self.enrolments()
        return self.report


class _TableWriter:
    """Writes batches of row tuples (in `columns` order, key first) and counts what they did."""

    def __init__(self, importer: _Import, table: Table, columns: tuple[str, ...]) -> None:
        self.importer = importer
        self.table = table
        self.columns = columns
        self.connection = importer.connection
        self.inserted = 0
        self.updated = 0

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """Write the batch (unless a problem has stopped writing) and empty it."""
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the writes once every batch is written."""

    def counts(self, spec: _FileSpec) -> FileCounts:
        """The file's inserted and updated counts."""
        return FileCounts(spec.name, self.inserted, self.updated)


class _SqliteWriter(_TableWriter):
    """SQLite: each batch goes straight in, a plain INSERT for new keys and the upsert for existing ones.

    SQLite runs an upsert on a table with foreign keys through a statement
    journal per row, several times slower than a plain INSERT; most rows of a
    large load are new, so they take the fast path. Both statements are
    compiled once and run with exec_driver_sql, so the rows reach the driver's
    executemany as they are, without per-row parameter processing.
    """

    def __init__(
        self, importer: _Import, table: Table, columns: tuple[str, ...], existing_keys: Container[str] | None
    ) -> None:
        super().__init__(importer, table, columns)
        # Without a dictionary of the keys already stored, ask the database per batch.
        self.existing_keys = existing_keys
        self.rows_before = importer.count(table) if existing_keys is None else 0
        self.insert_sql = self._compile(insert(table))
        self.upsert_sql = self._compile(importer.upsert(table, columns[0]))

    def _compile(self, statement: Insert) -> str:
        compiled = statement.compile(dialect=self.connection.dialect, column_keys=list(self.columns))
        if tuple(compiled.positiontup or ()) != self.columns:
            raise RuntimeError(f"{self.table.name} parameters are in the order {compiled.positiontup}, not {self.columns}")
        return str(compiled)

    def _stored(self, batch: list[tuple[Any, ...]]) -> set[str]:
        if self.existing_keys is not None:
            return {row[0] for row in batch if row[0] in self.existing_keys}
        if not self.rows_before:
            return set()
        key = self.table.c[self.columns[0]]
        return set(self.connection.scalars(select(key).where(key.in_([row[0] for row in batch]))))

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """Write the batch (unless a problem has stopped writing) and empty it."""
        if batch and self.importer.writing:
            stored = self._stored(batch)
            new = [row for row in batch if row[0] not in stored] if stored else batch
            if new:
                self.connection.exec_driver_sql(self.insert_sql, new)
            if stored:
                self.connection.exec_driver_sql(self.upsert_sql, [row for row in batch if row[0] in stored])
            self.inserted += len(new)
            self.updated += len(stored)
        batch.clear()


class _PostgresWriter(_TableWriter):
    """PostgreSQL: COPY each batch into a staging table, then one INSERT … SELECT … ON CONFLICT.

    Even pipelined, executemany runs one statement per row on the server; COPY
    and a single set-based upsert load a million rows several times faster.
    """

    def __init__(self, importer: _Import, table: Table, columns: tuple[str, ...], merge_order: tuple[str, ...]) -> None:
        super().__init__(importer, table, columns)
        # Merging in the order of the table's widest index turns that index's
        # inserts into appends instead of random page writes (~20% at 1.2M rows).
        self.order_by = f" ORDER BY {', '.join(merge_order)}" if merge_order else ""
        self.staging = f"import_{table.name}"
        names = ", ".join(columns)
        # Temporary, so it vanishes with the session; dropped in finish() so a
        # second import in the same transaction (tests) can create it again.
        self.connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {self.staging} AS SELECT {names} FROM {table.name} WITH NO DATA"
        )
        self.copy_sql = f"COPY {self.staging} ({names}) FROM STDIN"
        self.staged = 0

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """Stage the batch (unless a problem has stopped writing) and empty it."""
        if batch and self.importer.writing:
            with self.connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
                with cursor.copy(self.copy_sql) as copy:
                    for row in batch:
                        copy.write_row(row)
            self.staged += len(batch)
        batch.clear()

    def finish(self) -> None:
        """Upsert the staged rows into the table in one statement."""
        if not self.importer.writing:
            return
        table, key, names = self.table.name, self.columns[0], ", ".join(self.columns)
        self.updated = int(
            self.connection.exec_driver_sql(f"SELECT count(*) FROM {self.staging} JOIN {table} USING ({key})").scalar_one()
        )
        self.inserted = self.staged - self.updated
        updates = ", ".join(f"{name} = excluded.{name}" for name in self.columns[1:])
        self.connection.exec_driver_sql(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {self.staging}{self.order_by} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
        self.connection.exec_driver_sql(f"DROP TABLE {self.staging}")


@contextmanager
def _secondary_indexes_dropped(connection: Connection, table: str) -> Iterator[None]:
    # sqlite_master keeps each index's CREATE statement verbatim, so the rebuild
    # matches the migration exactly; UNIQUE constraints' indexes (sql IS NULL) stay.
    indexes = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
    ).all()
    for name, _sql in indexes:
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    yield
    for _name, sql in indexes:
        connection.exec_driver_sql(sql)


@contextmanager
def _sqlite_import_cache(connection: Connection) -> Iterator[None]:
    if connection.dialect.name != "sqlite":
        yield
        return
    previous = int(connection.exec_driver_sql("PRAGMA cache_size").scalar_one())
    connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size={previous}")


def import_directory(session: Session, directory: Path, progress: bool) -> ImportReport:
    """Validate and load the CSV files in directory in one transaction; raise ImportFailed on any problem."""
    present = [directory / spec.name for spec in FILES if (directory / spec.name).is_file()]
    if not present:
        raise ImportFailed([f"{directory}: none of " + ", ".join(spec.name for spec in FILES) + " found"])
    total = sum(path.stat().st_size for path in present)
    try:
        with click.progressbar(length=total, label="Importing", file=sys.stderr, hidden=not progress) as bar:
            importer = _Import(session, directory, bar)
            with _sqlite_import_cache(importer.connection):
                try:
                    importer.run()
                except _TooManyProblems:
                    pass
        if importer.problems:
            raise ImportFailed(importer.problems)
        bump_data_version(session)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return importer.report


def _parse_once(cache: dict[str, Any], raw: str, line: int, parse: Callable[[int, str], Any]) -> Any:
    """Parse a repeated field value once per import (dates and scores repeat a great deal)."""
    value = cache.get(raw)
    if value is None:
        value = parse(line, raw)
        if value is not None:
            cache[raw] = value
    return value
