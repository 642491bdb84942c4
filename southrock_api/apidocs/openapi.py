"""The OpenAPI 3 document, generated from the views' marshmallow schemas and the error catalogue."""

from __future__ import annotations

import copy
import json
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from limits import parse
from marshmallow import Schema, fields

from southrock_api.api.errors import (
    AUTHENTICATION_FAILED,
    CATALOGUE,
    RATE_LIMITED,
    ErrorCode,
)
from southrock_api.api.parameters import (
    ChangesQuerySchema,
    DEFAULT_LIMIT,
    EDATE_WITH_SDATE,
    EXPECTATIONS,
    MAX_LIMIT,
    EnrolmentQuerySchema,
    StrictDate,
    StrictInteger,
    UnitQuerySchema,
    snapshot_query_schema,
)
from southrock_api.api.rendering import BusinessUnitSchema, EnrolmentSchema, UnitSchema, WorkUnitSchema
from southrock_api.apidocs.texts import (
    CHANGES_DESCRIPTION,
    CHANGES_OPERATION_ERRORS,
    CHANGES_PARAMETER_DESCRIPTIONS,
    CHANGES_PATH,
    DATE_PATTERN,
    ENROLMENTS_PATH,
    ERROR_CIRCUMSTANCES,
    EXAMPLE_CHANGES,
    EXAMPLE_ROW,
    EXAMPLE_UNITS,
    OPENAPI_VERSION,
    OPERATION_ERRORS,
    OTHER_METHODS_NOTE,
    PARAMETER_DESCRIPTIONS,
    PARAMETER_EXAMPLES,
    PROPERTY_DESCRIPTIONS,
    PROPERTY_PATTERNS,
    QUERY_TEXT_PATTERN,
    SECURITY_SCHEME,
    SERVER_REFUSALS,
    SERVER_REFUSAL_BODY,
    SNAPSHOT_DESCRIPTION,
    SNAPSHOT_PATH,
    NDJSON,
    UNITS_PATH,
    WHOAMI_PATH,
    headers,
    ServerRefusal,
)

def _strict_field_properties(self: Any, field: fields.Field, ret: dict[str, Any]) -> dict[str, Any]:
    """Add what the strict fields and string decimals accept, which core mappings cannot say."""
    extra: dict[str, Any] = {}
    if field.load_default is None:
        # load_default=None means "no filter" (spec: ALL), not a null value a client may send.
        ret.pop("default", None)
        ret.pop("nullable", None)
    if isinstance(field, StrictDate):
        extra["pattern"] = DATE_PATTERN
    if isinstance(field, fields.Decimal) and field.as_string:
        # spec §17.1.4: SCH_SCORE is a string such as "100.00".
        places = -int(field.places.as_tuple().exponent) if field.places is not None else None
        extra.update(type="string", format="decimal")
        extra["pattern"] = rf"^\d+\.\d{{{places}}}$" if places else r"^\d+(\.\d+)?$"
    if field.name in PROPERTY_PATTERNS:
        extra["pattern"] = PROPERTY_PATTERNS[field.name]
    if field.name in PROPERTY_DESCRIPTIONS:
        extra["description"] = PROPERTY_DESCRIPTIONS[field.name]
    return extra


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__.removesuffix("Schema")


RATE_LIMIT_HEADERS = (
    "X-Rate-Limit-Limit",
    "X-Rate-Limit-Remaining",
    "X-Rate-Limit-Reset",
    "RateLimit-Policy",
    "RateLimit",
)


def _header_refs(*names: str) -> dict[str, dict[str, str]]:
    every = ("X-Request-Id", *RATE_LIMIT_HEADERS, *names)
    return {name: {"$ref": f"#/components/headers/{name}"} for name in every}


def _errorheaders(error: ErrorCode) -> dict[str, dict[str, str]]:
    if error is RATE_LIMITED:
        return _header_refs("Retry-After")
    if error is AUTHENTICATION_FAILED:
        return _header_refs("WWW-Authenticate")
    return _header_refs()


def _error_schema() -> dict[str, Any]:
    """The spec's error object (§13), its code one of the catalogue's."""
    return {
        "type": "object",
        "description": "Every error: a natural-language message and the catalogue code (spec §13).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "code": {"type": "string", "enum": [error.code for error in CATALOGUE]},
                },
            }
        },
    }


def _error_example(error: ErrorCode) -> dict[str, Any]:
    return {
        "summary": f"{error.code} {error.description}",
        "description": ERROR_CIRCUMSTANCES[error.code],
        "value": {"error": {"message": error.description, "code": error.code}},
    }


def _error_component(error: ErrorCode) -> dict[str, Any]:
    return {
        "description": f"{error.code} {error.description}. {ERROR_CIRCUMSTANCES[error.code]}",
        "headers": _errorheaders(error),
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "examples": {error.code: {"$ref": f"#/components/examples/{error.code}"}},
            }
        },
    }


def _server_refusal_component(refusal: ServerRefusal) -> dict[str, Any]:
    return {
        "description": f"{refusal.reason}. {refusal.when} Before the API sees the request, "
        + SERVER_REFUSAL_BODY,
        "content": {"text/html": {"schema": {"type": "string"}}},
    }


def _server_refusal_responses() -> dict[str, Any]:
    return {
        str(refusal.status): {"$ref": f"#/components/responses/{refusal.name}"}
        for refusal in SERVER_REFUSALS
    }


def _error_responses(errors: tuple[ErrorCode, ...]) -> dict[str, Any]:
    """One response per status: a reference when one code has it, else every code as an example."""
    by_status: dict[int, list[ErrorCode]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    responses: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        if len(group) == 1:
            responses[str(status)] = {"$ref": f"#/components/responses/{group[0].code}"}
            continue
        headers: dict[str, Any] = {}
        for error in group:
            headers.update(_errorheaders(error))
        responses[str(status)] = {
            "description": "; ".join(
                f"{error.code} {error.description}: {ERROR_CIRCUMSTANCES[error.code]}"
                for error in group
            ),
            "headers": headers,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"},
                    "examples": {
                        error.code: {"$ref": f"#/components/examples/{error.code}"}
                        for error in group
                    },
                }
            },
        }
    return responses


def _conditional_parameters() -> list[dict[str, Any]]:
    return [
        {
            "in": "header",
            "name": "If-None-Match",
            "required": False,
            "description": "An ETag from an earlier response: 304 Not Modified (no body, and the "
            "site's rate-limit bucket is not spent) while the answer is unchanged.",
            "schema": {"type": "string"},
        },
        {
            "in": "header",
            "name": "X-Request-Id",
            "required": False,
            "description": "Your id for the request (1-128 of A-Z a-z 0-9 . _ -), echoed back "
            "and logged; anything else is replaced by a generated id.",
            "schema": {"type": "string"},
        },
    ]


def _not_modified() -> dict[str, Any]:
    return {
        "description": "Not Modified: the If-None-Match ETag still matches; no body.",
        "headers": _header_refs("ETag"),
    }


def _query_parameters(spec: APISpec, schema: type[Schema] | Schema, row: str, rows: str) -> list[dict[str, Any]]:
    """A list's query parameters, converted by the marshmallow plugin from its schema."""
    plugin: MarshmallowPlugin = next(p for p in spec.plugins if isinstance(p, MarshmallowPlugin))
    assert plugin.converter is not None
    parameters = plugin.converter.schema2parameters(schema, location="query")
    for parameter in parameters:
        name = parameter["name"]
        parameter["description"] = (
            f"{PARAMETER_DESCRIPTIONS[name].format(row=row, rows=rows)} Invalid values answer 400 E3010 "
            f'"Invalid parameter found: {name}, expected {EXPECTATIONS[name]}"'
            + (f' ("expected {EDATE_WITH_SDATE}" when SDATE is sent too).' if name == "EDATE" else ".")
        )
        parameter["example"] = PARAMETER_EXAMPLES[name]
        value_schema = parameter["schema"].get("items", parameter["schema"])
        if value_schema.get("type") == "string" and "pattern" not in value_schema:
            value_schema["pattern"] = QUERY_TEXT_PATTERN
    return parameters


def _enrolment_query_parameters(spec: APISpec) -> list[dict[str, Any]]:
    """The enrolment query's parameters (spec §17.1.2), and the cursor of its `next` links."""
    parameters = _query_parameters(spec, EnrolmentQuerySchema, "enrolment", "enrolments")
    parameters.append(
        {
            "in": "query",
            "name": "after",
            "required": False,
            "description": "Opaque, and only in the `next` links the API writes: follow those as given. "
            "It lets the next page seek instead of counting rows; a value that is stale (an import "
            "ran since) or not the API's own is ignored and the page is read by `start`.",
            "schema": {"type": "string", "pattern": QUERY_TEXT_PATTERN},
        }
    )
    return parameters


def _changes_query_parameters(spec: APISpec) -> list[dict[str, Any]]:
    """The change feed's parameters: the token to resume from, and its own page size."""
    plugin: MarshmallowPlugin = next(p for p in spec.plugins if isinstance(p, MarshmallowPlugin))
    assert plugin.converter is not None
    parameters = plugin.converter.schema2parameters(ChangesQuerySchema, location="query")
    for parameter in parameters:
        parameter["description"] = CHANGES_PARAMETER_DESCRIPTIONS[parameter["name"]]
        if parameter["schema"].get("type") == "string":
            parameter["schema"]["pattern"] = QUERY_TEXT_PATTERN
    return parameters


def _change_schema() -> dict[str, Any]:
    """A change object: CHANGE first, then (for an UPSERT) the listing's properties without RNUM."""
    enrolment = "#/components/schemas/Enrolment/properties/"
    keys = [name for name in EnrolmentSchema().dump_fields if name != "RNUM"]
    return {
        "type": "object",
        "description": "One enrolment's change since the token: UPSERT with its row now (the listing's "
        "properties in the listing's order, without RNUM), or DELETE with its SCH_ID only.",
        "required": ["CHANGE", "SCH_ID"],
        "properties": {
            "CHANGE": {"type": "string", "enum": ["UPSERT", "DELETE"]},
            **{name: {"$ref": enrolment + name} for name in keys},
        },
    }


def _description(policy: str) -> str:
    codes = "\n".join(
        f"| {error.status} | {error.code} | {error.description} | {ERROR_CIRCUMSTANCES[error.code]} |"
        for error in CATALOGUE
    )
    refusals = "\n".join(
        f"- {refusal.status} {refusal.reason}: {refusal.when}" for refusal in SERVER_REFUSALS
    )
    return (
        "Extract completed LMS enrolments (SPEC-LMS-1544 v1.6).\n\n"
        "**Authentication** (spec §6): HTTP Basic with the token's public key as the user name "
        "and its private key as the password: `Authorization: Basic base64(public:private)`.\n\n"
        "**Work Units**: GET /api/v1/units lists the Work Units a token sees, with their "
        "Business Unit and parent; their `ORG_CODE`s are the values ORGCODES takes.\n\n"
        "**Paging** (spec §12): `start` (1-based row) and `limit` (default "
        f"{DEFAULT_LIMIT}, at most {MAX_LIMIT}); follow the `Link` header's `next` URL until "
        "there is none; `X-Total-Count` is the size of the whole result. If `X-Data-Version` "
        "changes on the way, an import has moved rows between pages: start again from the "
        "first page.\n\n"
        f"**Rate limit** (spec §15): {policy} for the whole site, shared by every token. Every "
        "API response carries X-Rate-Limit-Limit, X-Rate-Limit-Remaining and X-Rate-Limit-Reset "
        "(and the IETF RateLimit and RateLimit-Policy fields); 429 E1030 carries Retry-After. "
        "A 304 Not Modified does not spend the bucket; HEAD, answered like GET without a body, "
        "spends it like GET. Every import changes every ETag.\n\n"
        "**Errors** (spec §13, §18): every error is `{\"error\": {\"message\", \"code\"}}`.\n\n"
        "| Status | Code | Meaning | When |\n| --- | --- | --- | --- |\n" + codes + "\n\n"
        f"**Before the API sees the request**, {SERVER_REFUSAL_BODY}\n\n" + refusals
    )


def _operation(
    summary: str,
    description: str,
    tag: str,
    ok: dict[str, Any],
    parameters: list[dict[str, Any]],
    errors: tuple[ErrorCode, ...] = OPERATION_ERRORS,
) -> dict[str, Any]:
    responses = {
        "200": ok,
        "304": _not_modified(),
        **_error_responses(errors),
        **_server_refusal_responses(),
    }
    return {
        "operationId": tag,
        "summary": summary,
        "description": description,
        "parameters": parameters + _conditional_parameters(),
        "responses": dict(sorted(responses.items())),
    }


def policy_text(rate_limit: str) -> str:
    """Say a limits string ("60 per minute") the way the headers count it."""
    item = parse(rate_limit)
    return f"{item.amount} requests per {int(item.get_expiry())} seconds"


def build_document(rate_limit: str) -> dict[str, Any]:
    """Return the OpenAPI document for a site whose rate limit is `rate_limit` ("60 per minute")."""
    policy = policy_text(rate_limit)
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(
        title="Southrock LMS Enrolment Data Extraction API",
        version="v1",
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": _description(policy)},
        servers=[{"url": "/", "description": "This site"}],
        security=[{SECURITY_SCHEME: []}],
    )
    plugin.map_to_openapi_type(StrictDate, "string", "date")
    plugin.map_to_openapi_type(StrictInteger, "integer", None)
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_strict_field_properties)

    spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "http",
            "scheme": "basic",
            "description": "The API token's public key as the user name and its private key as "
            "the password (spec §6, §7).",
        },
    )
    spec.components.schema("BusinessUnit", schema=BusinessUnitSchema)
    spec.components.schema("WorkUnit", schema=WorkUnitSchema)
    spec.components.schema("Enrolment", schema=EnrolmentSchema)
    spec.components.schema("Unit", schema=UnitSchema)
    spec.components.schema("Error", _error_schema())
    for name, header in headers(policy).items():
        spec.components.header(name, header)
    for error in CATALOGUE:
        spec.components.example(error.code, _error_example(error))
        spec.components.response(error.code, _error_component(error))
    for refusal in SERVER_REFUSALS:
        spec.components.response(refusal.name, _server_refusal_component(refusal))

    whoami_ok = {
        "description": "The token's Business Unit (ORGGRP_*) or Work Unit (ORG_*).",
        "headers": _header_refs("ETag"),
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/BusinessUnit"},
                        {"$ref": "#/components/schemas/WorkUnit"},
                    ]
                },
                "examples": {
                    "business_unit": {
                        "summary": "A Business Unit token",
                        "value": {"ORGGRP_CODE": "EDU", "ORGGRP_NAME": "Education"},
                    },
                    "work_unit": {
                        "summary": "A Work Unit token",
                        "value": {"ORG_CODE": "UNIV-STUD", "ORG_NAME": "University - Students"},
                    },
                },
            }
        },
    }
    spec.path(
        path=WHOAMI_PATH,
        description=OTHER_METHODS_NOTE,
        operations={
            "get": _operation(
                "Validate credentials",
                "Validates the Authorization credentials and returns the token's Business Unit "
                "or Work Unit (spec §16).",
                "whoami",
                whoami_ok,
                [],
            )
        },
    )
    units_ok = {
        "description": "One page of the Work Units the token sees, ordered by code: the codes "
        "ORGCODES takes.",
        "headers": _header_refs("ETag", "Link", "X-Total-Count", "X-Data-Version"),
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Unit"}},
                "example": EXAMPLE_UNITS,
            }
        },
    }
    spec.path(
        path=UNITS_PATH,
        description=OTHER_METHODS_NOTE,
        operations={
            "get": _operation(
                "List visible Work Units",
                "Lists the Work Units the token sees (for a Work Unit token, its unit and every unit "
                "below it; for a Business Unit token, every Work Unit of its Business Unit and the "
                "Business Units below it, and every unit below those; spec §7), with their "
                "Business Unit and parent: the `ORG_CODE`s to pass as ORGCODES to GET "
                "/api/v1/enrolments. Paged like the enrolments (spec §12).",
                "listUnits",
                units_ok,
                _query_parameters(spec, UnitQuerySchema, "work unit", "work units"),
            )
        },
    )
    enrolments_ok = {
        "description": "One page of completed enrolments, ordered by Work Unit code, course "
        "code and learner id.",
        "headers": _header_refs("ETag", "Link", "X-Total-Count", "X-Data-Version"),
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Enrolment"}},
                "example": [EXAMPLE_ROW],
            }
        },
    }
    spec.path(
        path=ENROLMENTS_PATH,
        description=OTHER_METHODS_NOTE,
        operations={
            "get": _operation(
                "List completed enrolments",
                "Lists the completed enrolments the token can see (its unit and every unit below "
                "it), optionally filtered by Work Unit (ORGCODES: the `ORG_CODE`s of GET "
                "/api/v1/units) and completion date range (spec §17).",
                "listEnrolments",
                enrolments_ok,
                _enrolment_query_parameters(spec),
            )
        },
    )
    snapshot_ok = {
        "description": "Every completed enrolment the token sees, one JSON object a line in the "
        'listing\'s order, then the closing record `{"END":true,"ROWS":n}`.',
        "headers": _header_refs("ETag", "X-Changes-Token", "Vary", "Content-Encoding"),
        "content": {
            NDJSON: {
                "schema": {"type": "string"},
                "example": json.dumps(EXAMPLE_ROW, separators=(",", ":")) + "\n"
                + '{"END":true,"ROWS":1}\n',
            }
        },
    }
    spec.path(
        path=SNAPSHOT_PATH,
        description=OTHER_METHODS_NOTE,
        operations={
            "get": _operation(
                "Stream every completed enrolment (snapshot)",
                SNAPSHOT_DESCRIPTION,
                "enrolmentSnapshot",
                snapshot_ok,
                _query_parameters(spec, snapshot_query_schema, "enrolment", "enrolments"),
            )
        },
    )
    spec.components.schema("Change", _change_schema())
    changes_ok = {
        "description": "The changes since the token, at most `limit`, each enrolment once per round.",
        "headers": {
            **_header_refs("ETag", "X-Changes-Token"),
            "Link": {
                "description": 'RFC 8288: `<...>; rel="next"` while more changes of this round remain; '
                "absent once the copy is up to date.",
                "schema": {"type": "string"},
            },
        },
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Change"}},
                "example": EXAMPLE_CHANGES,
            }
        },
    }
    spec.path(
        path=CHANGES_PATH,
        description=OTHER_METHODS_NOTE,
        operations={
            "get": _operation(
                "Changes since a changes token",
                CHANGES_DESCRIPTION,
                "enrolmentChanges",
                changes_ok,
                _changes_query_parameters(spec),
                CHANGES_OPERATION_ERRORS,
            )
        },
    )
    document = spec.to_dict()
    for name in ("BusinessUnit", "WorkUnit", "Enrolment", "Unit"):
        # The views always write every property (spec §5.2d would allow omitting nulls; there
        # are none), so a client may rely on them and the fuzz test holds the views to it.
        schema = document["components"]["schemas"][name]
        schema["required"] = list(schema["properties"])
        # spec §5.2b: new properties may appear, so clients must accept unknown ones.
        schema.pop("additionalProperties", None)
    document["x-error-catalogue"] = [
        {
            "status": error.status,
            "code": error.code,
            "description": error.description,
            "when": ERROR_CIRCUMSTANCES[error.code],
        }
        for error in CATALOGUE
    ]
    return document


_cache: dict[str, dict[str, Any]] = {}


def document_for(rate_limit: str) -> dict[str, Any]:
    """Return a copy of the (cached) document for a rate limit."""
    if rate_limit not in _cache:
        _cache[rate_limit] = build_document(rate_limit)
    return copy.deepcopy(_cache[rate_limit])

