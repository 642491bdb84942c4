"""The Link header (spec §12), the sealed `after` cursor of its next link, and the digests both rely on."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from southrock_api.data.models import CODE_LENGTH
from southrock_api.report.summary import SortKey

PAGING_PARAMETERS = ("start", "limit", "after")
# Far longer than any cursor we issue (four keys of at most 64 characters and a digest).
MAX_CURSOR_LENGTH = 1024
# A key part any database binds: at most CODE_LENGTH characters, no control character, no surrogate.
# A cursor holding anything else is ignored, and its page is read by `start`.
_CODE = re.compile(f"[^\x00-\x1f\x7f\ud800-\udfff\U00010000-\U0010FFFF]{{0,{CODE_LENGTH}}}")


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
