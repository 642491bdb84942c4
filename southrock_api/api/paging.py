"""Query-string decoding (spec §10), the Link header (spec §12) and the sealed `after` cursor of its next link."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlencode

from southrock_api.data.models import INVISIBLE
from southrock_api.report.summary import SortKey
from southrock_api.api.errors import BAD_PARAMETER, ApiError
from southrock_api.data.models import CODE_LENGTH

PAGING_PARAMETERS = ("start", "limit", "after")
MAX_QUERY_PAIRS = 2000
MAX_QUERY_BYTES = 64 * 1024
# Far longer than any cursor we issue (four keys of at most 64 characters and a digest).
MAX_CURSOR_LENGTH = 1024
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# spec §10: only characters UTF-8 encodes in three bytes or fewer.
MAX_CODE_POINT = 0xFFFF
# Control characters (C0, DEL, C1), and every code point above MAX_CODE_POINT: the first one found is reported.
_REFUSED_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\U00010000-\U0010FFFF]")
# A key part any database binds: at most CODE_LENGTH characters, no control character, no surrogate.
# A cursor holding anything else is ignored, and its page is read by `start`.
_CODE = re.compile(f"[^\x00-\x1f\x7f\ud800-\udfff\U00010000-\U0010FFFF]{{0,{CODE_LENGTH}}}")


def _bad(name: str, expected: str) -> ApiError:
    return ApiError(BAD_PARAMETER, f"Invalid parameter found: {name}, expected {expected}")


def _decode(raw: str, name: str) -> str:
    if raw.isascii() and raw.isprintable() and "%" not in raw and "+" not in raw:
        return raw  # nothing to decode, nothing to refuse: most names and values
    if _BAD_ESCAPE.search(raw):
        raise _bad(name, "valid percent-encoding")
    try:
        value = unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(name, "UTF-8 text") from None
    refused = _REFUSED_CHARACTER.search(value)
    if refused is not None:
        if ord(refused.group()) > MAX_CODE_POINT:
            raise _bad(name, "characters encodable in three UTF-8 bytes (spec §10)")
        raise _bad(name, "printable characters")
    return value


def parse_query(query_string: bytes) -> list[tuple[str, str]]:
    """Decode a raw query string strictly into (name, value) pairs, in order."""
    if len(query_string) > MAX_QUERY_BYTES:
        raise _bad("query string", f"at most {MAX_QUERY_BYTES} bytes")
    try:
        text = query_string.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("query string", "UTF-8 text") from None
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = _decode(raw_name, "query string")
        pairs.append((name, _decode(raw_value, name)))
        if len(pairs) > MAX_QUERY_PAIRS:
            raise _bad("query string", f"at most {MAX_QUERY_PAIRS} parameters")
    return pairs


@functools.lru_cache(maxsize=8)
def _by_folded_name(known: frozenset[str]) -> dict[str, str]:
    return {name.casefold(): name for name in known}


# What a client's library or a copy and paste can add to a parameter's name: array brackets
# (`ORGCODES[]`, `ORGCODES[0]`, as qs and axios write lists), spaces and invisible characters.
_DECORATION = re.compile(f"\\[[^\\]]*\\]$|[\\s{INVISIBLE}]")


def _meant(name: str, known: frozenset[str]) -> str | None:
    """The known parameter an unknown name was meant to be, if it is one in disguise."""
    return _by_folded_name(known).get(_DECORATION.sub("", name).casefold())


def to_arguments(
    pairs: list[tuple[str, str]], repeatable: frozenset[str], known: frozenset[str]
) -> dict[str, object]:
    """Group the known parameters for the schema: lists for repeatable names, one value otherwise.

    Unknown names are left out, repeated or not (spec §5.1c: they are ignored). A known name in
    other letter case (`orgcodes`, `Limit`), with array brackets (`ORGCODES[]`) or with spaces or
    invisible characters is refused instead: ignoring a filter the client meant to send would
    hand it a wider result than it asked for.
    """
    arguments: dict[str, object] = {}
    for name, value in pairs:
        if name in repeatable:
            arguments.setdefault(name, [])
            arguments[name].append(value)  # type: ignore[attr-defined]
        elif name not in known:
            meant = _meant(name, known)
            if meant is not None:
                repeat = f", repeated for each value ({meant}=A&{meant}=B)" if meant in repeatable else ""
                raise _bad(name, f"{meant}{repeat} (parameter names are exact: case-sensitive, no brackets)")
            continue
        elif name in arguments:
            raise _bad(name, "a single value")
        else:
            arguments[name] = value
    return arguments


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended, carried in the `next` link so the next page seeks to it.

    `seal` digests the result's fingerprint (which holds the unpublished data version) with the
    row number and the key, so an edited cursor no longer matches and is ignored: the page is
    then read by `start`, and RNUM stays true.
    """

    seal: str
    rnum: int
    key: SortKey

    @classmethod
    def issue(cls, result: str, rnum: int, key: SortKey) -> Cursor:
        """Return the cursor for row `rnum` of the result `result` fingerprints."""
        return cls(_seal(result, rnum, key), rnum, key)

    def resumes(self, result: str, rnum: int) -> bool:
        """Whether this is the cursor issued for row `rnum` of this result, unedited."""
        return self.rnum == rnum and hmac.compare_digest(self.seal, _seal(result, rnum, self.key))

    def encode(self) -> str:
        """Return the opaque text placed in the link."""
        k = self.key
        raw = json.dumps([self.seal, self.rnum, k.org_code, k.crs_code, k.lr_id, k.sch_id])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """Parse a cursor; anything malformed is ignored (the request falls back to `start`)."""
        if len(text) > MAX_CURSOR_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            seal, rnum, *key = json.loads(raw)
            if not isinstance(seal, str) or not isinstance(rnum, int) or len(key) != 4:
                return None
            # Only what a stored code can be: the key is bound into the page's statement.
            if not all(isinstance(part, str) and _CODE.fullmatch(part) for part in key):
                return None
            return cls(seal, rnum, SortKey(*key))
        except (binascii.Error, ValueError, TypeError, RecursionError):
            return None


def _seal(result: str, rnum: int, key: SortKey) -> str:
    return fingerprint(result, rnum, key.org_code, key.crs_code, key.lr_id, key.sch_id)


def fingerprint(*parts: object) -> str:
    """A short digest of its parts: what a cursor, an ETag or X-Data-Version stands for."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def link_header(
    base_url: str,
    pairs: list[tuple[str, str]],
    start: int,
    limit: int,
    total: int,
    next_cursor: str | None,
) -> str:
    """Build the spec's Link header: next (unless last page), last, first, prev (unless first)."""
    # Encoded once for the (up to four) links: ORGCODES may name thousands of units.
    kept = urlencode([(name, value) for name, value in pairs if name not in PAGING_PARAMETERS])
    prefix = f"{base_url}?{kept}&" if kept else f"{base_url}?"

    def url(page_start: int, page_limit: int, cursor: str | None = None) -> str:
        query = [("start", str(page_start)), ("limit", str(page_limit))]
        if cursor:
            query.append(("after", cursor))
        return prefix + urlencode(query)

    # first and last are the canonical pages 1, 1+limit, ...: following next from first reaches last.
    last = 1 + (max(total, 1) - 1) // limit * limit
    links = []
    if start + limit <= total:
        links.append(f'<{url(start + limit, limit, next_cursor)}>; rel="next"')
    links.append(f'<{url(last, limit)}>; rel="last"')
    links.append(f'<{url(1, limit)}>; rel="first"')
    if start > total > 0:
        # Past the end, the page before this one is the last page that has rows.
        links.append(f'<{url(last, limit)}>; rel="prev"')
    elif start > 1:
        prev_start = max(1, start - limit)
        # The previous page stops just before this one, even when start is off the grid.
        links.append(f'<{url(prev_start, min(limit, start - prev_start))}>; rel="prev"')
    return ", ".join(links)
