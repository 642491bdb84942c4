"""The per-site limiter (spec §15), its response headers and its storage."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, request
from flask_limiter import ApplicationLimit, Limiter
from limits import RateLimitItem, parse
from limits.errors import ConfigurationError

from southrock_api.api import ratelimit_store  # noqa: F401  (registers the sqlite:// and postgresql:// stores)
from southrock_api.config import ConfigError
from southrock_api.api.errors import RATE_LIMITED, ApiError, in_api_namespace

log = logging.getLogger(__name__)

# spec §15: "The current Rate Limit is on a per-site basis": every token shares one bucket.
SITE_KEY = "site"
SITE_SCOPE = "site"
AUTH_FAILURE_SCOPE = "auth-failures"


def _site_key() -> str:
    return SITE_KEY


def _not_api() -> bool:
    # Only authenticated API requests spend the site's bucket; health and docs never do.
    return request.blueprint != "api"


def _storage_options(uri: str, timeout: float) -> dict[str, Any]:
    if uri.startswith(("redis", "rediss")):
        # A hanging Redis must cost a bounded wait, after which the in-memory fallback serves.
        return {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 30,
        }
    return {"timeout": timeout}  # SQLStorage: a bound on every wait of PostgreSQL, SQLite's busy wait


def init_app(app: Flask) -> None:
    """Attach a limiter whose one application-wide limit is the site's bucket."""
    uri = app.config["RATELIMIT_STORAGE_URI"]
    limiter = Limiter(
        _site_key,
        application_limits=[
            ApplicationLimit(lambda: current_app.config["RATE_LIMIT"], scope=SITE_SCOPE)
        ],
        strategy="fixed-window",
        storage_uri=uri,
        storage_options=_storage_options(uri, float(app.config["RATELIMIT_STORAGE_TIMEOUT"])),
        # If the store fails, count in process memory and keep serving; the limiter retries the
        # store with exponential backoff and returns to it when it answers.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        headers_enabled=False,
        key_prefix=str(app.config["RATELIMIT_KEY_PREFIX"]),
    )
    limiter.request_filter(_not_api)
    try:
        limiter.init_app(app)
    except ConfigurationError:
        # Only its scheme: the URI (and limits' message) may hold the store's password.
        raise ConfigError(
            f"SOUTHROCK_RATELIMIT_STORAGE_URI: no store for {uri.partition(':')[0]!r} URIs; use redis://, "
            "rediss://, sqlite:/// or postgresql+psycopg://"
        ) from None
    app.extensions["southrock_limiter"] = limiter
    app.after_request(_add_headers)


def get_limiter(app: Flask | None = None) -> Limiter:
    """Return the app's limiter."""
    return (app or current_app).extensions["southrock_limiter"]


@dataclass(frozen=True)
class Window:
    """The state of a rate-limit window as the headers report it."""

    limit: int
    remaining: int
    reset_at: float


def site_window() -> Window | None:
    """The site bucket after this request: from the check if one ran, else a read."""
    limiter = get_limiter()
    current = limiter.current_limit
    try:
        if current is not None:
            stats = current.window
            return Window(current.limit.amount, stats.remaining, stats.reset_time)
        item = parse(current_app.config["RATE_LIMIT"])
        stats = limiter.limiter.get_window_stats(item, _prefix(), SITE_KEY, SITE_SCOPE)
        return Window(item.amount, stats.remaining, stats.reset_time)
    except Exception as error:  # noqa: BLE001  (a broken store must never break a response)
        _store_failed(limiter, "reading the window", error)
        return None


def _add_headers(response: Response) -> Response:
    # spec §15: the headers are on every API response, errors and the 429 included.
    if not in_api_namespace(request.path) or "X-Rate-Limit-Limit" in response.headers:
        return response  # not an API response, or a 429 that reports the limit it hit itself
    window = site_window()
    if window is None:
        return response
    reset = max(0, math.ceil(window.reset_at - time.time()))
    response.headers["X-Rate-Limit-Limit"] = str(window.limit)
    response.headers["X-Rate-Limit-Remaining"] = str(window.remaining)
    response.headers["X-Rate-Limit-Reset"] = str(reset)
    policy_seconds = int(parse(current_app.config["RATE_LIMIT"]).get_expiry())
    response.headers["RateLimit-Policy"] = f'"site";q={window.limit};w={policy_seconds}'
    response.headers["RateLimit"] = f'"site";r={window.remaining};t={reset}'
    if response.status_code == RATE_LIMITED.status:
        response.headers.setdefault("Retry-After", str(max(1, reset)))
    return response


def _store_failed(limiter: Limiter, action: str, error: Exception) -> None:
    """Log a store failure and count in process memory until flask-limiter sees the store again."""
    # Only the exception's type: its text may carry the store's URI, password included.
    log.warning(
        "rate-limit store unreachable while %s (%s): counting in process memory",
        action,
        type(error).__name__,
    )
    # flask-limiter switches to its in-memory fallback only when its own check fails; switching
    # here too means requests it never checks (failed authentications) stop waiting on a dead
    # store. Its recovery probe (exponential backoff, at most ~32 s) switches back.
    limiter._storage_dead = True


def client_key(address: str | None) -> str:
    """The failure-limit key of a client: its IPv4 address, or its IPv6 /64 network.

    One IPv6 host usually holds a whole /64, so counting single addresses would let it
    change address for every guess.
    """
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _prefix() -> str:
    return str(current_app.config["RATELIMIT_KEY_PREFIX"])


def _auth_failure_item() -> RateLimitItem:
    return parse(current_app.config["AUTH_FAILURE_LIMIT"])


def check_auth_failures(client: str) -> None:
    """Refuse (E1030) another failed authentication from a client that has failed too often."""
    limiter = get_limiter()
    item = _auth_failure_item()
    try:
        allowed = limiter.limiter.test(item, _prefix(), client, AUTH_FAILURE_SCOPE)
        if allowed:
            return
        stats = limiter.limiter.get_window_stats(item, _prefix(), client, AUTH_FAILURE_SCOPE)
    except Exception as error:  # noqa: BLE001
        _store_failed(limiter, "checking authentication failures", error)
        return
    retry = max(1, math.ceil(stats.reset_time - time.time()))
    # The headers describe the limit this request hit (spec §15), not the site's bucket.
    raise ApiError(
        RATE_LIMITED,
        "API call exceeded rate limit due to too many failed authentications",
        headers={
            "Retry-After": str(retry),
            "X-Rate-Limit-Limit": str(item.amount),
            "X-Rate-Limit-Remaining": "0",
            "X-Rate-Limit-Reset": str(retry),
            "RateLimit-Policy": f'"{AUTH_FAILURE_SCOPE}";q={item.amount};w={int(item.get_expiry())}',
            "RateLimit": f'"{AUTH_FAILURE_SCOPE}";r=0;t={retry}',
        },
    )


def record_auth_failure(client: str) -> None:
    """Count one failed authentication against the client's address."""
    limiter = get_limiter()
    try:
        limiter.limiter.hit(_auth_failure_item(), _prefix(), client, AUTH_FAILURE_SCOPE)
    except Exception as error:  # noqa: BLE001
        _store_failed(limiter, "recording an authentication failure", error)
