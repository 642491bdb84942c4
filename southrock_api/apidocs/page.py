"""GET /openapi.json and the /docs page, both rendered from one OpenAPI document; no auth, no limit."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, current_app, render_template, request
from markupsafe import Markup, escape

from southrock_api.api.parameters import MAX_CHANGES_LIMIT, MAX_LIMIT
from southrock_api.apidocs.openapi import document_for, policy_text
from southrock_api.apidocs.texts import (
    CHANGES_PATH,
    ENROLMENTS_PATH,
    SERVER_REFUSAL_BODY,
    SERVER_REFUSALS,
    SNAPSHOT_PATH,
    UNITS_PATH,
)

# Outside /api: neither authenticated nor counted by the site's limiter (it counts `api` only).
bp = Blueprint("docs", __name__, template_folder="templates", static_folder="static", static_url_path="/static")

# A strict policy: everything the page needs is served by the app itself (no CDN, no inline code).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
LANGUAGES = (
    ("curl", "cURL", "example_curl.sh.j2"),
    ("python", "Python", "example_python.py.j2"),
    ("node", "Node.js", "example_node.mjs.j2"),
    ("csharp", "C#", "example_csharp.cs.j2"),
)
# The snapshot and the change feed are used together: one loop, in "Keeping a copy", is their example.
COPY_TEMPLATES = {
    "curl": "copy_curl.sh.j2",
    "python": "copy_python.py.j2",
    "node": "copy_node.mjs.j2",
    "csharp": "copy_csharp.cs.j2",
}
COPY_PATHS = (SNAPSHOT_PATH, CHANGES_PATH)
COPY_ANCHOR = "keeping-a-copy"
COPY_NOTE = (
    "To copy less, add ORGCODES, SDATE and EDATE to the snapshot's URL, as on GET",
    "/api/v1/enrolments: its changes token carries them.",
)
_CODE_SPAN = re.compile(r"`([^`]+)`")
_PLAIN_ROOT = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
PLACEHOLDER_ROOT = "https://your_site.southrock.com"


@dataclass(frozen=True)
class ListExample:
    """How the examples walk one list: what they ask for, what they print, and how to narrow it."""

    query: dict[str, Any]
    noun: str  # the rows' variable, and the Node.js script's name
    item: str  # one row's variable
    columns: tuple[str, ...]  # the properties printed, one row a line
    note: tuple[str, ...]  # comment lines above the first URL
    narrow_params: tuple[str, ...] = ()  # how to narrow it, in Python's parameters
    narrow_url: tuple[str, ...] = ()  # and in the other languages' URL


# The examples ask for everything the token sees (no filter that matches nothing on a real site),
# at the largest page (spec §17.1.2) to spend as few of the site's requests as possible, and
# follow `next` (spec §12) from there.
LIST_EXAMPLES = {
    ENROLMENTS_PATH: ListExample(
        query={"limit": MAX_LIMIT},
        noun="enrolments",
        item="enrolment",
        columns=("LR_ID", "CRS_CODE", "SCH_AEDATE", "SCH_SCORE"),
        note=(f"Every completed enrolment the token sees, {MAX_LIMIT} a page.",),
        narrow_params=(
            'To narrow it, add "ORGCODES": [...] (ORG_CODEs that GET /api/v1/units lists),',
            '"SDATE" and "EDATE" ("YYYY-MM-DD") to these parameters.',
        ),
        narrow_url=(
            "To narrow it, add &ORGCODES=CODE for each Work Unit (ORG_CODEs that GET /api/v1/units",
            "lists), &SDATE=YYYY-MM-DD and &EDATE=YYYY-MM-DD to this URL.",
        ),
    ),
    UNITS_PATH: ListExample(
        query={"limit": MAX_LIMIT},
        noun="units",
        item="unit",
        columns=("ORG_CODE", "PARENT_ORG_CODE", "ORGGRP_CODE", "ORG_NAME"),
        note=(
            f"Every Work Unit the token sees, {MAX_LIMIT} a page. Each ORG_CODE is a code that",
            "ORGCODES takes in GET /api/v1/enrolments.",
        ),
    ),
}


@dataclass(frozen=True)
class Parameter:
    """One parameter as the page lists it."""

    name: str
    location: str
    type: str
    default: str
    rules: list[str]
    description: str


@dataclass(frozen=True)
class ResponseRow:
    """One documented status of an operation."""

    status: str
    codes: list[str]
    description: str
    headers: list[str]


@dataclass(frozen=True)
class Example:
    """One copyable request example."""

    language: str
    label: str
    code: str


@dataclass(frozen=True)
class Endpoint:
    """One operation of the document, resolved for display."""

    anchor: str
    method: str
    path: str
    summary: str
    description: str
    note: str
    parameters: list[Parameter]
    responses: list[ResponseRow]
    examples: list[Example]


def current_document() -> dict[str, Any]:
    """The document for this app's configured rate limit."""
    return document_for(str(current_app.config["RATE_LIMIT"]))


def resolve_ref(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref (#/components/...) to the object it names."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _type_text(schema: dict[str, Any]) -> str:
    if schema.get("type") == "array":
        return f"array of {_type_text(schema['items'])}"
    return schema.get("format") or schema.get("type", "string")


def _rules(parameter: dict[str, Any]) -> list[str]:
    schema = parameter["schema"]
    items = schema.get("items", schema)
    rules = []
    if schema.get("type") == "array" and parameter.get("explode"):
        rules.append(f"repeatable: {parameter['name']}=A&{parameter['name']}=B")
    if "maxItems" in schema:
        rules.append(f"at most {schema['maxItems']} values")
    if "minLength" in items or "maxLength" in items:
        rules.append(f"{items.get('minLength', 0)}–{items.get('maxLength', '∞')} characters")
    if items.get("format") == "date":
        rules.append("YYYY-MM-DD")
    if "minimum" in items or "maximum" in items:
        rules.append(f"{items.get('minimum', '−∞')}–{items.get('maximum', '∞')}")
    return rules


def _parameters(document: dict[str, Any], operation: dict[str, Any]) -> list[Parameter]:
    rows = []
    for node in operation.get("parameters", []):
        parameter = resolve_ref(document, node)
        schema = parameter["schema"]
        rows.append(
            Parameter(
                name=parameter["name"],
                location=parameter["in"],
                type=_type_text(schema),
                default=str(schema["default"]) if "default" in schema else "",
                rules=_rules(parameter),
                description=parameter.get("description", ""),
            )
        )
    return rows


def _responses(document: dict[str, Any], operation: dict[str, Any]) -> list[ResponseRow]:
    rows = []
    for status, node in operation["responses"].items():
        response = resolve_ref(document, node)
        examples = response.get("content", {}).get("application/json", {}).get("examples", {})
        codes = [name for name in examples if name.startswith("E")]
        rows.append(
            ResponseRow(
                status=status,
                codes=codes,
                description=response["description"],
                headers=list(response.get("headers", {})),
            )
        )
    return rows


def _examples(base_url: str, path: str) -> list[Example]:
    """The examples of one endpoint: a single GET, or a list walked to its last page."""
    listing = LIST_EXAMPLES.get(path)
    query = listing.query if listing else {}
    context = {
        "url": base_url + path + ("?" + urlencode(query, doseq=True) if query else ""),
        "path_url": base_url + path,
        # JSON of strings, numbers and lists is also a Python literal.
        "python_params": json.dumps(query),
        "paged": listing is not None,
        "noun": listing.noun if listing else "",
        "item": listing.item if listing else "",
        "columns": listing.columns if listing else (),
        "script": listing.noun if listing else "whoami",
    }
    examples = []
    for language, label, template in LANGUAGES:
        narrow = (listing.narrow_params if language == "python" else listing.narrow_url) if listing else ()
        note = (*listing.note, *narrow) if listing else ()
        code = render_template(template, narrow=note, **context)
        examples.append(Example(language, label, code.strip() + "\n"))
    return examples


def copy_examples(base_url: str) -> list[Example]:
    """The loop that keeps a copy: a snapshot the first time, the changes since on every later run."""
    context = {
        "snapshot_url": base_url + SNAPSHOT_PATH,
        "changes_url": base_url + CHANGES_PATH,
        # The largest page: as few of the site's requests as possible.
        "changes_limit": MAX_CHANGES_LIMIT,
        "narrow": COPY_NOTE,
    }
    return [
        Example(language, label, render_template(COPY_TEMPLATES[language], **context).strip() + "\n")
        for language, label, _template in LANGUAGES
    ]


def endpoints(document: dict[str, Any], base_url: str) -> list[Endpoint]:
    """Every operation of the document, resolved for the page, with examples against base_url."""
    rows = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                continue
            rows.append(
                Endpoint(
                    anchor=operation["operationId"],
                    method=method.upper(),
                    path=path,
                    summary=operation["summary"],
                    description=operation["description"],
                    note=item.get("description", ""),
                    parameters=_parameters(document, operation),
                    responses=_responses(document, operation),
                    # The copy loop in its own section is these two endpoints' example.
                    examples=[] if path in COPY_PATHS else _examples(base_url, path),
                )
            )
    return rows


def _base_url() -> str:
    """This site's root URL for the examples, unless the Host header makes it look odd."""
    root = request.url_root.rstrip("/")
    # The URL is pasted into shell and source code: only a plain scheme://host[:port] goes in.
    return root if _PLAIN_ROOT.fullmatch(root) else PLACEHOLDER_ROOT


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """Return the OpenAPI 3 document of the API, as plain ASCII JSON.

    The API's own responses write UTF-8 as is (spec §10: app.json.ensure_ascii is off), but the
    document's patterns hold U+FFFF, which YAML refuses raw, and tools such as
    openapi-spec-validator read JSON through a YAML loader. Here every non-ASCII character is a
    JSON escape, which every JSON reader (and every YAML one) decodes to the same text.
    """
    body = current_app.json.dumps(current_document(), ensure_ascii=True, separators=(",", ":"))
    response = current_app.response_class(body + "\n", mimetype="application/json")
    response.headers["Access-Control-Allow-Origin"] = "*"  # tools in other origins may load it
    return response


@bp.get("/docs")
def docs() -> str:
    """Return the human-readable API reference page."""
    document = current_document()
    base_url = _base_url()
    return render_template(
        "docs.html",
        info=document["info"],
        document=document,
        endpoints=endpoints(document, base_url),
        copy_anchor=COPY_ANCHOR,
        copy_examples=copy_examples(base_url),
        catalogue=document["x-error-catalogue"],
        refusals=SERVER_REFUSALS,
        refusal_body=SERVER_REFUSAL_BODY,
        headers={name: header["description"] for name, header in document["components"]["headers"].items()},
        security=document["components"]["securitySchemes"],
        base_url=base_url,
        policy=policy_text(str(current_app.config["RATE_LIMIT"])),
    )


@bp.after_request
def _secure_docs(response: Response) -> Response:
    if request.endpoint == "docs.docs":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.app_template_filter("inline_code")
def inline_code(text: str) -> Markup:
    """Render the document's `code` spans (CommonMark in descriptions) as <code>, all else escaped."""
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", str(escape(text))))


def init_app(app: Flask) -> None:
    """Register /openapi.json and /docs."""
    app.register_blueprint(bp)
