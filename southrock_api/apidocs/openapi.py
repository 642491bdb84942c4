"""The OpenAPI 3 document, generated from the views' marshmallow schemas and the error catalogue."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from limits import parse
from marshmallow import Schema, fields

from southrock_api.api.errors import (
    AUTHENTICATION_FAILED,
    BAD_PARAMETER,
    BAD_TOKEN_TYPE,
    CATALOGUE,
    ENDPOINT_NOT_SUPPORTED,
    INTERNAL_ERROR,
    METHOD_NOT_SUPPORTED,
    RATE_LIMITED,
    VERSION_NOT_SUPPORTED,
    ErrorCode,
)
from southrock_api.api.parameters import (
    DEFAULT_LIMIT,
    EDATE_WITH_SDATE,
    EXPECTATIONS,
    MAX_LIMIT,
    EnrolmentQuerySchema,
    StrictDate,
    StrictInteger,
    UnitQuerySchema,
)
from southrock_api.api.rendering import BusinessUnitSchema, EnrolmentSchema, UnitSchema, WorkUnitSchema

OPENAPI_VERSION = "3.0.3"
SECURITY_SCHEME = "basicAuth"
WHOAMI_PATH = "/api/v1"
ENROLMENTS_PATH = "/api/v1/enrolments"
UNITS_PATH = "/api/v1/units"
# Year 0000 is no date a parameter takes (Python's dates, and the spec's, start at year 1).
DATE_PATTERN = r"^(?!0000)\d{4}-\d{2}-\d{2}$"
# spec §10 and parameters._decode: printable characters (no C0 or C1 control) that UTF-8 encodes in
# at most three bytes.
QUERY_TEXT_PATTERN = "^[ -~\u00a0-\ud7ff\ue000-\uffff]*$"
# gunicorn.conf.py's limit_request_line and limit_request_field_size, and gunicorn's default
# limit_request_fields: beyond them gunicorn refuses the request before the application sees it.
REQUEST_LINE_LIMIT = 8190
HEADER_FIELD_LIMIT = 8190
HEADER_FIELD_COUNT_LIMIT = 100

# spec §17.1.2, with the limits the schema enforces (parameters.EXPECTATIONS); {row} and {rows}
# name what the list holds.
PARAMETER_DESCRIPTIONS = {
    "ORGCODES": "Select enrolments for learners belonging to this Work Unit code; repeat the "
    "parameter to select several Work Units (`ORGCODES=A,B` is one code, `A,B`). The codes a "
    "token sees are the `ORG_CODE`s of GET /api/v1/units; codes the "
    "token cannot see are ignored. Default: all visible Work Units. The whole request line may "
    f"be at most {REQUEST_LINE_LIMIT} bytes (the server answers a longer one 414): for hundreds "
    "of Work Units, use a token of the Business Unit that holds them.",
    "SDATE": "Select enrolments whose actual end date is on or after this date (YYYY-MM-DD). "
    "Default: no lower bound.",
    "EDATE": "Select enrolments whose actual end date is on or before this date (YYYY-MM-DD), "
    "not before SDATE. Default: no upper bound.",
    "start": "The row number (1-based) of the first {row} on the page.",
    "limit": f"The number of {{rows}} on the page, at most {MAX_LIMIT} "
    f"(default {DEFAULT_LIMIT}).",
}
PARAMETER_EXAMPLES: dict[str, object] = {
    "ORGCODES": ["ORG1", "ORG2"],
    "SDATE": "2017-01-01",
    "EDATE": "2017-12-31",
    "start": 1,
    "limit": DEFAULT_LIMIT,
}
# spec §16.1 and §17.1.5, and the work units of GET /api/v1/units.
PROPERTY_DESCRIPTIONS = {
    "ORGGRP_CODE": "The Business Unit code (of the token for GET /api/v1; of the Business Unit "
    "that owns the Work Unit in GET /api/v1/units).",
    "ORGGRP_NAME": "The Business Unit name of the token.",
    "ORG_CODE": "The Work Unit code (of the token for GET /api/v1, of the enrolment in its rows, "
    "of the listed Work Unit in GET /api/v1/units: a value ORGCODES takes).",
    "ORG_NAME": "The Work Unit name (of the token for GET /api/v1, of the enrolment in its rows, "
    "of the listed Work Unit in GET /api/v1/units).",
    "PARENT_ORG_CODE": "The code of the Work Unit's parent Work Unit, itself in the list; null at "
    "the top of what the token sees (a Work Unit without a parent, or whose parent the token "
    "does not see).",
    "CRS_CODE": "The course code for the enrolment.",
    "CRS_DESC": "The course description for the enrolment.",
    "LR_ID": "The learner id for the enrolment.",
    "LR_SNAME": "The learner last name for the enrolment.",
    "LR_FNAME": "The learner first name for the enrolment.",
    "LR_EMAIL": "The learner email for the enrolment.",
    "SCH_AEDATE": "The completion date of the enrolment (YYYY-MM-DD).",
    "SCH_SCORE": "The learner score, a decimal number written as a string with two places "
    '("100.00"), as the spec\'s example shows (§17.1.4).',
    "RNUM": "The row number of the enrolment in the whole result, written as a string "
    '("10"), as the spec\'s example shows (§17.1.4).',
}
PROPERTY_PATTERNS = {"RNUM": r"^[1-9][0-9]*$"}
EXAMPLE_UNITS = [
    {"ORG_CODE": "UNIV", "ORG_NAME": "University", "ORGGRP_CODE": "EDU", "PARENT_ORG_CODE": None},
    {"ORG_CODE": "UNIV-STUD", "ORG_NAME": "University - Students", "ORGGRP_CODE": "EDU", "PARENT_ORG_CODE": "UNIV"},
]
EXAMPLE_ROW = {
    "ORG_CODE": "UNIV-STUD",
    "ORG_NAME": "University - Students",
    "CRS_CODE": "INFCRTL_GRP3",
    "CRS_DESC": "Robotic Control",
    "LR_ID": "john.student",
    "LR_SNAME": "Student",
    "LR_FNAME": "John",
    "LR_EMAIL": "john.student@test.southrock.com",
    "SCH_AEDATE": "2017-01-19",
    "SCH_SCORE": "100.00",
    "RNUM": "1",
}
# Every code an endpoint's path can answer with (spec §13, §18), listed on its GET operation:
# E2020 (plain HTTP where HTTPS is required, an unknown host name) and E2030 (any other method on
# the path, which OpenAPI has no operation for) are both 404s of the endpoint. E2010 is left out:
# a path under /api whose version is not v1 is no endpoint's path.
OPERATION_ERRORS = (
    BAD_TOKEN_TYPE,
    BAD_PARAMETER,
    AUTHENTICATION_FAILED,
    ENDPOINT_NOT_SUPPORTED,
    METHOD_NOT_SUPPORTED,
    RATE_LIMITED,
    INTERNAL_ERROR,
)
ERROR_CIRCUMSTANCES = {
    AUTHENTICATION_FAILED.code: "No Authorization header, credentials that are not Base64 "
    "`public:private`, or an unknown, revoked, expired or wrong key.",
    BAD_TOKEN_TYPE.code: "An Authorization scheme other than Basic, or a token whose business "
    "or work unit no longer exists.",
    RATE_LIMITED.code: "The site's requests this window are spent, or this client address "
    "failed authentication too often. Wait the Retry-After seconds.",
    VERSION_NOT_SUPPORTED.code: "A path under /api whose version is not v1.",
    ENDPOINT_NOT_SUPPORTED.code: "An unknown path under /api/v1, plain HTTP where the site "
    "requires HTTPS (spec §8c), or a host name the site does not answer to.",
    METHOD_NOT_SUPPORTED.code: "Any method other than GET (or HEAD) on an API path: 404, "
    "not 405 (spec §18).",
    BAD_PARAMETER.code: "A query parameter that is malformed, out of range, repeated (other than "
    "ORGCODES), not UTF-8, or holds control characters or characters beyond three UTF-8 bytes; "
    "or a known parameter's name in disguise (other letter case, `ORGCODES[]`, spaces), which "
    "would otherwise be ignored like any unknown parameter.",
    INTERNAL_ERROR.code: "An unexpected failure; the message never carries details.",
}


@dataclass(frozen=True)
class ServerRefusal:
    """A status gunicorn answers itself, before the application: its own HTML page, not JSON."""

    status: int
    name: str  # of its components/responses entry
    reason: str  # gunicorn's reason phrase, also the page's title
    when: str


# Every operation can get these: gunicorn reads the request line and headers before any route.
SERVER_REFUSALS = (
    ServerRefusal(
        414,
        "URITooLong",
        "URI Too Long",
        f"The request line (method, path and query string) is over {REQUEST_LINE_LIMIT} bytes "
        "(about 700 short ORGCODES). Ask for fewer Work Units per request, or use a token of "
        "the Business Unit that holds them.",
    ),
    ServerRefusal(
        431,
        "RequestHeaderFieldsTooLarge",
        "Request Header Fields Too Large",
        f"A header field (name and value) is over {HEADER_FIELD_LIMIT} bytes, or there are more "
        f"than {HEADER_FIELD_COUNT_LIMIT} header fields.",
    ),
)
SERVER_REFUSAL_BODY = (
    "the web server (gunicorn) answers itself, with its own HTML page: not the API's JSON "
    "error object, no E-code, none of the API's headers."
)
OTHER_METHODS_NOTE = (
    "Only GET (and HEAD) are supported: any other method answers 404 with E2030 (spec §18)."
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


def _header(schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


def _headers(policy: str) -> dict[str, dict[str, Any]]:
    return {
        "X-Request-Id": _header(
            {"type": "string"},
            "The request's id (the caller's X-Request-Id when it is 1-128 of A-Z a-z 0-9 . _ -); "
            "quote it when reporting a problem.",
            required=True,
        ),
        "X-Rate-Limit-Limit": _header(
            {"type": "integer", "minimum": 0},
            f"The site's rate-limit ceiling for the current window ({policy}, spec §15); on a 429 "
            "for repeated failed authentications, the client address's failure limit instead.",
        ),
        "X-Rate-Limit-Remaining": _header(
            {"type": "integer", "minimum": 0},
            "Requests left in the current window for the whole site (spec §15), or 0 on a 429 for "
            "repeated failed authentications.",
        ),
        "X-Rate-Limit-Reset": _header(
            {"type": "integer", "minimum": 0}, "Seconds until the current window resets."
        ),
        "RateLimit-Policy": _header(
            {"type": "string"},
            'The policy as draft-ietf-httpapi-ratelimit-headers writes it, e.g. `"site";q=60;w=60` '
            "for 60 requests a minute.",
        ),
        "RateLimit": _header(
            {"type": "string"},
            'The window as draft-ietf-httpapi-ratelimit-headers writes it: `"site";r=15;t=42` '
            "(requests remaining, seconds to reset).",
        ),
        "Retry-After": _header(
            {"type": "integer", "minimum": 1},
            "Seconds to wait before trying again.",
            required=True,
        ),
        "ETag": _header(
            {"type": "string"},
            "A validator of this response (token scope, query and data version); send it back "
            "in If-None-Match to get 304 Not Modified while nothing changed.",
            required=True,
        ),
        "Link": _header(
            {"type": "string"},
            "RFC 8288 links to the `next` (absent on the last page), `last`, `first` and `prev` "
            "(absent on the first page) pages (spec §12). Follow them as given: a `next` link may "
            "carry an opaque `after` cursor that makes the next page fast.",
            required=True,
        ),
        "X-Total-Count": _header(
            {"type": "integer", "minimum": 0},
            "The number of rows (enrolments, or work units) the whole query matches (spec §12).",
            required=True,
        ),
        "X-Data-Version": _header(
            {"type": "string"},
            "Opaque; changes with every import. Rows may move between pages when it does, so a "
            "client walking the pages should read the result again if it changes on the way.",
            required=True,
        ),
        "WWW-Authenticate": _header(
            {"type": "string"}, "The Basic challenge, so a browser asks for the keys (spec §6)."
        ),
    }


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


def _error_headers(error: ErrorCode) -> dict[str, dict[str, str]]:
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
        "headers": _error_headers(error),
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
            headers.update(_error_headers(error))
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


def _query_parameters(spec: APISpec, schema: type[Schema], row: str, rows: str) -> list[dict[str, Any]]:
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
    summary: str, description: str, tag: str, ok: dict[str, Any], parameters: list[dict[str, Any]]
) -> dict[str, Any]:
    responses = {
        "200": ok,
        "304": _not_modified(),
        **_error_responses(OPERATION_ERRORS),
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
    for name, header in _headers(policy).items():
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

