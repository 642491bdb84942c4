"""Safe defaults, which instance/config.py and SOUTHROCK_* environment variables override, and the checks every setting passes at start-up."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping

from limits import parse_many
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

# spec §15: 60 requests a minute, per site.
RATE_LIMIT = "60 per minute"
# Failed authentications allowed per client address before 429 (not part of the site bucket).
AUTH_FAILURE_LIMIT = "10 per minute"
# None: a SQLite file in the instance folder (see defaults()).
DATABASE_URL: str | None = None
# Seconds a request may wait on the database in all: statements, locks, a server or network that
# stopped answering. Well inside gunicorn's timeout (SOUTHROCK_TIMEOUT, 30 s), which a thread stuck
# in a wait never trips under the gthread worker. See docs/deployment.md.
DATABASE_TIMEOUT = 10.0
# Seconds a command (import, tokens, rtopilot sync, …) waits for any one answer of PostgreSQL, and
# for the write lock of a SQLite database another command (an import) holds. Long enough to
# outlast a large site's import; a frozen database still cannot hold a command forever.
COMMAND_TIMEOUT = 900.0
# None: a SQLite file in the instance folder, shared by every worker on the host.
RATELIMIT_STORAGE_URI: str | None = None
# Refuse plain-HTTP API requests (spec §8c). Enable behind a TLS-terminating proxy.
REQUIRE_HTTPS = False
# Addresses or networks (comma separated) whose X-Forwarded-* headers are believed.
TRUSTED_PROXIES = ""
# Host names (comma separated; ".example.org" takes its subdomains) the site answers to. Link
# URLs are built from the request's host, so production names its own; empty: any valid name.
TRUSTED_HOSTS = ""
# Names this site's counters in a shared store: sites sharing one Redis need distinct prefixes.
RATELIMIT_KEY_PREFIX = "southrock"
# Seconds before a Redis limiter store is considered unreachable.
RATELIMIT_STORAGE_TIMEOUT = 0.5
# RTOPilot progress push (see README).
RTOPILOT_URL = ""
RTOPILOT_API_KEY = ""
# Seconds to wait for RTOPilot's answer to one push.
RTOPILOT_TIMEOUT = 10.0
# Attempts per enrolment on a 500 or a connection failure before it is left pending for the next run.
RTOPILOT_MAX_ATTEMPTS = 5
# Exponential backoff between those attempts: full jitter up to base * 2^n, capped.
RTOPILOT_BACKOFF_SECONDS = 0.5
RTOPILOT_MAX_BACKOFF_SECONDS = 30.0
# Seconds a webhook receiver has to answer one delivery (see README, "Webhooks").
WEBHOOK_TIMEOUT = 10.0
# Pauses (seconds, comma separated) before each retry of a failed delivery, each with ±25 % jitter:
# about a day and a quarter in all, after which the event is dead and its subscription disabled.
WEBHOOK_BACKOFF_SECONDS = "5,300,1800,7200,18000,36000,36000"
LOG_LEVEL = "INFO"
# Days the change feed keeps what each import changed. A client whose changes token is older
# takes a new snapshot (E3020, 410); at 30, a client that syncs monthly never has to.
CHANGES_RETENTION_DAYS = 30

# On/off settings. From the environment they arrive as text, where "False" or "no" would be a
# non-empty string, that is true: they are read strictly instead, and anything else is refused.
FLAGS = ("REQUIRE_HTTPS",)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_POSITIVE_SECONDS = ("DATABASE_TIMEOUT", "COMMAND_TIMEOUT", "RATELIMIT_STORAGE_TIMEOUT", "RTOPILOT_TIMEOUT", "RTOPILOT_BACKOFF_SECONDS", "RTOPILOT_MAX_BACKOFF_SECONDS", "WEBHOOK_TIMEOUT")
# The levels both the application and gunicorn know by these names.
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DATABASES = frozenset({"sqlite", "postgresql"})


class ConfigError(ValueError):
    """A setting that cannot work; the message names its SOUTHROCK_ variable, never its secret."""


def flag(name: str, value: object) -> bool:
    """Read an on/off setting: a bool, 0 or 1, or true/false, yes/no, on/off in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"SOUTHROCK_{name} must be true or false, not {value!r}")


def backoff_schedule(value: object) -> list[float] | None:
    """The pauses of a WEBHOOK_BACKOFF_SECONDS setting (text or a list), or None if it is not positive seconds."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        pauses = [float(str(item).strip()) for item in items]
    except ValueError:
        return None
    return pauses if pauses and all(math.isfinite(pause) and pause > 0 for pause in pauses) else None


def check(values: Mapping[str, object]) -> None:
    """Refuse, at start-up, settings that would fail later or quietly do something else.

    A mistyped rate limit would otherwise switch the site's limit off (flask-limiter swallows
    the error on every request) or answer every failed login with a 500.
    """
    for name in ("RATE_LIMIT", "AUTH_FAILURE_LIMIT"):
        try:
            # One limit: the headers, /docs and the failure check each read a single one.
            [limit] = parse_many(str(values[name]))
            if limit.amount < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"SOUTHROCK_{name}: {values[name]!r} is not one rate limit such as '60 per minute'"
            ) from None
    for name in _POSITIVE_SECONDS:
        try:
            seconds = float(str(values[name]))
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"SOUTHROCK_{name}: {values[name]!r} is not a positive number of seconds")
    if not str(values["RTOPILOT_MAX_ATTEMPTS"]).isdigit() or int(str(values["RTOPILOT_MAX_ATTEMPTS"])) < 1:
        raise ConfigError(f"SOUTHROCK_RTOPILOT_MAX_ATTEMPTS: {values['RTOPILOT_MAX_ATTEMPTS']!r} is not a whole number of at least 1")
    if not str(values["CHANGES_RETENTION_DAYS"]).isdigit() or int(str(values["CHANGES_RETENTION_DAYS"])) < 1:
        raise ConfigError(
            f"SOUTHROCK_CHANGES_RETENTION_DAYS: {values['CHANGES_RETENTION_DAYS']!r} is not a whole number of days, at least 1"
        )
    if backoff_schedule(values["WEBHOOK_BACKOFF_SECONDS"]) is None:
        raise ConfigError(
            f"SOUTHROCK_WEBHOOK_BACKOFF_SECONDS: {values['WEBHOOK_BACKOFF_SECONDS']!r} is not a comma-separated list of positive seconds"
        )
    if str(values["LOG_LEVEL"]).upper() not in _LOG_LEVELS:
        raise ConfigError(f"SOUTHROCK_LOG_LEVEL: {values['LOG_LEVEL']!r} is not one of {', '.join(_LOG_LEVELS)}")
    if not isinstance(values["TRUSTED_PROXIES"], str):
        raise ConfigError("SOUTHROCK_TRUSTED_PROXIES: give the proxies' addresses or networks as text, comma separated")
    for entry in values["TRUSTED_PROXIES"].split(","):
        try:
            if entry.strip():
                ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"SOUTHROCK_TRUSTED_PROXIES: {entry.strip()!r} is not an IP address or network") from None
    _check_database_url(str(values["DATABASE_URL"]))


def _check_database_url(text: str) -> None:
    # The URL itself is never repeated: it may hold a password.
    usable = (
        "postgresql+psycopg://user:password@host:5432/name (percent-encode @, : and / in the "
        "password) or sqlite:////absolute/path.sqlite"
    )
    try:
        url = make_url(text)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError):
        raise ConfigError(f"SOUTHROCK_DATABASE_URL is not a database URL this application can use: {usable}") from None
    if url.get_backend_name() not in _DATABASES:
        raise ConfigError(f"SOUTHROCK_DATABASE_URL names a database this application does not support: {usable}")
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:") and not os.path.isabs(database):
        # Each command would open another file, in whatever directory it was started in.
        raise ConfigError(f"SOUTHROCK_DATABASE_URL: a SQLite file's path must be absolute, as in {usable.rpartition(' or ')[2]}")
    if "@" in (url.host or ""):
        # An unencoded @ in the password: the rest of it would be taken for the host, and repeated
        # in every connection error.
        raise ConfigError(f"SOUTHROCK_DATABASE_URL: the password holds an @ that is not percent-encoded (%40): {usable}")


def defaults(instance_path: str) -> dict[str, object]:
    """Return the default configuration for an app whose instance folder is given."""
    values = {name: value for name, value in globals().items() if name.isupper()}
    values["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "southrock.sqlite")
    values["RATELIMIT_STORAGE_URI"] = "sqlite:///" + os.path.join(instance_path, "ratelimit.sqlite")
    return values
