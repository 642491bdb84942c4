"""GET /api/v1/enrolments/snapshot and /changes: an exact copy of what a token sees, then what changed since.

A snapshot streams every row the listing would page through, in the report's order, with the
changes token of the same database snapshot (`X-Changes-Token`); the change feed then gives, per
enrolment changed since, its row as the token sees it now, or its deletion. A copy built from a
snapshot and then the changes equals the listing. See docs/architecture.md, "Exact copies".
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Iterable, Iterator
from urllib.parse import urlencode

from flask import Response, request, stream_with_context

from southrock_api.api.errors import BAD_PARAMETER, CHANGES_EXPIRED, ApiError
from southrock_api.data.feed_tokens import ChangesToken, scope_of
from southrock_api.api.parameters import SINCE_EXPECTATION
from southrock_api.api.pipeline import accepts_gzip
from southrock_api.api.rendering import changes_json, enrolment_renderer, enrolment_row_format
from southrock_api.api.state import current_state
from southrock_api.api.views import bp
from southrock_api.data.changes import last_position, pruned_through, seal_key
from southrock_api.data.db import end_session, get_database, get_session, take_session
from southrock_api.data.deadlines import renewed
from southrock_api.report.changes import FeedScope, read_changes
from southrock_api.report.summary import Filters, fetch_page
from southrock_api.report.visibility import hierarchy

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
# Rows per block of a snapshot: read, encoded and sent before the next is read, so a worker holds
# one block at a time however large the result.
SNAPSHOT_BLOCK_ROWS = 5000
# Work units per block: one arm each in the page statement, and SQLite allows at most 500.
SNAPSHOT_BLOCK_UNITS = 500
# gzip's header and trailer around a deflate stream (zlib's wbits 16 + 15).
GZIP_WBITS = 31


@bp.get("/enrolments/snapshot")
def enrolment_snapshot() -> Response:
    """Stream every completed enrolment the token sees as JSON Lines, a closing record, and the changes token of that snapshot."""
    state = current_state()
    query = state.valid_parameters().snapshot
    assert query is not None  # the pipeline loads this endpoint's parameters
    principal, data_version = state.principal, state.versions.data
    session = get_session()
    connection = session.connection()
    # Read in the request's one snapshot, like every row below: the copy is exact as of it.
    token = ChangesToken.start(
        scope_of(principal.unit_type, principal.unit_code), query.orgcodes, query.sdate, query.edate,
        last_position(connection),
    )
    units = hierarchy(session, data_version).visible(principal.unit_type, principal.unit_id, query.orgcodes)
    units_key = (principal.unit_type, principal.unit_id, tuple(sorted(set(query.orgcodes or ()))))
    filters = Filters(query.sdate, query.edate)
    timeout = get_database().timeout

    changes_token = token.encode(seal_key(connection))
    # The stream owns the request's session from here: its rows all come from the one snapshot
    # the token above was read in, however long after the view returns they are read. It is
    # ended once, when the rows run out or fail, or when the server closes a stream the client left.
    session, request_deadline = take_session()
    ended: list[bool] = []

    def end() -> None:
        if not ended:
            ended.append(True)
            end_session(session, request_deadline)

    def lines() -> Iterator[str]:
        start, after = 1, None
        try:
            while True:
                # Each block under a fresh deadline: a stream may rightly take minutes, and a stalled
                # database still ends it within one block's bound.
                with renewed(timeout, "a block of the snapshot"):
                    page = fetch_page(
                        session, data_version, units, filters, start, SNAPSHOT_BLOCK_ROWS, after, units_key,
                        row_format=enrolment_row_format, max_units=SNAPSHOT_BLOCK_UNITS,
                    )
                if not page.rows:
                    break
                yield enrolment_renderer.json_lines(page.rows)
                start += len(page.rows)
                after = page.last
            # Without this line a client knows the stream was cut.
            yield json.dumps({"END": True, "ROWS": start - 1}, separators=(",", ":")) + "\n"
        except GeneratorExit:
            raise  # the client went away: the server closed the stream
        except Exception:  # noqa: BLE001  (the status was sent: the stream can only end, unclosed)
            log.exception("snapshot stream cut after %d rows", start - 1)
        finally:
            end()

    gzip = accepts_gzip()
    body: Iterator[bytes] = _gzip(lines()) if gzip else (text.encode() for text in lines())
    response = Response(stream_with_context(body), mimetype=NDJSON)
    response.call_on_close(end)
    response.headers["X-Changes-Token"] = changes_token
    response.headers["Vary"] = "Accept-Encoding"
    if gzip:
        response.headers["Content-Encoding"] = "gzip"
    return response


def _gzip(texts: Iterable[str]) -> Iterator[bytes]:
    """gzip a stream of text, flushed after every piece so that each block reaches the client as it is read."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, GZIP_WBITS)
    for text in texts:
        yield compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()




@bp.get("/enrolments/changes")
def enrolment_changes() -> Response:
    """Return the changes since a changes token, one per enrolment, with the token to send next (and Link next)."""
    state = current_state()
    query = state.valid_parameters().changes
    assert query is not None  # the pipeline loads this endpoint's parameters
    principal = state.principal
    session = get_session()
    connection = session.connection()
    key = seal_key(connection)
    scope = scope_of(principal.unit_type, principal.unit_code)
    token = ChangesToken.decode(query.since, key)
    if token is None or token.scope != scope:
        # spec §13's wording; forged, truncated and other units' tokens alike, so none is told apart.
        raise ApiError(BAD_PARAMETER, f"Invalid parameter found: since, expected {SINCE_EXPECTATION}")
    newest = last_position(connection)
    # Below the pruned positions the log no longer says what changed; beyond the newest it never
    # did (a database restored from before the token was issued): either way only a new snapshot helps.
    if token.origin < pruned_through(connection) or max(token.cursor, token.end or 0) > newest:
        raise ApiError(CHANGES_EXPIRED)
    end = token.end if token.end is not None else newest
    orgcodes = list(token.orgcodes) if token.orgcodes is not None else None
    feed = FeedScope(
        scope,
        frozenset(orgcodes) if orgcodes is not None else None,
        hierarchy(session, state.versions.data).visible(principal.unit_type, principal.unit_id, orgcodes),
        Filters(token.sdate, token.edate),
        state.versions.data,
    )
    page = read_changes(connection, feed, token.origin, end, token.cursor, query.limit, enrolment_row_format)
    following = token.following(end, page.cursor).encode(key)
    response = Response(
        changes_json((change.sch_id, change.row) for change in page.changes) + "\n", mimetype="application/json"
    )
    response.headers["X-Changes-Token"] = following
    if page.more:
        next_url = f"{request.base_url}?" + urlencode([("since", following), ("limit", str(query.limit))])
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response
