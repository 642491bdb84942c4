"""Safe defaults; instance/config.py and SOUTHROCK_* environment variables override them."""

from __future__ import annotations

import os

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


def flag(name: str, value: object) -> bool:
    """Read an on/off setting: a bool, 0 or 1, or true/false, yes/no, on/off in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"SOUTHROCK_{name} must be true or false, not {value!r}")


def defaults(instance_path: str) -> dict[str, object]:
    """Return the default configuration for an app whose instance folder is given."""
    values = {name: value for name, value in globals().items() if name.isupper()}
    values["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "southrock.sqlite")
    values["RATELIMIT_STORAGE_URI"] = "sqlite:///" + os.path.join(instance_path, "ratelimit.sqlite")
    return values
