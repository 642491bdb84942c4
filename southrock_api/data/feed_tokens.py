"""The changes token (`X-Changes-Token`, `since=`): a feed's scope, filters and position, sealed with the site's key.

Opaque to clients: base64url of compressed JSON, a dot, and an HMAC-SHA256 of those bytes under
`data.changes.seal_key`, so an edited, truncated or made-up token is refused (E3010). The scope
is part of what is sealed, so a token issued to one unit is refused to every other.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass
from typing import Any

TOKEN_VERSION = 1
# Far above any token issued (ORGCODES compress well), and decoded only up to this.
MAX_TOKEN_LENGTH = 64 * 1024
# What a token may inflate to: a query string holds at most 64 KB of ORGCODES.
MAX_PAYLOAD_BYTES = 256 * 1024


def scope_of(unit_type: str, unit_code: str) -> str:
    """A token's scope as unit paths name units: "B:code" for a business unit, "W:code" for a work unit."""
    return ("B:" if unit_type == "business_unit" else "W:") + unit_code


@dataclass(frozen=True)
class ChangesToken:
    """Where a client's copy stands: its scope and filters, and how far through a round of changes it is.

    A round is the changes in (origin, end]; `cursor` is the last position whose changes the
    client has been given. `end` is None between rounds (the next request fixes it at the newest
    position), so a caught-up token's cursor is its origin.
    """

    scope: str
    orgcodes: tuple[str, ...] | None
    sdate: dt.date | None
    edate: dt.date | None
    origin: int
    end: int | None
    cursor: int

    @classmethod
    def start(
        cls, scope: str, orgcodes: list[str] | None, sdate: dt.date | None, edate: dt.date | None, position: int
    ) -> ChangesToken:
        """The token of a copy exact as of `position` (a snapshot's, or a round's end)."""
        codes = tuple(sorted(set(orgcodes))) if orgcodes else None
        return cls(scope, codes, sdate, edate, position, None, position)

    def following(self, end: int, cursor: int) -> ChangesToken:
        """The token after a page of the round ending at `end` that reached `cursor`: the next round's once caught up."""
        if cursor >= end:
            return ChangesToken(self.scope, self.orgcodes, self.sdate, self.edate, end, None, end)
        return ChangesToken(self.scope, self.orgcodes, self.sdate, self.edate, self.origin, end, cursor)

    def encode(self, key: str) -> str:
        """The opaque text a client sends back as `since`."""
        payload = {
            "v": TOKEN_VERSION,
            "s": self.scope,
            "o": list(self.orgcodes) if self.orgcodes is not None else None,
            "a": self.sdate.isoformat() if self.sdate else None,
            "b": self.edate.isoformat() if self.edate else None,
            "p": self.origin,
            "n": self.end,
            "c": self.cursor,
        }
        raw = zlib.compress(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(), 9)
        body = _b64(raw)
        return body + "." + _b64(_seal(key, body))

    @classmethod
    def decode(cls, text: str, key: str) -> ChangesToken | None:
        """The token `text` stands for, or None: too long, malformed, truncated, or not sealed with `key`."""
        if len(text) > MAX_TOKEN_LENGTH or text.count(".") != 1:
            return None
        body, seal = text.split(".")
        try:
            if not hmac.compare_digest(_unb64(seal), _seal(key, body)):
                return None
            inflate = zlib.decompressobj()
            raw = inflate.decompress(_unb64(body), MAX_PAYLOAD_BYTES)
            if not inflate.eof:
                return None
            return _from_payload(json.loads(raw))
        except (binascii.Error, ValueError, TypeError, zlib.error, RecursionError):
            return None


def _from_payload(payload: Any) -> ChangesToken | None:
    # Sealed by us, so well formed unless the key leaked; checked all the same.
    if not isinstance(payload, dict) or payload.get("v") != TOKEN_VERSION:
        return None
    scope, codes, origin, end, cursor = (payload.get(name) for name in ("s", "o", "p", "n", "c"))
    positions_valid = all(isinstance(value, int) and value >= 0 for value in (origin, cursor)) and (
        end is None or isinstance(end, int)
    )
    if not isinstance(scope, str) or not positions_valid:
        return None
    assert isinstance(origin, int) and isinstance(cursor, int)
    if codes is not None and not (isinstance(codes, list) and all(isinstance(code, str) for code in codes)):
        return None
    dates = [dt.date.fromisoformat(value) if isinstance(value, str) else None for value in (payload.get("a"), payload.get("b"))]
    return ChangesToken(scope, tuple(codes) if codes is not None else None, dates[0], dates[1], origin, end, cursor)


def _seal(key: str, body: str) -> bytes:
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
