"""A Python client for the Southrock LMS Enrolment API: typed rows, paging, rate limits, retries, snapshot and change feed."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Generic, Iterable, Iterator, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests

from southrock_api.integrations.transport import LOOPBACK_HOSTS, RETRYABLE_STATUSES, full_jitter

# spec §17.1.2: the largest page the server returns.
MAX_PAGE_SIZE = 500
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_BASE = 0.5
# spec §15: windows are a minute long, so a full window is the longest wait that can be needed.
DEFAULT_MAX_SLEEP = 60.0
# The change feed's page sizes (GET /api/v1/enrolments/changes?limit=).
DEFAULT_CHANGES_LIMIT = 500
MAX_CHANGES_LIMIT = 5000
# The snapshot is read in chunks of this many bytes: memory stays flat however many rows it holds.
SNAPSHOT_CHUNK_BYTES = 64 * 1024


class SouthrockApiError(Exception):
    """An API error (spec §13): HTTP status, E-code and message; status is None when no answer came."""

    def __init__(self, status: int | None, code: str | None, message: str) -> None:
        super().__init__(f"{code or 'HTTP ' + str(status)}: {message}" if status else message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def from_response(cls, response: requests.Response) -> SouthrockApiError:
        """Build the error from the spec's JSON error object, tolerating any other body."""
        try:
            error = response.json()["error"]
            return cls(response.status_code, str(error["code"]), str(error["message"]))
        except (ValueError, KeyError, TypeError):
            if response.status_code == 414:
                # The server's own limit on the request line (8190 bytes under gunicorn).
                return cls(414, None, "the request is too long: ask for fewer ORGCODES at a time, or use "
                           "a token of the business unit that holds them")
            return cls(response.status_code, None, response.reason or "unexpected response")


@dataclass(frozen=True)
class EnrolmentRecord:
    """One completed enrolment (spec §17.1.5) with typed values."""

    rnum: int
    org_code: str
    org_name: str
    crs_code: str
    crs_desc: str
    lr_id: str
    lr_sname: str
    lr_fname: str
    lr_email: str
    # spec §5.2d: properties with null values may be omitted, so these two may be absent.
    sch_aedate: dt.date | None
    sch_score: Decimal | None
    # The enrolment's stable key (SCH_ID); empty from a server that predates it.
    sch_id: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnrolmentRecord:
        """Parse one element of the enrolments array."""
        date_text = data.get("SCH_AEDATE")
        score_text = data.get("SCH_SCORE")
        return cls(
            rnum=int(data["RNUM"]),
            org_code=data.get("ORG_CODE") or "",
            org_name=data.get("ORG_NAME") or "",
            crs_code=data.get("CRS_CODE") or "",
            crs_desc=data.get("CRS_DESC") or "",
            lr_id=data.get("LR_ID") or "",
            lr_sname=data.get("LR_SNAME") or "",
            lr_fname=data.get("LR_FNAME") or "",
            lr_email=data.get("LR_EMAIL") or "",
            sch_aedate=dt.date.fromisoformat(date_text) if date_text else None,
            sch_score=Decimal(str(score_text)) if score_text is not None else None,
            sch_id=data.get("SCH_ID") or "",
        )

    def to_spec(self) -> dict[str, str]:
        """Return the row with the spec's property names and text values, as the API sends it."""
        return {
            name: _text(getattr(self, attribute)) for name, attribute in SPEC_FIELDS.items()
        }


# The spec's property names (§17.1.5, RNUM from §17.1.4), then SCH_ID, and the record attribute for each.
SPEC_FIELDS = {
    "RNUM": "rnum",
    "ORG_CODE": "org_code",
    "ORG_NAME": "org_name",
    "CRS_CODE": "crs_code",
    "CRS_DESC": "crs_desc",
    "LR_ID": "lr_id",
    "LR_SNAME": "lr_sname",
    "LR_FNAME": "lr_fname",
    "LR_EMAIL": "lr_email",
    "SCH_AEDATE": "sch_aedate",
    "SCH_SCORE": "sch_score",
    "SCH_ID": "sch_id",
}


def _row_object(data: dict[str, Any]) -> dict[str, Any]:
    """A snapshot line as it is, once it is seen to be a row: an object with its SCH_ID."""
    if not isinstance(data.get("SCH_ID"), str):
        raise ValueError("not a row")
    return data


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class UnitRecord:
    """One work unit the token sees (GET /api/v1/units); its org_code is a value for `orgcodes`."""

    org_code: str
    org_name: str
    orggrp_code: str
    # None at the top of what the token sees (spec §5.2d: a null property may also be absent).
    parent_org_code: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitRecord:
        """Parse one element of the units array."""
        return cls(
            org_code=data["ORG_CODE"],
            org_name=data.get("ORG_NAME") or "",
            orggrp_code=data.get("ORGGRP_CODE") or "",
            parent_org_code=data.get("PARENT_ORG_CODE"),
        )


class DataChanged(SouthrockApiError):
    """The site's data changed while its pages were being read: pages before and after may overlap or miss rows."""


class IncompleteSnapshot(SouthrockApiError):
    """The snapshot stream ended without its closing record (or with a wrong row count): it was cut, use none of it."""


class ChangesExpired(SouthrockApiError):
    """The change token is older than the site keeps changes for (HTTP 410, E3020): take a new snapshot."""


@dataclass(frozen=True)
class Change:
    """One entry of the change feed: an enrolment to write (UPSERT, with its record) or to remove (DELETE)."""

    kind: Literal["UPSERT", "DELETE"]
    sch_id: str
    # The row as the listing renders it, without a position: rnum is 0. None for a DELETE.
    record: EnrolmentRecord | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        """Parse one element of a changes page."""
        kind = data["CHANGE"]
        sch_id = str(data["SCH_ID"])
        if kind == "DELETE":
            return cls("DELETE", sch_id, None)
        if kind != "UPSERT":
            raise ValueError(f"unknown change kind {kind!r}")
        return cls("UPSERT", sch_id, EnrolmentRecord.from_json({**data, "RNUM": 0}))


Row = TypeVar("Row")


class PageStream(Generic[Row]):
    """The rows of one list query, fetched page by page (spec §12); `total` is known after the first page.

    Raises DataChanged when a later page reports another X-Data-Version than the first: an
    import ran in between, so rows may have moved between pages; read the query again.
    """

    def __init__(
        self, client: SouthrockClient, url: str, params: dict[str, Any], parse: Callable[[dict[str, Any]], Row]
    ) -> None:
        self._client = client
        self._next_url: str | None = url
        self._params: dict[str, Any] | None = params
        self._parse = parse
        self._buffer: deque[Row] = deque()
        self._total: int | None = None
        self._version: str | None = None

    @property
    def total(self) -> int:
        """X-Total-Count of the query (fetches the first page if nothing was fetched yet)."""
        if self._total is None:
            self._fetch()
        return self._total or 0

    def __iter__(self) -> Iterator[Row]:
        return self

    def __next__(self) -> Row:
        while not self._buffer:
            if self._next_url is None:
                raise StopIteration
            self._fetch()
        return self._buffer.popleft()

    def _fetch(self) -> None:
        if self._next_url is None:
            return
        response = self._client._get(self._next_url, self._params)
        # spec §12: the next link carries every parameter, so later pages need none of ours.
        self._params = None
        version = response.headers.get("X-Data-Version")
        if self._version is None:
            self._version = version
        elif version != self._version:
            raise DataChanged(None, None, "the site's data changed while its pages were read (an import ran); read them again")
        total = response.headers.get("X-Total-Count")
        try:
            if total is not None:
                self._total = int(total)
            rows = response.json()
            self._buffer.extend(self._parse(row) for row in rows)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise _not_the_api(response) from None
        # spec §12: no next link means the end has been reached.
        link = response.links.get("next", {}).get("url")
        self._next_url = self._client._on_our_origin(link) if link else None


class EnrolmentStream(PageStream[EnrolmentRecord]):
    """The enrolments of one query (spec §17), fetched page by page."""

    def __init__(self, client: SouthrockClient, url: str, params: dict[str, Any]) -> None:
        super().__init__(client, url, params, EnrolmentRecord.from_json)


class Snapshot:
    """The visible enrolments as of one moment, streamed one NDJSON line at a time, and the change token as of it.

    Iterate it once; `changes_token` is known at once, `rows` after the last record. A stream that
    ends without its closing record `{"END": true, "ROWS": n}` (or whose n is not the number of
    rows read) raises IncompleteSnapshot: the connection was cut and the rows read are not the set.
    """

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        token = response.headers.get("X-Changes-Token")
        if not token:
            response.close()
            raise _not_the_api(response)
        self.changes_token = token
        self.rows = 0
        self._iterated = False

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection (reading stops where it is)."""
        self._response.close()

    def __iter__(self) -> Iterator[EnrolmentRecord]:
        if self._iterated:
            raise RuntimeError("a snapshot can be read only once")
        self._iterated = True
        try:
            yield from self._records(EnrolmentRecord.from_json)
        finally:
            self.close()

    def objects(self) -> Iterator[dict[str, Any]]:
        """The rows as the API sent them (JSON objects of text), unparsed: the fast way to store them as they are."""
        if self._iterated:
            raise RuntimeError("a snapshot can be read only once")
        self._iterated = True
        try:
            yield from self._records(_row_object)
        finally:
            self.close()

    def _records(self, convert: Callable[[dict[str, Any]], Row]) -> Iterator[Row]:
        ended = False
        for line in self._lines():
            if ended:
                raise IncompleteSnapshot(200, None, "the snapshot has rows after its closing record")
            try:
                data = json.loads(line)
                if data.get("END") is True:
                    if data.get("ROWS") != self.rows:
                        raise IncompleteSnapshot(
                            200, None, f"the snapshot closed with ROWS {data.get('ROWS')!r} after {self.rows} rows"
                        )
                    ended = True
                    continue
                record = convert(data)
            except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError):
                raise IncompleteSnapshot(
                    200, None, f"the snapshot was cut after {self.rows} rows: line {self.rows + 1} is not a whole row"
                ) from None
            self.rows += 1
            yield record
        if not ended:
            raise IncompleteSnapshot(200, None, f"the snapshot was cut after {self.rows} rows (no closing record)")

    def _lines(self) -> Iterator[bytes]:
        pending = b""
        try:
            # iter_content undoes a gzip Content-Encoding; splitting on b"\n" ourselves keeps a
            # chunk boundary inside "\r\n" from making an empty line (JSON escapes every newline in a value).
            for chunk in self._response.iter_content(SNAPSHOT_CHUNK_BYTES):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (line for line in lines if line.strip())
        except requests.RequestException as error:
            raise IncompleteSnapshot(None, None, f"the snapshot was cut after {self.rows} rows: {error}") from error
        if pending.strip():
            # A last line without its newline: cut mid-line, unless it is the closing record.
            yield pending


class ChangeStream:
    """The change feed from a token on, page by page, following next links (the feed's own paging).

    Iterating yields every Change; `pages()` yields each page's changes with the token after it,
    for a consumer that stores its position page by page. `changes_token` is the position after
    the last page read: once the stream is exhausted, the token to poll with later.
    """

    def __init__(self, client: SouthrockClient, url: str, params: dict[str, Any], token: str) -> None:
        self._client = client
        self._next_url: str | None = url
        self._params: dict[str, Any] | None = params
        self.changes_token = token

    def __iter__(self) -> Iterator[Change]:
        for changes, _token in self.pages():
            yield from changes

    def pages(self) -> Iterator[tuple[list[Change], str]]:
        """Yield (changes, token after them) for each page until the feed is caught up; a page may be empty."""
        while self._next_url is not None:
            yield self._fetch()

    def _fetch(self) -> tuple[list[Change], str]:
        assert self._next_url is not None
        try:
            response = self._client._get(self._next_url, self._params)
        except SouthrockApiError as error:
            if error.status == 410:
                raise ChangesExpired(error.status, error.code, error.message) from None
            raise
        self._params = None
        token = response.headers.get("X-Changes-Token")
        try:
            changes = [Change.from_json(entry) for entry in response.json()]
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError):
            raise _not_the_api(response) from None
        if not token:
            raise _not_the_api(response)
        link = response.links.get("next", {}).get("url")
        self._next_url = self._client._on_our_origin(link) if link else None
        self.changes_token = token
        return changes, token


class SouthrockClient:
    """A keep-alive client for one site, waiting out rate-limit windows and retrying transient failures."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        private_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        max_sleep: float = DEFAULT_MAX_SLEEP,
        sleep: Callable[[float], None] = time.sleep,
        random_source: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.api_url = _api_url(base_url)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.max_sleep = max_sleep
        self._sleep = sleep
        self._random = random_source
        self._clock = clock
        self._session = session or requests.Session()
        # spec §6: Basic public:private; spec §9a: JSON in both directions.
        self._session.auth = (public_key, private_key)
        self._session.headers.update({"Accept": "application/json", "Content-Type": "application/json"})
        self._remaining: int | None = None
        self._window_ends_at = 0.0

    def __enter__(self) -> SouthrockClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def whoami(self) -> dict[str, str]:
        """Validate the credentials and return the token's unit (spec §16)."""
        response = self._get(self.api_url, None)
        try:
            return dict(response.json())
        except (ValueError, TypeError):
            raise _not_the_api(response) from None

    def iter_units(self, page_size: int = MAX_PAGE_SIZE) -> PageStream[UnitRecord]:
        """Return the work units the token sees, in code order, as a lazily paged stream of records."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        return PageStream(self, self.api_url + "/units", {"limit": page_size}, UnitRecord.from_json)

    def iter_enrolments(
        self,
        orgcodes: Iterable[str] | None = None,
        sdate: dt.date | None = None,
        edate: dt.date | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> EnrolmentStream:
        """Return the visible completed enrolments (spec §17) as a lazily paged stream of records."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        params: dict[str, Any] = {"limit": page_size, **_filters(orgcodes, sdate, edate)}
        return EnrolmentStream(self, self.api_url + "/enrolments", params)

    def snapshot(
        self,
        orgcodes: Iterable[str] | None = None,
        sdate: dt.date | None = None,
        edate: dt.date | None = None,
    ) -> Snapshot:
        """Start reading every visible completed enrolment as of now, with the change token as of the same moment."""
        params = _filters(orgcodes, sdate, edate)
        response = self._get(self.api_url + "/enrolments/snapshot", params, stream=True)
        return Snapshot(response)

    def iter_changes(self, since: str, limit: int = DEFAULT_CHANGES_LIMIT) -> ChangeStream:
        """Return the changes after the token `since` (from a snapshot or an earlier feed), paged lazily.

        Raises ChangesExpired when the site no longer keeps changes that old.
        """
        if not 1 <= limit <= MAX_CHANGES_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_CHANGES_LIMIT}")
        if not since:
            raise ValueError("since is empty: take a snapshot for a first token")
        return ChangeStream(self, self.api_url + "/enrolments/changes", {"since": since, "limit": limit}, since)

    def _on_our_origin(self, url: str) -> str:
        # The credentials go only to the host the caller chose, whatever host a link names: behind a
        # proxy the server may write another name (internal, or forged through X-Forwarded-Host).
        ours, link = urlsplit(self.api_url), urlsplit(url)
        return urlunsplit((ours.scheme, ours.netloc, link.path, link.query, ""))

    @property
    def public_key(self) -> str:
        """The token's public key (the private key is never shown)."""
        auth = self._session.auth
        return str(auth[0]) if isinstance(auth, tuple) else ""

    def _get(self, url: str, params: dict[str, Any] | None, stream: bool = False) -> requests.Response:
        """GET with rate-limit waits and bounded retries; raise SouthrockApiError on failure.

        With stream set the body is left unread on success, for the caller to stream (and close).
        """
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_window()
            try:
                response = self._session.get(url, params=params, timeout=self.timeout, stream=stream)
            except requests.RequestException as error:
                # Refused, timed out, or cut off mid-body: all transient as far as a GET is concerned.
                if attempt >= self.max_attempts:
                    raise SouthrockApiError(None, None, f"no answer from {url}: {error}") from error
                self._sleep(self._backoff(attempt))
                continue
            self._note_window(response)
            if response.status_code == 200:
                return response
            if response.status_code not in RETRYABLE_STATUSES or attempt >= self.max_attempts:
                with response:
                    raise SouthrockApiError.from_response(response)
            response.close()
            delay = self._backoff(attempt)
            if response.status_code == 429:
                # The server knows when the window reopens; jitter on top spreads competing clients.
                delay = min(self.max_sleep, _seconds(response.headers.get("Retry-After")) + delay)
                self._remaining = None
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return full_jitter(attempt, self.backoff_base, self.max_sleep, self._random)

    def _note_window(self, response: requests.Response) -> None:
        remaining = response.headers.get("X-Rate-Limit-Remaining")
        if remaining is None:
            return
        self._remaining = int(remaining)
        reset = response.headers.get("X-Rate-Limit-Reset") or response.headers.get("Retry-After")
        self._window_ends_at = self._clock() + _seconds(reset)

    def _wait_for_window(self) -> None:
        # spec §15: wait for the next window instead of spending a request on a certain 429.
        if self._remaining is None or self._remaining > 0:
            return
        wait = self._window_ends_at - self._clock()
        if wait > 0:
            self._sleep(min(wait, self.max_sleep))
        self._remaining = None


def _filters(orgcodes: Iterable[str] | None, sdate: dt.date | None, edate: dt.date | None) -> dict[str, Any]:
    """The query parameters of the spec's filters (§17.1.2)."""
    params: dict[str, Any] = {}
    if orgcodes is not None:
        # A lone string would be read as one-character codes, and an empty list (say, a filter
        # computed to nothing) as no filter at all: every unit the token sees.
        if isinstance(orgcodes, str):
            raise TypeError("orgcodes must be a list of work unit codes, not one string")
        params["ORGCODES"] = list(orgcodes)
        if not params["ORGCODES"]:
            raise ValueError("orgcodes is empty: pass None for every work unit the token sees")
    if sdate is not None:
        params["SDATE"] = sdate.isoformat()
    if edate is not None:
        params["EDATE"] = edate.isoformat()
    return params


def _not_the_api(response: requests.Response) -> SouthrockApiError:
    kind = response.headers.get("Content-Type", "no content type")
    return SouthrockApiError(
        response.status_code,
        None,
        f"{urlsplit(response.url).path} answered {response.status_code} with {kind}, not the API's JSON: "
        "is the URL the site's API?",
    )


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def _api_url(base_url: str) -> str:
    # Accept the site root or the versioned API URL (spec §8a).
    parts = urlsplit(base_url)
    # Without any user:password@ someone put in it: the client's own key authenticates every request,
    # and the URL appears in errors.
    shown = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {shown!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        # spec §8c: HTTPS only; over plain HTTP the Basic credentials would cross the network readable.
        raise ValueError(f"the API must be reached over https:// (spec §8c), not {shown!r}")
    url = shown.rstrip("/")
    if url.endswith("/api/v1"):
        return url
    if url.endswith("/api"):
        return url + "/v1"
    return url + "/api/v1"
