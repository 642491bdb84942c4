"""marshmallow schemas: query parameters (load) and report rows (dump)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from json.encoder import encode_basestring
from typing import Any, Callable, Iterable, Sequence

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

# spec §12 and §17.1.2
DEFAULT_LIMIT = 200
MAX_LIMIT = 500
DEFAULT_START = 1
MAX_START = 2**31 - 1
MAX_ORGCODES = 1000
MAX_VALUE_LENGTH = 256

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


# What each parameter expects, in the words of the spec's example error (§13).
EXPECTATIONS = {
    "ORGCODES": f"Work Unit code (1 to {MAX_VALUE_LENGTH} characters, at most {MAX_ORGCODES} values)",
    "SDATE": "Date YYYY-MM-DD",
    "EDATE": "Date YYYY-MM-DD on or after SDATE",
    "start": f"Positive Integer no greater than {MAX_START}",
    "limit": f"Positive Integer no greater than {MAX_LIMIT}",
}

REPEATABLE = frozenset({"ORGCODES"})


class EnrolmentSchema(Schema):
    """One enrolment as the spec's example shows it (§17.1.4): RNUM and SCH_SCORE are strings."""

    ORG_CODE = fields.String(attribute="org_code")
    ORG_NAME = fields.String(attribute="org_name")
    CRS_CODE = fields.String(attribute="crs_code")
    CRS_DESC = fields.String(attribute="crs_desc")
    LR_ID = fields.String(attribute="lr_id")
    LR_SNAME = fields.String(attribute="lr_sname")
    LR_FNAME = fields.String(attribute="lr_fname")
    LR_EMAIL = fields.String(attribute="lr_email")
    SCH_AEDATE = fields.Date(attribute="completed_on", format="%Y-%m-%d")
    SCH_SCORE = fields.Decimal(attribute="score", places=2, as_string=True)
    RNUM = fields.String(attribute="rnum")


class BusinessUnitSchema(Schema):
    """GET /api/v1 for a business-unit token (spec §16.1)."""

    ORGGRP_CODE = fields.String(attribute="unit_code")
    ORGGRP_NAME = fields.String(attribute="unit_name")


class WorkUnitSchema(Schema):
    """GET /api/v1 for a work-unit token (spec §16.1)."""

    ORG_CODE = fields.String(attribute="unit_code")
    ORG_NAME = fields.String(attribute="unit_name")


# Distinct values whose text each RowRenderer converter remembers (dates and scores need far fewer).
CONVERTER_MEMO_SIZE = 16384


class RowRenderer:
    """A schema's dump for flat rows of values, at a fraction of marshmallow's per-row cost.

    The schema stays the one definition of the format: keys and order come from its
    fields, and every field that is not plain text is converted by marshmallow
    itself, once per distinct value (memoised), instead of once per row.
    """

    def __init__(self, schema: Schema) -> None:
        dump_fields = schema.dump_fields
        self.keys = tuple(field.data_key or name for name, field in dump_fields.items())
        self.attributes = tuple(field.attribute or name for name, field in dump_fields.items())
        self._fields = {field.attribute or name: (name, field) for name, field in dump_fields.items()}
        # One row's JSON object with a slot per value; keys are encoded once, here.
        slots = (encode_basestring(key).replace("%", "%%") + ":%s" for key in self.keys)
        self._template = "{" + ",".join(slots) + "}"

    def json_array(self, rows: Iterable[Sequence[Any]]) -> str:
        """Encode rows of dumped values (in `keys` order) as a JSON array of objects."""
        template = self._template
        parts = []
        for row in rows:
            try:
                # The usual case: every dumped value is text, encoded by json's C encoder.
                values = tuple(map(encode_basestring, row))
            except TypeError:
                values = tuple(json.dumps(value, ensure_ascii=False) for value in row)
            parts.append(template % values)
        return "[" + ",".join(parts) + "]"

    def is_text(self, attribute: str) -> bool:
        """Whether the field copies str values unchanged (so they need no converter)."""
        _name, field = self._fields[attribute]
        return type(field)._serialize is fields.String._serialize

    def converter(
        self, attribute: str, adapt: Callable[[Any], Any] | None = None
    ) -> Callable[[Any], Any]:
        """Return raw value → the field's dumped value, where adapt maps raw to the schema's type."""
        name, field = self._fields[attribute]

        def convert(raw: Any) -> Any:
            return field.serialize(name, {attribute: adapt(raw) if adapt else raw})

        return functools.lru_cache(maxsize=CONVERTER_MEMO_SIZE)(convert)


enrolment_query_schema = EnrolmentQuerySchema()
enrolment_renderer = RowRenderer(EnrolmentSchema())
business_unit_schema = BusinessUnitSchema()
work_unit_schema = WorkUnitSchema()
