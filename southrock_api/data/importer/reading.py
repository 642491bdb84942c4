"""Reading one CSV file: header, shape, character, length and required checks, reported as FILE:LINE problems."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, TextIO, TypeAlias

from southrock_api.data.importer.formats import FileSpec
from southrock_api.data.importer.problems import Problems, show
from southrock_api.data.models import INVISIBLE

# How often (in lines) the bytes read so far are reported to the progress callback.
PROGRESS_LINES = 10_000

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
# What the csv module says when a quoted field runs to the end of the file or past its size limit.
_RAN_ON = frozenset({"unexpected end of data", f"field larger than field limit ({csv.field_size_limit()})"})

# Puts a row's fields in spec order; None where the header already is in spec order.
Reorder: TypeAlias = Callable[[list[str]], Sequence[str]]
# One row's checks: the row in spec order if it passes them, else None (its problems reported).
RowCheck: TypeAlias = Callable[[int, int, list[str]], Sequence[str] | None]


class CsvReader:
    """Reads the import files of one directory, reporting problems and the bytes read as it goes."""

    def __init__(self, directory: Path, problems: Problems, on_progress: Callable[[int], None] | None) -> None:
        self.directory = directory
        self.problems = problems
        self.on_progress = on_progress
        # Files whose header was unusable: what they would define is unknown, so
        # references to their kind of row are not checked (no cascade of errors).
        self.unreadable: set[str] = set()
        self._reported = 0

    def present(self, spec: FileSpec) -> bool:
        """Whether spec's file is in the directory."""
        return (self.directory / spec.name).is_file()

    def rows(self, spec: FileSpec, keys: dict[str, int]) -> Iterator[tuple[int, Sequence[str]]]:
        """Yield (line, fields in spec order) of each row that passes the checks all files share."""
        # keys receives the key (first column) and line of every row, rejected
        # ones included, so that references to a rejected row are not reported too.
        # utf-8-sig drops a BOM; surrogateescape turns undecodable bytes into lone
        # surrogates that _BAD_TEXT reports with their line instead of aborting.
        with (self.directory / spec.name).open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            self._reported = 0
            reader = csv.reader(self._lines(spec, handle), strict=True)
            problems_before = len(self.problems.found)
            order = self._header(spec, reader)
            if len(self.problems.found) > problems_before:
                self.unreadable.add(spec.name)
            else:
                yield from self._records(spec, reader, _row_check(spec, self.problems, order, keys))
            # The whole file counts as read, so the progress adds up to the files' size.
            self._progress(os.fstat(handle.fileno()).st_size)

    def _progress(self, position: int) -> None:
        if self.on_progress is not None and position > self._reported:
            self.on_progress(position - self._reported)
            self._reported = position

    def _lines(self, spec: FileSpec, handle: TextIO) -> Iterator[str]:
        """The file's lines, reporting any that a carriage return alone ends (LF and CRLF only)."""
        # The byte position in the file drives the progress (the buffer reads a little ahead).
        binary = handle.buffer
        # Read with newline="", a lone CR ends a line too: a stray one would split a row in two.
        for number, text in enumerate(handle, start=1):
            if text.endswith("\r"):
                self.problems.add(spec, number, "a carriage return (CR) alone ends this line; lines must end with LF or CRLF")
            if not number % PROGRESS_LINES:
                self._progress(binary.tell())
            yield text

    def _header(self, spec: FileSpec, reader: Any) -> Reorder | None:
        """Check the header (reporting what is wrong); return None for spec order, else a reordering getter."""
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            self.problems.add(spec, 1, "the file is empty; expected the header " + ",".join(spec.columns))
            return None
        except csv.Error as error:
            self.problems.add(spec, 1, f"malformed CSV: {error}")
            return None
        problems_before = len(self.problems.found)
        for name in header:
            match = _BAD_TEXT.search(name)
            if match:
                self.problems.add(spec, 1, f"header {_describe_bad_character(match.group())}")
        missing = [name for name in spec.columns if name not in header]
        unknown = [name for name in header if name not in spec.columns]
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if missing:
            self.problems.add(spec, 1, "missing column(s) " + ", ".join(missing) + "; expected " + ",".join(spec.columns))
        if unknown:
            self.problems.add(spec, 1, "unknown column(s) " + ", ".join(show(name) for name in unknown))
        if duplicated:
            self.problems.add(spec, 1, "repeated column(s) " + ", ".join(duplicated))
        if len(self.problems.found) > problems_before:
            return None
        if tuple(header) == spec.columns:
            # The usual case: rows are already in spec order, no reordering per row.
            return None
        return itemgetter(*(header.index(name) for name in spec.columns))

    def _records(self, spec: FileSpec, reader: Any, check: RowCheck) -> Iterator[tuple[int, Sequence[str]]]:
        """(line, row) of each record that passes check; malformed CSV is reported on the line its record began."""
        previous = reader.line_num
        while True:
            try:
                for raw in reader:
                    line = previous + 1
                    previous = reader.line_num
                    row = check(line, previous, raw)
                    if row is not None:
                        yield line, row
                return
            except csv.Error as error:
                # Reported where the record began: an unclosed quote makes the csv module read on
                # to the end of the file (or the field limit) before it gives up.
                hint = " (a quote opened on this line is never closed?)" if str(error) in _RAN_ON else ""
                self.problems.add(spec, previous + 1, f"malformed CSV: {error}{hint}")
                previous = reader.line_num


def _row_check(spec: FileSpec, problems: Problems, order: Reorder | None, keys: dict[str, int]) -> RowCheck:
    """The checks every row of spec's file must pass, as one function of (first line, last line, fields)."""
    problem = problems.add
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

    # Each check is one cheap test on the whole row; only a row that fails one is looked at field by field.
    def check(line: int, end: int, raw: list[str]) -> Sequence[str] | None:
        if len(raw) != width:
            # Blank lines (a trailing one, say) carry no row.
            if raw:
                problem(spec, line, f"expected {width} fields, found {len(raw)}")
            return None
        row = raw if order is None else order(raw)
        if row[0] and (first := keys.setdefault(row[0], line)) != line:
            problem(spec, line, f"duplicate {spec.columns[0]} {show(row[0])} (first on line {first})")
            return None
        if end != line:
            problem(spec, line, f"a value spans lines {line}–{end}; line breaks are not allowed")
            return None
        joined = ",".join(row)
        if suspect.search(joined) and _bad_characters(problems, spec, line, row, joined):
            return None
        if codes is not None and _SPACE_OR_INVISIBLE.search("".join(codes(row))) and _bad_codes(problems, spec, line, row):
            return None
        if max(map(len, row)) > shortest_limit and _too_long(problems, spec, line, row):
            return None
        if "" in required(row):
            _report_empty(problems, spec, line, row)
            return None
        return row

    return check


def _bad_characters(problems: Problems, spec: FileSpec, line: int, row: Sequence[str], joined: str) -> bool:
    """Report forbidden characters, or else malformed codes; whether there were any."""
    if not _BAD_TEXT.search(joined):
        return _bad_codes(problems, spec, line, row)
    for name, value in zip(spec.columns, row):
        match = _BAD_TEXT.search(value)
        if match:
            problems.add(spec, line, f"{name} {_describe_bad_character(match.group())}")
    return True


def _bad_codes(problems: Problems, spec: FileSpec, line: int, row: Sequence[str]) -> bool:
    """Report codes with a space at either end or an invisible character; whether there were any."""
    found = False
    for name, value in zip(spec.columns, row):
        if name in spec.long_columns:
            continue
        if value != value.strip():
            problems.add(spec, line, f"{name} {show(value)} starts or ends with a space")
            found = True
        invisible = _INVISIBLE_CHARACTER.search(value)
        if invisible:
            problems.add(spec, line, f"{name} {show(value)} contains an invisible character (U+{ord(invisible.group()):04X})")
            found = True
    return found


def _too_long(problems: Problems, spec: FileSpec, line: int, row: Sequence[str]) -> bool:
    """Report values longer than their column allows; whether there were any."""
    found = False
    for name, value in zip(spec.columns, row):
        if len(value) > spec.limit(name):
            problems.add(spec, line, f"{name} is longer than {spec.limit(name)} characters ({len(value)})")
            found = True
    return found


def _report_empty(problems: Problems, spec: FileSpec, line: int, row: Sequence[str]) -> None:
    for name, value in zip(spec.columns, row):
        if name in spec.required and not value:
            problems.add(spec, line, f"{name} is empty")


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
