"""Query parameters: the raw query string decoded strictly (spec §10), then loaded by marshmallow (spec §17.1.2)."""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from southrock_api.api.errors import BAD_PARAMETER, ApiError
from southrock_api.data.models import INVISIBLE

# spec §12 and §17.1.2
DEFAULT_LIMIT = 200
MAX_LIMIT = 500
DEFAULT_START = 1
MAX_START = 2**31 - 1
MAX_ORGCODES = 1000
MAX_VALUE_LENGTH = 256
# GET /api/v1/enrolments/changes: change objects per page.
DEFAULT_CHANGES_LIMIT = 500
MAX_CHANGES_LIMIT = 5000

MAX_QUERY_PAIRS = 2000
MAX_QUERY_BYTES = 64 * 1024
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# spec §10: only characters UTF-8 encodes in three bytes or fewer.
MAX_CODE_POINT = 0xFFFF
# Control characters (C0, DEL, C1), and every code point above MAX_CODE_POINT: the first one found is reported.
_REFUSED_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\U00010000-\U0010FFFF]")


def _bad(name: str, expected: str) -> ApiError:
    return ApiError(BAD_PARAMETER, f"Invalid parameter found: {name}, expected {expected}")


def _decode(raw: str, name: str) -> str:
    if raw.isascii() and raw.isprintable() and "%" not in raw and "+" not in raw:
        return raw  # nothing to decode, nothing to refuse: most names and values
    if _BAD_ESCAPE.search(raw):
        raise _bad(name, "valid percent-encoding")
    try:
        value = unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(name, "UTF-8 text") from None
    refused = _REFUSED_CHARACTER.search(value)
    if refused is not None:
        if ord(refused.group()) > MAX_CODE_POINT:
            raise _bad(name, "characters encodable in three UTF-8 bytes (spec §10)")
        raise _bad(name, "printable characters")
    return value


def parse_query(query_string: bytes) -> list[tuple[str, str]]:
    """Decode a raw query string strictly into (name, value) pairs, in order."""
    if len(query_string) > MAX_QUERY_BYTES:
        raise _bad("query string", f"at most {MAX_QUERY_BYTES} bytes")
    try:
        text = query_string.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("query string", "UTF-8 text") from None
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = _decode(raw_name, "query string")
        pairs.append((name, _decode(raw_value, name)))
        if len(pairs) > MAX_QUERY_PAIRS:
            raise _bad("query string", f"at most {MAX_QUERY_PAIRS} parameters")
    return pairs


@functools.lru_cache(maxsize=8)
def _by_folded_name(known: frozenset[str]) -> dict[str, str]:
    return {name.casefold(): name for name in known}


# What a client's library or a copy and paste can add to a parameter's name: array brackets
# (`ORGCODES[]`, `ORGCODES[0]`, as qs and axios write lists), spaces and invisible characters.
_DECORATION = re.compile(f"\\[[^\\]]*\\]$|[\\s{INVISIBLE}]")


def _meant(name: str, known: frozenset[str]) -> str | None:
    """The known parameter an unknown name was meant to be, if it is one in disguise."""
    return _by_folded_name(known).get(_DECORATION.sub("", name).casefold())


def to_arguments(
    pairs: list[tuple[str, str]], repeatable: frozenset[str], known: frozenset[str]
) -> dict[str, object]:
    """Group the known parameters for the schema: lists for repeatable names, one value otherwise.

    Unknown names are left out, repeated or not (spec §5.1c: they are ignored). A known name in
    other letter case (`orgcodes`, `Limit`), with array brackets (`ORGCODES[]`) or with spaces or
    invisible characters is refused instead: ignoring a filter the client meant to send would
    hand it a wider result than it asked for.
    """
    arguments: dict[str, object] = {}
    for name, value in pairs:
        if name in repeatable:
            arguments.setdefault(name, [])
            arguments[name].append(value)  # type: ignore[attr-defined]
        elif name not in known:
            meant = _meant(name, known)
            if meant is not None:
                repeat = f", repeated for each value ({meant}=A&{meant}=B)" if meant in repeatable else ""
                raise _bad(name, f"{meant}{repeat} (parameter names are exact: case-sensitive, no brackets)")
            continue
        elif name in arguments:
            raise _bad(name, "a single value")
        else:
            arguments[name] = value
    return arguments


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]{1,10}")


class StrictDate(fields.Date):
    """A date written exactly as YYYY-MM-DD (spec §9c), nothing looser."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise self.make_error("invalid")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise self.make_error("invalid") from None


class StrictInteger(fields.Integer):
    """A plain decimal number: no sign, spaces, underscores or exponent."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            raise self.make_error("invalid")
        return int(value)


class EnrolmentQuerySchema(Schema):
    """Query parameters of GET /api/v1/enrolments (spec §17.1.2)."""

    class Meta:
        # spec §5.1c: parameters added later must not break older servers' clients.
        unknown = EXCLUDE

    ORGCODES = fields.List(
        fields.String(validate=validate.Length(min=1, max=MAX_VALUE_LENGTH)),
        validate=validate.Length(max=MAX_ORGCODES),
        load_default=None,
    )
    SDATE = StrictDate(load_default=None)
    EDATE = StrictDate(load_default=None)
    start = StrictInteger(validate=validate.Range(min=1, max=MAX_START), load_default=DEFAULT_START)
    limit = StrictInteger(validate=validate.Range(min=1, max=MAX_LIMIT), load_default=DEFAULT_LIMIT)

    @validates_schema
    def _range_in_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("SDATE") and data.get("EDATE") and data["SDATE"] > data["EDATE"]:
            raise ValidationError("EDATE before SDATE", field_name="EDATE")


class UnitQuerySchema(Schema):
    """Query parameters of GET /api/v1/units: the paging of spec §12, as on the enrolments."""

    class Meta:
        unknown = EXCLUDE  # spec §5.1c, as for the enrolments

    start = StrictInteger(validate=validate.Range(min=1, max=MAX_START), load_default=DEFAULT_START)
    limit = StrictInteger(validate=validate.Range(min=1, max=MAX_LIMIT), load_default=DEFAULT_LIMIT)


# The snapshot's filters are the list's, loaded by the list's own schema; it has no pages, so
# `start`, `limit` and `after` are not its parameters (ignored like any unknown one, spec §5.1c).
FILTERS = ("ORGCODES", "SDATE", "EDATE")


class ChangesQuerySchema(Schema):
    """Query parameters of GET /api/v1/enrolments/changes: the token to resume from and a page size."""

    class Meta:
        unknown = EXCLUDE  # spec §5.1c, as for the enrolments

    since = fields.String(required=True, validate=validate.Length(min=1))
    limit = StrictInteger(
        validate=validate.Range(min=1, max=MAX_CHANGES_LIMIT), load_default=DEFAULT_CHANGES_LIMIT
    )


# What each parameter expects, in the words of the spec's example error (§13).
EXPECTATIONS = {
    "ORGCODES": f"Work Unit code (1 to {MAX_VALUE_LENGTH} characters, at most {MAX_ORGCODES} values)",
    "SDATE": "Date YYYY-MM-DD",
    "EDATE": "Date YYYY-MM-DD",
    "start": f"Positive Integer no greater than {MAX_START}",
    "limit": f"Positive Integer no greater than {MAX_LIMIT}",
}
SINCE_EXPECTATION = "a changes token from X-Changes-Token issued to this token's unit"
CHANGES_EXPECTATIONS = {
    "since": SINCE_EXPECTATION,
    "limit": f"Positive Integer no greater than {MAX_CHANGES_LIMIT}",
}
# The filters of a change feed are those of its snapshot, sealed into the token.
FILTER_ON_CHANGES = "no value: the filters are those of the snapshot, carried by the changes token"
# EDATE's expectation when the request also sent SDATE: only then can the range be out of order,
# and only then does naming SDATE help.
EDATE_WITH_SDATE = "Date YYYY-MM-DD on or after SDATE"

REPEATABLE = frozenset({"ORGCODES"})

enrolment_query_schema = EnrolmentQuerySchema()
unit_query_schema = UnitQuerySchema()
# `after` is the cursor of a `next` link (spec §12, paging.Cursor): known, so it may not be
# repeated either, but not the schema's to load.
_KNOWN = frozenset(enrolment_query_schema.fields) | {"after"}
_KNOWN_FOR_UNITS = frozenset(unit_query_schema.fields)
snapshot_query_schema = EnrolmentQuerySchema(only=FILTERS)
changes_query_schema = ChangesQuerySchema()
_KNOWN_FOR_SNAPSHOT = frozenset(FILTERS)
# The filters are known names on /changes too: sent there, they are refused, never ignored.
_KNOWN_FOR_CHANGES = frozenset(changes_query_schema.fields) | frozenset(FILTERS)


@dataclass(frozen=True)
class EnrolmentQuery:
    """The loaded parameters of GET /api/v1/enrolments (spec §17.1.2) and the `next` link's cursor."""

    orgcodes: list[str] | None
    sdate: dt.date | None
    edate: dt.date | None
    start: int
    limit: int
    after: str | None


@dataclass(frozen=True)
class PageQuery:
    """The loaded parameters of GET /api/v1/units: one page of the list (spec §12)."""

    start: int
    limit: int


@dataclass(frozen=True)
class SnapshotQuery:
    """The loaded parameters of GET /api/v1/enrolments/snapshot: the list's filters, no paging."""

    orgcodes: list[str] | None
    sdate: dt.date | None
    edate: dt.date | None


@dataclass(frozen=True)
class ChangesQuery:
    """The loaded parameters of GET /api/v1/enrolments/changes: the token (still sealed) and the page size."""

    since: str
    limit: int


@dataclass(frozen=True)
class Parameters:
    """A request's query: its pairs in order (the Link header keeps them) and, for a list, their values."""

    pairs: list[tuple[str, str]]
    enrolments: EnrolmentQuery | None
    units: PageQuery | None = None
    snapshot: SnapshotQuery | None = None
    changes: ChangesQuery | None = None


# The endpoints whose parameters `parse` loads; every other endpoint's query is decoded only (spec §10).
ENROLMENTS = "enrolments"
UNITS = "units"
SNAPSHOT = "snapshot"
CHANGES = "changes"


def parse(query_string: bytes, endpoint: str | None) -> Parameters:
    """Decode a raw query string, and load it if it is a list's (ENROLMENTS, UNITS); E3010 if anything is invalid."""
    pairs = parse_query(query_string)
    if endpoint == ENROLMENTS:
        return Parameters(pairs, load_enrolment_query(pairs))
    if endpoint == UNITS:
        return Parameters(pairs, None, load_unit_query(pairs))
    if endpoint == SNAPSHOT:
        return Parameters(pairs, None, snapshot=load_snapshot_query(pairs))
    if endpoint == CHANGES:
        return Parameters(pairs, None, changes=load_changes_query(pairs))
    return Parameters(pairs, None)


def load_snapshot_query(pairs: list[tuple[str, str]]) -> SnapshotQuery:
    """Load GET /api/v1/enrolments/snapshot's filters through the list's schema; E3010 as the list words it."""
    arguments = to_arguments(pairs, REPEATABLE, _KNOWN_FOR_SNAPSHOT)
    loaded = _load_filters(snapshot_query_schema, arguments)
    return SnapshotQuery(loaded["ORGCODES"], loaded["SDATE"], loaded["EDATE"])


def load_changes_query(pairs: list[tuple[str, str]]) -> ChangesQuery:
    """Load GET /api/v1/enrolments/changes' parameters; E3010 for a filter, a missing `since` or a bad `limit`."""
    arguments = to_arguments(pairs, REPEATABLE, _KNOWN_FOR_CHANGES)
    for name in FILTERS:
        if name in arguments:
            raise _bad(name, FILTER_ON_CHANGES)
    try:
        loaded = changes_query_schema.load(arguments)
    except ValidationError as error:
        name = sorted(error.normalized_messages())[0]
        raise _bad(name, CHANGES_EXPECTATIONS.get(name, "a valid value")) from None
    return ChangesQuery(loaded["since"], loaded["limit"])


def _load_filters(schema: Schema, arguments: dict[str, object]) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(arguments)
    except ValidationError as error:
        name = sorted(error.normalized_messages())[0]
        expected = EXPECTATIONS.get(name, "a valid value")
        if name == "EDATE" and "SDATE" in arguments:
            expected = EDATE_WITH_SDATE
        raise _bad(name, expected) from None
    return loaded


def load_unit_query(pairs: list[tuple[str, str]]) -> PageQuery:
    """Load GET /api/v1/units' parameters through UnitQuerySchema; E3010 names the first bad one."""
    arguments = to_arguments(pairs, frozenset(), _KNOWN_FOR_UNITS)
    try:
        loaded = unit_query_schema.load(arguments)
    except ValidationError as error:
        name = sorted(error.normalized_messages())[0]
        raise _bad(name, EXPECTATIONS.get(name, "a valid value")) from None
    return PageQuery(loaded["start"], loaded["limit"])


def load_enrolment_query(pairs: list[tuple[str, str]]) -> EnrolmentQuery:
    """Load GET /api/v1/enrolments' parameters through EnrolmentQuerySchema; E3010 names the first bad one."""
    arguments = to_arguments(pairs, REPEATABLE, _KNOWN)
    loaded = _load_filters(enrolment_query_schema, arguments)
    after = arguments.get("after")
    return EnrolmentQuery(
        loaded["ORGCODES"], loaded["SDATE"], loaded["EDATE"], loaded["start"], loaded["limit"],
        after if isinstance(after, str) else None,
    )
