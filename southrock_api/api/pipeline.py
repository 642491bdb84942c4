"""The /api/v1 request before and after its view: credentials → versions and principal → parameters → ETag → last-used write.

Each step is a plain function of values. `authenticate_request`, a before_request that must run
before the limiter's (spec §15: only authenticated requests spend the site's bucket; api.check_order),
chains them and stores the result once, as a RequestState (api.state); `finish` applies it to the response.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from flask import Flask, Response, current_app, request
from sqlalchemy.orm import Session

from southrock_api.api import paging, parameters, ratelimit
from southrock_api.api.auth import (
    Principal,
    TokenCache,
    authenticate,
    needs_last_used,
    parse_basic,
    record_last_used,
)
from southrock_api.api.errors import AUTHENTICATION_FAILED, ENDPOINT_NOT_SUPPORTED, ApiError, in_api_namespace
from southrock_api.api.parameters import Parameters
from southrock_api.api.state import RequestState, find_state, note_named_key, store
from southrock_api.data.deadlines import deadline
from southrock_api.data.db import Database, Versions, begin_snapshot, get_database, get_session, read_versions

# The endpoints whose parameters a schema loads (spec §12, §17.1.2); every endpoint's are decoded (spec §10).
ENROLMENTS_ENDPOINT = "api.list_enrolments"
UNITS_ENDPOINT = "api.list_units"
SNAPSHOT_ENDPOINT = "api.enrolment_snapshot"
CHANGES_ENDPOINT = "api.enrolment_changes"
_LISTS = {
    ENROLMENTS_ENDPOINT: parameters.ENROLMENTS,
    UNITS_ENDPOINT: parameters.UNITS,
    SNAPSHOT_ENDPOINT: parameters.SNAPSHOT,
    CHANGES_ENDPOINT: parameters.CHANGES,
}


def require_https() -> None:
    """Refuse a plain-HTTP request in the API's namespace (spec §8c) before anything else runs."""
    if (
        current_app.config["REQUIRE_HTTPS"]
        and in_api_namespace(request.path)
        and request.scheme != "https"
    ):
        raise ApiError(ENDPOINT_NOT_SUPPORTED, "Endpoint not supported: use https://")


def identify(
    session: Session, credentials: tuple[str, str], now: dt.datetime, cache: TokenCache
) -> tuple[Versions, Principal]:
    """Open the request's snapshot, read both versions as its first statement, and authenticate as of them."""
    begin_snapshot(session)
    # The tokens and the data the request serves are both as of these versions.
    versions = read_versions(session)
    return versions, authenticate(session, credentials, now, versions, cache)


def read_parameters(query_string: bytes, endpoint: str | None) -> Parameters | ApiError:
    """Parse the query, once for the whole request; an invalid one is returned as its E3010, not raised."""
    try:
        return parameters.parse(query_string, _LISTS.get(endpoint or ""))
    except ApiError as error:
        return error


def accepts_gzip() -> bool:
    """Whether the request's Accept-Encoding allows gzip (RFC 9110 §12.5.3: `gzip`, `x-gzip` or `*`, q > 0)."""
    encodings = request.accept_encodings
    return max(encodings.quality("gzip"), encodings.quality("x-gzip")) > 0


def representation(endpoint: str | None) -> str:
    """The content coding the endpoint will answer with: its gzip and identity bodies are different representations."""
    return "gzip" if endpoint == SNAPSHOT_ENDPOINT and accepts_gzip() else "identity"


def entity_tag(
    endpoint: str | None,
    data_version: str,
    principal: Principal,
    query: Parameters | ApiError,
    coding: str = "identity",
) -> str | None:
    """The response's ETag: the endpoint, the data, the token's scope and the parameters; None for a bad query."""
    if isinstance(query, ApiError):
        # No ETag, so no 304 (not even for `If-None-Match: *`): the view reports the error after
        # the request has been counted (RFC 9110 §13.2.1: preconditions apply to 2xx answers only).
        return None
    # spec §5.1a: parameter order never matters, so it does not change the ETag either. Every
    # other parameter takes part: on /changes `since` and `limit`, so an unchanged feed (same
    # token, no import since) answers 304 and a moved one never does.
    pairs = sorted((name, value) for name, value in query.pairs if name != "after")
    return paging.fingerprint(endpoint, data_version, principal.unit_type, principal.unit_id, pairs, coding)


def last_used_writer(
    database: Database, cache: TokenCache, versions: Versions, principal: Principal, now: dt.datetime
) -> Callable[[], None] | None:
    """The write of the token's last-used time if one is due (marked in the cache as done), else None."""
    if not needs_last_used(principal, now):
        return None
    token_id = principal.token_id
    cache.used(versions, principal.public_key, now)

    def write_last_used() -> None:
        # After the response, outside the request's deadline: a bound of its own, so a frozen
        # database holds the thread no longer than it would a request.
        with deadline(database.timeout, "the token's last-used write"):
            session = database.session_factory()
            try:
                record_last_used(session, token_id, now)
            finally:
                session.close()

    return write_last_used


def authenticate_request() -> Response | None:
    """Run the steps for an /api/v1 request before the limiter sees it; answer a matching ETag 304 without spending it."""
    if request.blueprint != "api":
        return None
    now = dt.datetime.now(dt.timezone.utc)
    cache: TokenCache = current_app.extensions["southrock_tokens"]
    try:
        # A missing or malformed header is refused before any database work.
        credentials = parse_basic(request.headers.get("Authorization"))
        # For the access log: a failed attempt with a leaked or revoked key is then visible there.
        # Only the public key parse_basic accepted; never anything from the password part.
        note_named_key(credentials[0])
        versions, principal = identify(get_session(), credentials, now, cache)
    except ApiError as error:
        if error.error is AUTHENTICATION_FAILED:
            # Only failures are counted and refused: a valid key is served even from an address
            # that has failed too often (a shared NAT, say), so nobody there can lock it out, and
            # a successful request costs no read of the failure counter.
            client = ratelimit.client_key(request.remote_addr)
            ratelimit.check_auth_failures(client)
            ratelimit.record_auth_failure(client)
        raise
    query = read_parameters(request.query_string, request.endpoint)
    state = RequestState(
        versions,
        principal,
        query,
        entity_tag(request.endpoint, versions.data, principal, query, representation(request.endpoint)),
        last_used_writer(get_database(), cache, versions, principal, now),
    )
    store(state)
    # RFC 9110 §13.1.2: If-None-Match uses weak comparison (proxies may weaken our tags).
    if state.etag is not None and request.if_none_match.contains_weak(state.etag):
        return _not_modified(state.etag)
    return None


def _not_modified(etag: str) -> Response:
    response = Response(status=304)
    response.set_etag(etag)
    return response


def finish(response: Response) -> Response:
    """Tag a 200 with the request's ETag; write the token's last-used time once the response is sent."""
    state = find_state()
    if state is None:
        return response
    if state.etag is not None and response.status_code == 200:
        response.set_etag(state.etag)
    if state.after_response is not None:
        # After the response is sent: the client never waits for this write.
        response.call_on_close(state.after_response)
    return response


def init_app(app: Flask) -> None:
    """Create the token cache and register the pipeline's hooks (api.init_app puts them before the limiter)."""
    app.extensions["southrock_tokens"] = TokenCache()
    app.before_request(require_https)
    app.before_request(authenticate_request)
    app.after_request(finish)
