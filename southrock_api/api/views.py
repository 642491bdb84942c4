"""The /api/v1 blueprint: authenticate → parse → resolve visible units → query → render."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from marshmallow import ValidationError

from southrock_api.api import paging, ratelimit
from southrock_api.api.auth import (
    Principal,
    TokenCache,
    authenticate,
    needs_last_used,
    parse_basic,
    record_last_used,
)
from southrock_api.data.deadlines import deadline
from southrock_api.data.db import begin_snapshot, get_database, get_session, read_versions
from southrock_api.report.summary import Filters, SortKey, fetch_page
from southrock_api.api.errors import (
    AUTHENTICATION_FAILED,
    BAD_PARAMETER,
    ENDPOINT_NOT_SUPPORTED,
    ApiError,
    in_api_namespace,
)
from southrock_api.api.rendering import (
    EXPECTATIONS,
    REPEATABLE,
    business_unit_schema,
    enrolment_query_schema,
    enrolment_renderer,
    work_unit_schema,
)
from southrock_api.report.visibility import hierarchy

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _require_https() -> None:
    # spec §8c: API requests must use HTTPS; a plain-HTTP URL is outside the API's namespace.
    if (
        current_app.config["REQUIRE_HTTPS"]
        and in_api_namespace(request.path)
        and request.scheme != "https"
    ):
        raise ApiError(ENDPOINT_NOT_SUPPORTED, "Endpoint not supported: use https://")


def _authenticate() -> Response | None:
    """Authenticate API requests before the limiter sees them; answer 304s without spending it."""
    if request.blueprint != "api":
        return None
    now = dt.datetime.now(dt.timezone.utc)
    cache: TokenCache = current_app.extensions["southrock_tokens"]
    try:
        # A missing or malformed header is refused before any database work.
        credentials = parse_basic(request.headers.get("Authorization"))
        session = get_session()
        begin_snapshot(session)
        # The request's first read: the tokens and the data it serves are both as of these versions.
        versions = read_versions(session)
        g.data_version = versions.data
        g.principal = authenticate(session, credentials, now, versions, cache)
    except ApiError as error:
        if error.error is AUTHENTICATION_FAILED:
            # Only failures are counted and refused: a valid key is served even from an address
            # that has failed too often (a shared NAT, say), so nobody there can lock it out, and
            # a successful request costs no read of the failure counter.
            client = ratelimit.client_key(request.remote_addr)
            ratelimit.check_auth_failures(client)
            ratelimit.record_auth_failure(client)
        raise
    if needs_last_used(g.principal, now):
        token_id = g.principal.token_id
        cache.used(versions, g.principal.public_key, now)
        app = current_app._get_current_object()  # type: ignore[attr-defined]

        def write_last_used() -> None:
            database = get_database(app)
            # Outside the request, so under a deadline of its own: a frozen database holds the
            # thread no longer than it would a request.
            with deadline(database.timeout, "the token's last-used write"):
                session = database.session_factory()
                try:
                    record_last_used(session, token_id, now)
                finally:
                    session.close()

        # After the response is sent: the client never waits for this write.
        g.after_response = write_last_used
    etag = _etag(g.principal, g.data_version)
    if etag is not None:
        g.etag = etag
        # RFC 9110 §13.1.2: If-None-Match uses weak comparison (proxies may weaken our tags).
        if request.if_none_match.contains_weak(etag):
            return _not_modified(etag)
    return None


def _etag(principal: Principal, data_version: str) -> str | None:
    try:
        pairs = paging.parse_query(request.query_string)
        arguments = _parse_arguments(pairs) if request.endpoint == "api.list_enrolments" else None
        g.query = (pairs, arguments)  # parsed once, used again by the view
    except ApiError:
        # No ETag, so no 304 (not even for `If-None-Match: *`): the view reports the error after
        # the request has been counted (RFC 9110 §13.2.1: preconditions apply to 2xx answers only).
        return None
    # spec §5.1a: parameter order never matters, so it does not change the ETag either.
    pairs = sorted((name, value) for name, value in pairs if name != "after")
    return paging.fingerprint(
        request.endpoint, data_version, principal.unit_type, principal.unit_id, pairs
    )


def _not_modified(etag: str) -> Response:
    response = Response(status=304)
    response.set_etag(etag)
    return response


def _finish(response: Response) -> Response:
    if "etag" in g and response.status_code == 200:
        response.set_etag(g.etag)
    callback = g.pop("after_response", None)
    if callback is not None:
        response.call_on_close(callback)
    return response


@bp.get("")
@bp.get("/")
def whoami() -> Response:
    """Return the token's business unit or work unit (spec §16)."""
    principal: Principal = g.principal
    if "query" not in g:
        paging.parse_query(request.query_string)  # raises E3010: spec §10 holds on every endpoint
    schema = business_unit_schema if principal.unit_type == "business_unit" else work_unit_schema
    return jsonify(schema.dump(principal))


_KNOWN = frozenset(enrolment_query_schema.fields) | {"after"}


def _parse_arguments(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    try:
        # `after` is taken from the pairs by the view; known here, it may not be repeated either.
        arguments = paging.to_arguments(pairs, REPEATABLE, _KNOWN)
        return enrolment_query_schema.load(arguments)
    except ValidationError as error:
        name = sorted(error.normalized_messages())[0]
        raise ApiError(
            BAD_PARAMETER,
            f"Invalid parameter found: {name}, expected {EXPECTATIONS.get(name, 'a valid value')}",
        ) from None


@bp.get("/enrolments")
def list_enrolments() -> Response:
    """Return one page of the token's completed enrolments (spec §17) with Link and X-Total-Count."""
    principal: Principal = g.principal
    if "query" in g:
        pairs, arguments = g.query
    else:
        pairs = paging.parse_query(request.query_string)
        arguments = _parse_arguments(pairs)
    start, limit = arguments["start"], arguments["limit"]
    filters = Filters(arguments["SDATE"], arguments["EDATE"])
    session = get_session()
    units = hierarchy(session, g.data_version).visible(
        principal.unit_type, principal.unit_id, arguments["ORGCODES"]
    )
    # Within a data version the units are a function of these, so they stand in for (thousands of)
    # unit ids: in the cursor's fingerprint and as the key of the units' cached running totals.
    units_key = (principal.unit_type, principal.unit_id, tuple(sorted(set(arguments["ORGCODES"] or ()))))
    fingerprint = paging.fingerprint(g.data_version, principal.unit_type, principal.unit_id, filters, list(units_key[2]))
    after = _resume_point(dict(pairs).get("after"), fingerprint, start)
    page = fetch_page(session, g.data_version, units, filters, start, limit, after, units_key)
    next_cursor = None
    if page.last is not None:
        next_cursor = paging.Cursor.issue(fingerprint, start + len(page.rows) - 1, page.last).encode()
    # Rows arrive dumped by EnrolmentSchema's renderer (schemas.RowRenderer); "\n" as jsonify ends.
    response = Response(enrolment_renderer.json_array(page.rows) + "\n", mimetype="application/json")
    response.headers["X-Total-Count"] = str(page.total)
    # Changes with every import; a client walking the pages learns that the data changed under it
    # (rows may then shift between pages). A digest: the version itself seals the cursors.
    response.headers["X-Data-Version"] = paging.fingerprint("data version", g.data_version)
    response.headers["Link"] = paging.link_header(
        request.base_url, pairs, start, limit, page.total, next_cursor
    )
    return response


def _resume_point(text: str | None, fingerprint: str, start: int) -> SortKey | None:
    """Use a cursor from a link we issued only if it is for this exact result and row start-1."""
    if not text:
        return None
    cursor = paging.Cursor.decode(text)
    if cursor is None or not cursor.resumes(fingerprint, start - 1):
        return None
    return cursor.key


def init_app(app: Flask) -> None:
    """Register the blueprint and the checks that run before the limiter."""
    app.extensions["southrock_tokens"] = TokenCache()
    app.before_request(_require_https)
    app.before_request(_authenticate)
    app.after_request(_finish)
    app.register_blueprint(bp)
