"""Believe X-Forwarded-* only from configured proxies (spec §8: URLs we generate say https), and
answer only to the configured host names (the health probes excepted)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Iterable

from flask import Flask, Request
from werkzeug.middleware.proxy_fix import ProxyFix

from southrock_api.config import ConfigError

# Set in the WSGI environ when the peer is a trusted proxy, so later code may believe its headers.
TRUSTED_PEER = "southrock.trusted_proxy"
_HOST_HEADERS = ("HTTP_HOST", "HTTP_X_FORWARDED_HOST")
_HOST_NAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.?", re.IGNORECASE)
# Answered whatever the Host: a load balancer probes each backend by its address, and they build
# no URL from it. /docs and /openapi.json do (their examples and server URL), so they are not here.
ANY_HOST_PATHS = frozenset({"/healthz", "/readyz"})


class HostCheckedRequest(Request):
    """Flask's request, whose Host must be one of TRUSTED_HOSTS except on the health probes' paths."""

    _trusted_hosts: list[str] | None = None

    # Flask sets trusted_hosts from TRUSTED_HOSTS and then checks the Host against it, before
    # routing, for every request: a probe's request reads None here, which trusts any host.
    @property
    def trusted_hosts(self) -> list[str] | None:
        """TRUSTED_HOSTS, or None (any host) on a health probe's path."""
        return None if self.environ.get("PATH_INFO") in ANY_HOST_PATHS else self._trusted_hosts

    @trusted_hosts.setter
    def trusted_hosts(self, value: list[str] | None) -> None:
        self._trusted_hosts = value


class TrustedProxyFix:
    """Apply werkzeug's ProxyFix only to requests whose peer is a trusted proxy."""

    def __init__(self, app: Callable[..., Any], trusted: str) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)
        self.networks = [
            ipaddress.ip_network(entry.strip(), strict=False)
            for entry in trusted.split(",")
            if entry.strip()
        ]

    def _trusted(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Host names ignore case, and werkzeug's TRUSTED_HOSTS check does not.
        for header in _HOST_HEADERS:
            if header in environ:
                environ[header] = environ[header].lower()
        if self._trusted(environ.get("REMOTE_ADDR")):
            environ[TRUSTED_PEER] = True
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)


def host_names(value: object) -> list[str] | None:
    """Return TRUSTED_HOSTS as Flask takes it, lower case: a list of names, or None for any name."""
    if isinstance(value, str):
        names = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value):
        names = list(value)
    elif not value:
        return None
    else:
        raise ConfigError("SOUTHROCK_TRUSTED_HOSTS: give host names as text, comma separated")
    trusted = []
    for name in (name.strip() for name in names):
        if not name:
            continue
        try:
            # werkzeug compares with the IDNA form, ignoring any port; host names ignore case.
            host = name.partition(":")[0].lstrip(".").encode("idna").decode("ascii")
        except UnicodeError:
            host = ""
        if "/" in name or not _HOST_NAME.fullmatch(host):
            raise ConfigError(f"SOUTHROCK_TRUSTED_HOSTS: {name!r} is not a host name (no scheme or path)")
        trusted.append(name.lower())
    return trusted or None


def init_app(app: Flask) -> None:
    """Wrap the WSGI app so forwarded headers count only from TRUSTED_PROXIES; check TRUSTED_HOSTS."""
    # Flask refuses any other Host (after ProxyFix, so the forwarded one) before routing, except
    # on the probes' paths (HostCheckedRequest).
    app.config["TRUSTED_HOSTS"] = host_names(app.config["TRUSTED_HOSTS"])
    app.request_class = HostCheckedRequest
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, str(app.config["TRUSTED_PROXIES"]))  # type: ignore[method-assign]
