"""The /api/v1 blueprint: from the request's state (api.pipeline) → visible units → the report's page → the answer."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify, request

from southrock_api.api import paging
from southrock_api.api.rendering import (
    business_unit_schema,
    enrolment_renderer,
    enrolment_row_format,
    unit_schema,
    work_unit_schema,
)
from southrock_api.api.state import current_state
from southrock_api.data.db import get_session
from southrock_api.report.summary import Filters, SortKey, fetch_page
from southrock_api.report.visibility import hierarchy

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.get("")
@bp.get("/")
def whoami() -> Response:
    """Return the token's business unit or work unit (spec §16)."""
    state = current_state()
    state.valid_parameters()  # E3010 for a bad query: spec §10 holds on every endpoint
    principal = state.principal
    schema = business_unit_schema if principal.unit_type == "business_unit" else work_unit_schema
    return jsonify(schema.dump(principal))


@bp.get("/enrolments")
def list_enrolments() -> Response:
    """Return one page of the token's completed enrolments (spec §17) with Link and X-Total-Count."""
    state = current_state()
    parameters = state.valid_parameters()
    query = parameters.enrolments
    assert query is not None  # the pipeline loads this endpoint's parameters
    principal, data_version = state.principal, state.versions.data
    start, limit = query.start, query.limit
    filters = Filters(query.sdate, query.edate)
    session = get_session()
    units = hierarchy(session, data_version).visible(principal.unit_type, principal.unit_id, query.orgcodes)
    # Within a data version the units are a function of these, so they stand in for (thousands of)
    # unit ids: in the cursor's fingerprint and as the key of the units' cached running totals.
    units_key = (principal.unit_type, principal.unit_id, tuple(sorted(set(query.orgcodes or ()))))
    fingerprint = paging.fingerprint(data_version, principal.unit_type, principal.unit_id, filters, list(units_key[2]))
    after = _resume_point(query.after, fingerprint, start)
    page = fetch_page(
        session, data_version, units, filters, start, limit, after, units_key, row_format=enrolment_row_format
    )
    next_cursor = None
    if page.last is not None:
        next_cursor = paging.Cursor.issue(fingerprint, start + len(page.rows) - 1, page.last).encode()
    # Rows arrive written in EnrolmentSchema's format (rendering.enrolment_row_format), in its key
    # order; "\n" as jsonify ends.
    response = Response(enrolment_renderer.json_array(page.rows) + "\n", mimetype="application/json")
    response.headers["X-Total-Count"] = str(page.total)
    response.headers["X-Data-Version"] = _data_version(data_version)
    response.headers["Link"] = paging.link_header(
        request.base_url, parameters.pairs, start, limit, page.total, next_cursor
    )
    return response


@bp.get("/units")
def list_units() -> Response:
    """Return one page of the work units the token sees, by code, with Link and X-Total-Count (spec §4, §12)."""
    state = current_state()
    parameters = state.valid_parameters()
    query = parameters.units
    assert query is not None  # the pipeline loads this endpoint's parameters
    principal, data_version = state.principal, state.versions.data
    # The units whose enrolments the token reads (spec §7, §17.1.1): the codes ORGCODES takes.
    units = hierarchy(get_session(), data_version).listing(principal.unit_type, principal.unit_id)
    page = units[query.start - 1 : query.start - 1 + query.limit]
    response = jsonify(unit_schema.dump(page, many=True))
    response.headers["X-Total-Count"] = str(len(units))
    response.headers["X-Data-Version"] = _data_version(data_version)
    # Held in memory per data version, so a page is a slice: its next link needs no cursor.
    response.headers["Link"] = paging.link_header(
        request.base_url, parameters.pairs, query.start, query.limit, len(units), None
    )
    return response


def _data_version(data_version: str) -> str:
    """X-Data-Version: changes with every import, so a client walking the pages learns that rows may have moved.

    A digest: the version itself seals the cursors.
    """
    return paging.fingerprint("data version", data_version)


def _resume_point(text: str | None, fingerprint: str, start: int) -> SortKey | None:
    """Use a cursor from a link we issued only if it is for this exact result and row start-1."""
    if not text:
        return None
    cursor = paging.Cursor.decode(text)
    if cursor is None or not cursor.resumes(fingerprint, start - 1):
        return None
    return cursor.key


def init_app(app: Flask) -> None:
    """Register the blueprint, with the snapshot's and the change feed's routes (api.feed_views)."""
    from southrock_api.api import feed_views  # noqa: F401  (its views are routes of bp)

    app.register_blueprint(bp)
