"""Safe defaults; instance/config.py and SOUTHROCK_* environment variables override them."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import cast

from limits import parse
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

# spec §15: 60 requests a minute, per site.
RATE_LIMIT = "60 per minute"
# Failed authentications allowed per client address before 429 (not part of the site bucket).
AUTH_FAILURE_LIMIT = "10 per minute"
# None: a SQLite file in the instance folder (see defaults()).
DATABASE_URL: str | None = None
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
LOG_LEVEL = "INFO"

# On/off settings. From the environment they arrive as text, where "False" or "no" would be a
# non-empty string, that is true: they are read strictly instead, and anything else is refused.
FLAGS = ("REQUIRE_HTTPS",)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NUMBERS = ("RATELIMIT_STORAGE_TIMEOUT", "RTOPILOT_TIMEOUT", "RTOPILOT_BACKOFF_SECONDS", "RTOPILOT_MAX_BACKOFF_SECONDS")
_HOST_NAME = re.compile(r"\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")


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


def check(values: Mapping[str, object]) -> None:
    """Refuse, at start-up, settings that would fail later or quietly do something else.

    A mistyped rate limit would otherwise switch the site's limit off (flask-limiter swallows
    the error on every request) or answer every failed login with a 500.
    """
    for name in ("RATE_LIMIT", "AUTH_FAILURE_LIMIT"):
        try:
            parse(str(values[name]))
        except ValueError:
            raise ConfigError(f"SOUTHROCK_{name}: {values[name]!r} is not a rate limit such as '60 per minute'") from None
    for name in _NUMBERS:
        try:
            if float(str(values[name])) <= 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"SOUTHROCK_{name}: {values[name]!r} is not a positive number of seconds") from None
    if not str(values["RTOPILOT_MAX_ATTEMPTS"]).isdigit() or int(str(values["RTOPILOT_MAX_ATTEMPTS"])) < 1:
        raise ConfigError(f"SOUTHROCK_RTOPILOT_MAX_ATTEMPTS: {values['RTOPILOT_MAX_ATTEMPTS']!r} is not a whole number of at least 1")
    if not isinstance(logging.getLevelName(str(values["LOG_LEVEL"]).upper()), int):
        raise ConfigError(f"SOUTHROCK_LOG_LEVEL: {values['LOG_LEVEL']!r} is not one of DEBUG, INFO, WARNING, ERROR")
    for entry in str(values["TRUSTED_PROXIES"]).split(","):
        try:
            if entry.strip():
                ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"SOUTHROCK_TRUSTED_PROXIES: {entry.strip()!r} is not an IP address or network") from None
    hosts = values["TRUSTED_HOSTS"]
    entries = hosts.split(",") if isinstance(hosts, str) else [str(entry) for entry in cast(Iterable[object], hosts or ())]
    for entry in entries:
        if entry.strip() and not _HOST_NAME.fullmatch(entry.strip()):
            raise ConfigError(f"SOUTHROCK_TRUSTED_HOSTS: {entry.strip()!r} is not a host name (no scheme, port or path)")
    try:
        make_url(str(values["DATABASE_URL"])).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        # The URL itself is never repeated: it may hold a password.
        raise ConfigError(
            "SOUTHROCK_DATABASE_URL is not a database URL this application can use: "
            "postgresql+psycopg://user:password@host:5432/name or sqlite:////absolute/path.sqlite"
        ) from None


def defaults(instance_path: str) -> dict[str, object]:
    """Return the default configuration for an app whose instance folder is given."""
    values = {name: value for name, value in globals().items() if name.isupper()}
    values["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "southrock.sqlite")
    values["RATELIMIT_STORAGE_URI"] = "sqlite:///" + os.path.join(instance_path, "ratelimit.sqlite")
    return values
