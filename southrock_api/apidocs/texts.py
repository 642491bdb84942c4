"""What the OpenAPI document says in words: descriptions, examples, headers, the errors each operation lists, gunicorn's refusals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from southrock_api.api.errors import (
    AUTHENTICATION_FAILED,
    BAD_PARAMETER,
    BAD_TOKEN_TYPE,
    CHANGES_EXPIRED,
    ENDPOINT_NOT_SUPPORTED,
    INTERNAL_ERROR,
    METHOD_NOT_SUPPORTED,
    RATE_LIMITED,
    VERSION_NOT_SUPPORTED,
)
from southrock_api.api.parameters import (
    CHANGES_EXPECTATIONS,
    DEFAULT_CHANGES_LIMIT,
    DEFAULT_LIMIT,
    FILTER_ON_CHANGES,
    MAX_CHANGES_LIMIT,
    MAX_LIMIT,
)

OPENAPI_VERSION = "3.0.3"
SECURITY_SCHEME = "basicAuth"
WHOAMI_PATH = "/api/v1"
ENROLMENTS_PATH = "/api/v1/enrolments"
UNITS_PATH = "/api/v1/units"
SNAPSHOT_PATH = "/api/v1/enrolments/snapshot"
CHANGES_PATH = "/api/v1/enrolments/changes"
NDJSON = "application/x-ndjson"
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
    "SCH_ID": "The LMS enrolment id: the row's stable key, the same in every response and export. "
    "A learner may complete a course more than once; each completion has its own SCH_ID, so a copy "
    "of the data matches a corrected row to the one it holds by this property.",
}
PROPERTY_PATTERNS = {"RNUM": r"^[1-9][0-9]*$"}
CHANGES_PARAMETER_DESCRIPTIONS = {
    "since": "The changes token of the last response: the `X-Changes-Token` of a snapshot (GET "
    "/api/v1/enrolments/snapshot) or of the previous page of changes. Opaque and sealed; it carries "
    "the snapshot's filters (ORGCODES, SDATE, EDATE) and the token's unit. Required. A missing, "
    "edited or truncated one, or one issued to another unit's token, answers 400 E3010 "
    f'"Invalid parameter found: since, expected {CHANGES_EXPECTATIONS["since"]}"; one older than the '
    "change log keeps answers 410 E3020: take a new snapshot.",
    "limit": f"The most change objects on the page, at most {MAX_CHANGES_LIMIT} (default "
    f"{DEFAULT_CHANGES_LIMIT}). Invalid values answer 400 E3010 "
    f'"Invalid parameter found: limit, expected {CHANGES_EXPECTATIONS["limit"]}". ORGCODES, SDATE '
    f'and EDATE are refused here (400 E3010, "expected {FILTER_ON_CHANGES}").',
}
SNAPSHOT_DESCRIPTION = (
    "Streams every completed enrolment the token sees, with the same filters as GET "
    "/api/v1/enrolments (ORGCODES, SDATE, EDATE; `start`, `limit` and `after` are not parameters "
    "here and are ignored), as JSON Lines (`application/x-ndjson`): one object a line, each exactly "
    "the listing's row (same properties in the same order, RNUM the row number the listing gives "
    'it), in the listing\'s order, then a last line `{"END":true,"ROWS":n}`. A stream without that '
    "closing record was cut: take the snapshot again. gzip-compressed (`Content-Encoding: gzip`) "
    "when Accept-Encoding allows it. `X-Changes-Token` is the changes token of the very same "
    "snapshot: pass it as `since` to GET /api/v1/enrolments/changes to keep the copy exact. One "
    "request against the site's rate limit, however many rows."
)
CHANGES_DESCRIPTION = (
    "Returns what changed since a changes token, for the token's unit and the filters of the "
    "snapshot the token comes from: for each enrolment changed since, once, either "
    '`{"CHANGE":"UPSERT", ...}` with every property of its row now (the listing\'s properties in the '
    'listing\'s order, without RNUM) or `{"CHANGE":"DELETE","SCH_ID":...}` when the token no longer '
    "sees it (it was deleted, is no longer completed, its date left the filter, or its learner or "
    "Work Unit moved out of what the token sees). A copy built from a snapshot and then the "
    "changes, applied in order by SCH_ID, equals the listing. Enrolments the token never saw are "
    "never mentioned. Send the response's `X-Changes-Token` as `since` next; while the `Link` "
    "header has a `next` link, more changes of this round remain: follow it. A page may hold "
    "fewer than `limit` changes, even none, while a `next` link is present (the server scans a "
    "bounded number of changes per request). Without a `next` link the copy is up to date: an "
    "empty array and the token to poll with next; polling with If-None-Match answers 304 (and "
    "spends no rate limit) until an import has run."
)
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
    "SCH_ID": "SCH-000123",
}
EXAMPLE_CHANGES = [
    {"CHANGE": "UPSERT", **{key: value for key, value in EXAMPLE_ROW.items() if key != "RNUM"}},
    {"CHANGE": "DELETE", "SCH_ID": "SCH-000124"},
]
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
# The change feed answers these too: a token older than the change log keeps.
CHANGES_OPERATION_ERRORS = (*OPERATION_ERRORS, CHANGES_EXPIRED)
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
    CHANGES_EXPIRED.code: "GET /api/v1/enrolments/changes with a changes token older than the "
    "change log keeps (SOUTHROCK_CHANGES_RETENTION_DAYS after the import that wrote it): take a "
    "new snapshot (GET /api/v1/enrolments/snapshot) and follow its token.",
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


def header(schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


def headers(policy: str) -> dict[str, dict[str, Any]]:
    return {
        "X-Request-Id": header(
            {"type": "string"},
            "The request's id (the caller's X-Request-Id when it is 1-128 of A-Z a-z 0-9 . _ -); "
            "quote it when reporting a problem.",
            required=True,
        ),
        "X-Rate-Limit-Limit": header(
            {"type": "integer", "minimum": 0},
            f"The site's rate-limit ceiling for the current window ({policy}, spec §15); on a 429 "
            "for repeated failed authentications, the client address's failure limit instead.",
        ),
        "X-Rate-Limit-Remaining": header(
            {"type": "integer", "minimum": 0},
            "Requests left in the current window for the whole site (spec §15), or 0 on a 429 for "
            "repeated failed authentications.",
        ),
        "X-Rate-Limit-Reset": header(
            {"type": "integer", "minimum": 0}, "Seconds until the current window resets."
        ),
        "RateLimit-Policy": header(
            {"type": "string"},
            'The policy as draft-ietf-httpapi-ratelimit-headers writes it, e.g. `"site";q=60;w=60` '
            "for 60 requests a minute.",
        ),
        "RateLimit": header(
            {"type": "string"},
            'The window as draft-ietf-httpapi-ratelimit-headers writes it: `"site";r=15;t=42` '
            "(requests remaining, seconds to reset).",
        ),
        "Retry-After": header(
            {"type": "integer", "minimum": 1},
            "Seconds to wait before trying again.",
            required=True,
        ),
        "ETag": header(
            {"type": "string"},
            "A validator of this response (token scope, query and data version); send it back "
            "in If-None-Match to get 304 Not Modified while nothing changed.",
            required=True,
        ),
        "Link": header(
            {"type": "string"},
            "RFC 8288 links to the `next` (absent on the last page), `last`, `first` and `prev` "
            "(absent on the first page) pages (spec §12). Follow them as given: a `next` link may "
            "carry an opaque `after` cursor that makes the next page fast.",
            required=True,
        ),
        "X-Total-Count": header(
            {"type": "integer", "minimum": 0},
            "The number of rows (enrolments, or work units) the whole query matches (spec §12).",
            required=True,
        ),
        "X-Data-Version": header(
            {"type": "string"},
            "Opaque; changes with every import. Rows may move between pages when it does, so a "
            "client walking the pages should read the result again if it changes on the way.",
            required=True,
        ),
        "X-Changes-Token": header(
            {"type": "string"},
            "The changes token for what this response brought the copy to: send it as `since` to "
            "GET /api/v1/enrolments/changes. Opaque and sealed.",
            required=True,
        ),
        "Content-Encoding": header(
            {"type": "string", "enum": ["gzip"]},
            "gzip when the request's Accept-Encoding allows it; absent otherwise.",
        ),
        "Vary": header({"type": "string"}, "Accept-Encoding: the body's coding follows it.", required=True),
        "WWW-Authenticate": header(
            {"type": "string"}, "The Basic challenge, so a browser asks for the keys (spec §6)."
        ),
    }


