"""What the API writes: the marshmallow schemas of its answers (spec §16, §17.1.4) and their fast row path."""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any, Callable, Iterable, Sequence

from marshmallow import Schema, fields

from southrock_api.report.summary import RowFormat


class EnrolmentSchema(Schema):
    """One enrolment as the spec's example shows it (§17.1.4; RNUM and SCH_SCORE are strings), and its SCH_ID."""

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
    # Beyond the spec's example (§5.2b allows new properties): the LMS enrolment id, the row's
    # stable key, so that a copy can match a corrected row to the one it holds.
    SCH_ID = fields.String(attribute="sch_id")


class BusinessUnitSchema(Schema):
    """GET /api/v1 for a business-unit token (spec §16.1)."""

    ORGGRP_CODE = fields.String(attribute="unit_code")
    ORGGRP_NAME = fields.String(attribute="unit_name")


class WorkUnitSchema(Schema):
    """GET /api/v1 for a work-unit token (spec §16.1)."""

    ORG_CODE = fields.String(attribute="unit_code")
    ORG_NAME = fields.String(attribute="unit_name")


class UnitSchema(Schema):
    """One work unit of GET /api/v1/units: the codes ORGCODES takes, with the unit's place in both trees."""

    ORG_CODE = fields.String(attribute="code")
    ORG_NAME = fields.String(attribute="name")
    ORGGRP_CODE = fields.String(attribute="business_unit_code")
    # Null for a unit whose parent the token does not see (report.visibility.VisibleUnit).
    PARENT_ORG_CODE = fields.String(attribute="parent_code", allow_none=True)


class RowRenderer:
    """A schema's dump for flat rows of values, at a fraction of marshmallow's per-row cost.

    The schema stays the one definition of the format: keys and order come from its
    fields, and every field that is not plain text is converted by marshmallow itself
    (`converter`); the report calls each converter once per distinct value, not per row.
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
        return "[" + ",".join(self._objects(rows)) + "]"

    def json_lines(self, rows: Iterable[Sequence[Any]]) -> str:
        """Encode rows of dumped values (in `keys` order) as JSON Lines: one object a line, each ended by a newline."""
        return "".join(line + "\n" for line in self._objects(rows))

    def _objects(self, rows: Iterable[Sequence[Any]]) -> list[str]:
        template = self._template
        parts = []
        for row in rows:
            try:
                # The usual case: every dumped value is text, encoded by json's C encoder.
                values = tuple(map(encode_basestring, row))
            except TypeError:
                values = tuple(json.dumps(value, ensure_ascii=False) for value in row)
            parts.append(template % values)
        return parts

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

        return convert

    def row_format(self, date: str, score: str) -> RowFormat:
        """The report's RowFormat for this schema: its attributes, and the date and score fields' converters."""
        converted = {date, score}
        # The report hands every other value over as it is: those fields must copy text unchanged.
        unconverted = [name for name in self.attributes if name not in converted and not self.is_text(name)]
        if unconverted:
            raise RuntimeError(f"the report writes attribute(s) {unconverted} as text, but their fields convert them")
        return RowFormat(self.attributes, self.converter(date), self.converter(score))


business_unit_schema = BusinessUnitSchema()
work_unit_schema = WorkUnitSchema()
unit_schema = UnitSchema()
enrolment_renderer = RowRenderer(EnrolmentSchema())
# What the report needs to write its rows as EnrolmentSchema dumps them (spec §17.1.4): checked
# here, at import, so a field added to the schema that the report cannot supply fails at start.
enrolment_row_format = enrolment_renderer.row_format(date="completed_on", score="score")
UPSERT = "UPSERT"
DELETE = "DELETE"
# A change's keys: CHANGE, then the listing's keys in the listing's order, RNUM left out.
CHANGE_KEYS = ("CHANGE", *(key for key in enrolment_renderer.keys if key != "RNUM"))
_UPSERT_TEMPLATE = "{" + ",".join(encode_basestring(key).replace("%", "%%") + ":%s" for key in CHANGE_KEYS) + "}"
_DELETE_TEMPLATE = '{"CHANGE":%s,"SCH_ID":%s}'


def changes_json(changes: Iterable[tuple[str, Sequence[Any] | None]]) -> str:
    """Encode (SCH_ID, row values without RNUM, or None for a deletion) as the JSON array of change objects."""
    parts = []
    for sch_id, row in changes:
        if row is None:
            parts.append(_DELETE_TEMPLATE % (encode_basestring(DELETE), encode_basestring(sch_id)))
        else:
            parts.append(_UPSERT_TEMPLATE % tuple(map(encode_basestring, (UPSERT, *row))))
    return "[" + ",".join(parts) + "]"
