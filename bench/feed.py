"""Exact copies measured: the snapshot through gunicorn, a mirror's first copy and catch-up, the change log's cost.

Called by bench/run.py for each database, in the same run as the page scenarios:

- snapshot: GET /api/v1/enrolments/snapshot of a scope through gunicorn (one keep-alive connection,
  a warm-up request first, then one timed plain and one timed gzip request on the same connection,
  so the same worker with the same caches), against an in-process floor: the view's own block
  reads (`fetch_page`, SNAPSHOT_BLOCK_ROWS rows, SNAPSHOT_BLOCK_UNITS units a block, in one
  transaction) and JSON Lines encoding (`enrolment_renderer.json_lines`), with no HTTP, no Flask and
  no authentication. The workers' VmRSS and VmHWM (peak) are read before and after.
- mirror: `mirror()` (what `southrock-mirror` runs) into a fresh SQLite file, through a gunicorn at the
  default rate limit, on a copy of the database (the catch-up's import must not change the
  database the page scenarios and their floor tables are built on).
- catch-up: an enrolments.csv changing CHANGED_ENROLMENTS existing enrolments (scores; some leave
  COMPLETED, some reach it) imported into that copy, then `mirror()` again from its stored token,
  and the client's `iter_changes` from the same token at the feed's largest page.
- change log: `import_directory` on the same CSVs into a fresh database, twice (a first import, then
  a re-import of the same extract), with this checkout's code and with the code before the change
  log (CHANGELOG_BASE, extracted with `git archive`), each in a subprocess of its own.

Each is run once: a snapshot of a million rows takes seconds, an import tens of seconds.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import psycopg
import requests
from sqlalchemy import create_engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from southrock_api import create_app  # noqa: E402
from southrock_api.admin.tokens import IssuedToken  # noqa: E402
from southrock_api.api.feed_views import SNAPSHOT_BLOCK_ROWS, SNAPSHOT_BLOCK_UNITS  # noqa: E402
from southrock_api.api.rendering import enrolment_renderer, enrolment_row_format  # noqa: E402
from southrock_api.data.db import get_database, read_versions  # noqa: E402
from southrock_api.data.importer import import_directory  # noqa: E402
from southrock_api.data.importer.formats import ENROLMENTS  # noqa: E402
from southrock_api.integrations.client import MAX_CHANGES_LIMIT, SouthrockClient  # noqa: E402
from southrock_api.integrations.mirror import enrolments as mirrored, mirror, mirror_state  # noqa: E402
from southrock_api.report.summary import Filters, fetch_page  # noqa: E402
from southrock_api.report.visibility import WorkUnitInfo  # noqa: E402
from tests import databases, servers  # noqa: E402

SNAPSHOT_PATH = "/api/v1/enrolments/snapshot"
SNAPSHOT_TARGET_RATIO = 1.5
MIRROR_TARGET_SECONDS = 60
CATCH_UP_TARGET_REQUESTS = 60
CATCH_UP_TARGET_SECONDS = 10
CHANGELOG_TARGET_RATIO = 1.3
CHANGED_ENROLMENTS = 10_000
PAGE_LIMIT = 500  # the listing's largest page: what paging through the scope would take
DEFAULT_RATE_PER_MINUTE = 60  # config.RATE_LIMIT, which the mirror's server runs with
CHANGELOG_BASE = "231a999"  # the last commit whose importer kept no change log
READ_BYTES = 1 << 20

MemoryReader = Callable[[str], list[tuple[int, int]]]  # base URL → (VmRSS MiB, VmHWM MiB) per worker


@dataclass
class SnapshotResult:
    """One scope's snapshot: the API's times and bytes, the floor's, and the workers' memory."""

    rows: int
    api_s: float
    api_bytes: int
    floor_s: float
    floor_bytes: int
    gzip_s: float
    gzip_bytes: int
    http_s: float  # the same number of bytes in the same pieces streamed by bench/echo_app.py's stream_app
    memory: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.api_s / self.floor_s

    @property
    def work_ratio(self) -> float:
        """The API's time less what HTTP alone costs for the same stream, against the floor."""
        return max(self.api_s - self.http_s, 0.0) / self.floor_s


@dataclass
class CopyResult:
    """A mirror's first copy and its catch-up after an import."""

    rows: int
    first_s: float
    first_requests: int
    read_s: float  # iterating the client's snapshot() (download and parse), storing nothing
    delta_import_s: float
    catch_up_s: float
    catch_up_requests: int
    upserted: int
    deleted: int
    feed_s: float
    feed_requests: int
    feed_changes: int
    exact: bool  # the copy's rows after the catch-up are the database's completed enrolments


@dataclass
class ImportCost:
    """import_directory with and without the change log: (first import s, re-import s) each."""

    with_log: tuple[float, float]
    without_log: tuple[float, float]

    @property
    def ratio(self) -> float:
        return self.with_log[0] / self.without_log[0]

    @property
    def reimport_ratio(self) -> float:
        return self.with_log[1] / self.without_log[1]


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- snapshot ---------------------------------------------------------------


def _read_stream(
    connection: http.client.HTTPConnection, authorization: str, gzip: bool, path: str = SNAPSHOT_PATH
) -> tuple[float, int, bytes]:
    """GET the snapshot on connection; return (seconds to the last byte, body bytes, the body's last bytes)."""
    headers = {"Authorization": authorization, **({"Accept-Encoding": "gzip"} if gzip else {})}
    started = time.perf_counter()
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    size, tail = 0, b""
    while chunk := response.read(READ_BYTES):
        size += len(chunk)
        tail = (tail + chunk)[-4096:]
    seconds = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {tail[:200]!r}")
    return seconds, size, tail


def _closing_rows(tail: bytes) -> int:
    """ROWS of the closing record; fail unless the stream ends with one."""
    try:
        closing = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except ValueError:
        closing = {}
    if not isinstance(closing, dict) or closing.get("END") is not True:
        raise RuntimeError(f"the snapshot was cut (see bench/data/gunicorn-*.log): no closing record in {tail[-200:]!r}")
    return int(closing["ROWS"])


def snapshot_floor(url: str, units: list[WorkUnitInfo]) -> tuple[float, int, int]:
    """The view's block reads and JSON Lines in-process, in one transaction; return (seconds, bytes, rows)."""
    app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://"})
    filters = Filters(None, None)
    units_key = ("bench floor", tuple(unit.id for unit in units))
    try:
        with app.app_context(), get_database(app).session_factory() as session:
            data_version = read_versions(session).data
            # The units' running totals, cached as in the API's warmed-up worker.
            fetch_page(session, data_version, units, filters, 1, 1, None, units_key, row_format=enrolment_row_format)
            started = time.perf_counter()
            start, after, size = 1, None, 0
            while True:
                page = fetch_page(
                    session, data_version, units, filters, start, SNAPSHOT_BLOCK_ROWS, after, units_key,
                    row_format=enrolment_row_format, max_units=SNAPSHOT_BLOCK_UNITS,
                )
                if not page.rows:
                    break
                size += len(enrolment_renderer.json_lines(page.rows).encode())
                start += len(page.rows)
                after = page.last
            size += len(json.dumps({"END": True, "ROWS": start - 1}, separators=(",", ":")).encode()) + 1
            return time.perf_counter() - started, size, start - 1
    finally:
        get_database(app).engine.dispose()


def _connect(base_url: str) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)


def measure_snapshot(
    base_url: str, authorization: str, url: str, units: list[WorkUnitInfo], memory: MemoryReader, stream_url: str
) -> SnapshotResult:
    """A warm-up snapshot, a timed one and a gzip one on one connection (one worker), HTTP alone, then the floor."""
    connection = _connect(base_url)
    workers = {"before": memory(base_url)}
    _read_stream(connection, authorization, gzip=False)
    workers["after 1 snapshot"] = memory(base_url)
    api_s, api_bytes, tail = _read_stream(connection, authorization, gzip=False)
    gzip_s, gzip_bytes, _ = _read_stream(connection, authorization, gzip=True)
    workers["after 3 (one gzip)"] = memory(base_url)
    connection.close()
    rows = _closing_rows(tail)
    # One piece a block of the view, as the view sends them.
    block = -(-api_bytes // max(-(-rows // SNAPSHOT_BLOCK_ROWS), 1))
    echo = _connect(stream_url)
    _read_stream(echo, authorization, gzip=False, path=f"/?bytes={block}&block={block}")
    http_s, http_bytes, _ = _read_stream(echo, authorization, gzip=False, path=f"/?bytes={api_bytes}&block={block}")
    echo.close()
    assert http_bytes == api_bytes
    floor_s, floor_bytes, floor_rows = snapshot_floor(url, units)
    if floor_rows != rows:
        raise RuntimeError(f"the snapshot sent {rows} rows, the floor read {floor_rows}")
    return SnapshotResult(rows, api_s, api_bytes, floor_s, floor_bytes, gzip_s, gzip_bytes, http_s, workers)


# -- mirror and catch-up -------------------------------------------------------


class CountingSession(requests.Session):
    """A requests session that counts the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent += 1
        return super().send(request, **kwargs)


def write_delta(csvs: Path, directory: Path, changed: int = CHANGED_ENROLMENTS) -> int:
    """An enrolments.csv changing `changed` existing enrolments spread over the file; return how many."""
    directory.mkdir(parents=True, exist_ok=True)
    with (csvs / ENROLMENTS.name).open(encoding="utf-8-sig", newline="") as source:
        rows = list(csv.DictReader(source))
    step = max(len(rows) // changed, 1)
    chosen = rows[::step][:changed]
    for number, row in enumerate(chosen):
        if row["SCH_STATUS"] != "COMPLETED":
            row.update(SCH_STATUS="COMPLETED", SCH_AEDATE="2025-06-30", SCH_SCORE="77.00", SCH_PROGRESS="100")
        elif number % 10 == 0:  # leaves the report: a deletion for the copy
            row.update(SCH_STATUS="IN_PROGRESS", SCH_AEDATE="", SCH_SCORE="", SCH_PROGRESS="50")
        else:
            score = float(row["SCH_SCORE"] or 0)
            row["SCH_SCORE"] = f"{(score + 1.5) % 100:.2f}"
    with (directory / ENROLMENTS.name).open("w", encoding="utf-8", newline="") as target:
        writer = csv.DictWriter(target, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return len(chosen)


def _copy_database(backend: str, url: str) -> str:
    """A copy of the benchmark database, for the scenarios that import into it."""
    if backend == "sqlite":
        source = Path(url.removeprefix("sqlite:///"))
        target = source.with_name(source.stem + "-copy.sqlite")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    base, name = url.rsplit("/", 1)
    copy = f"{name}_copy"
    with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
    return f"{base}/{copy}"


def _drop_copy(backend: str, url: str) -> None:
    if backend == "sqlite":
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _import(url: str, directory: Path) -> float:
    """import_directory as `southrock import` runs it; return its seconds."""
    app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://"})
    get_database(app).for_commands(float(app.config["COMMAND_TIMEOUT"]))
    try:
        with app.app_context(), get_database(app).session_factory() as session:
            started = time.perf_counter()
            import_directory(session, directory)
            return time.perf_counter() - started
    finally:
        get_database(app).engine.dispose()


def _completed(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT count(*) FROM enrolments WHERE status = 'COMPLETED'").scalar_one())
    finally:
        engine.dispose()


def measure_copy(backend: str, url: str, token: IssuedToken, csvs: Path, data: Path) -> CopyResult:
    """mirror() a scope into a fresh SQLite file, import a delta into the served database, mirror() again."""
    copy_url = _copy_database(backend, url)
    limiter = data / f"ratelimit-copy-{backend}.sqlite"
    limiter.unlink(missing_ok=True)
    target = data / f"mirror-{backend}.sqlite"
    target.unlink(missing_ok=True)
    env = {"SOUTHROCK_DATABASE_URL": copy_url, "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{limiter}"}
    try:
        with servers.gunicorn(env, workers=2, log_path=data / f"gunicorn-copy-{backend}.log") as base_url:
            session = CountingSession()
            client = SouthrockClient(base_url, token.public_key, token.private_key, session=session)
            started = time.perf_counter()
            first = mirror(client, f"sqlite:///{target}")
            first_s, first_requests = time.perf_counter() - started, session.sent
            log(f"{backend}: mirror first copy: {first.upserted:,} rows in {first_s:.1f} s, {first_requests} requests")
            # The first copy's parts: the client reading the same snapshot, storing nothing.
            started = time.perf_counter()
            with client.snapshot() as snapshot:
                read = sum(1 for _ in snapshot)
            read_s = time.perf_counter() - started
            log(f"{backend}: the client read {read:,} snapshot rows in {read_s:.1f} s")
            engine = create_engine(f"sqlite:///{target}")
            with engine.connect() as connection:
                snapshot_token = str(connection.scalar(select(mirror_state.c.changes_token)))
            with tempfile.TemporaryDirectory() as tmp:
                write_delta(csvs, Path(tmp))
                delta_s = _import(copy_url, Path(tmp))
            log(f"{backend}: imported {CHANGED_ENROLMENTS:,} changed enrolments in {delta_s:.1f} s")
            session.sent = 0
            started = time.perf_counter()
            caught_up = mirror(client, f"sqlite:///{target}")
            catch_up_s, catch_up_requests = time.perf_counter() - started, session.sent
            log(f"{backend}: mirror catch-up: {catch_up_s:.1f} s, {catch_up_requests} requests")
            session.sent = 0
            started = time.perf_counter()
            changes = sum(1 for _ in client.iter_changes(snapshot_token, MAX_CHANGES_LIMIT))
            feed_s, feed_requests = time.perf_counter() - started, session.sent
            client.close()
            with engine.connect() as connection:
                copied = int(connection.scalar(select(func.count()).select_from(mirrored)) or 0)
            engine.dispose()
        return CopyResult(
            first.upserted, first_s, first_requests, read_s, delta_s, catch_up_s, catch_up_requests,
            caught_up.upserted, caught_up.deleted, feed_s, feed_requests, changes, copied == _completed(copy_url),
        )
    finally:
        _drop_copy(backend, copy_url)


# -- the change log's cost on an import --------------------------------------

# Run with PYTHONPATH at a checkout: the same calls exist before and after the change log.
_IMPORT_TWICE = """
import json, sys, time
from pathlib import Path
from southrock_api import create_app
from southrock_api.data import migrations
from southrock_api.data.db import get_database
from southrock_api.data.importer import import_directory
app = create_app({"DATABASE_URL": sys.argv[1], "RATELIMIT_STORAGE_URI": "memory://"})
get_database(app).for_commands(float(app.config["COMMAND_TIMEOUT"]))
migrations.upgrade(app)
seconds = []
for _ in range(2):
    with app.app_context(), get_database(app).session_factory() as session:
        started = time.perf_counter()
        import_directory(session, Path(sys.argv[2]))
        seconds.append(time.perf_counter() - started)
get_database(app).engine.dispose()
print(json.dumps(seconds))
"""


def _import_twice(checkout: Path, backend: str, csvs: Path, work: Path, label: str) -> tuple[float, float]:
    """A first import and a re-import of csvs into a fresh database, by the code at checkout."""
    if backend == "sqlite":
        url = f"sqlite:///{work / f'{label}.sqlite'}"
    else:
        name = f"southrock_bench_import_{label}"
        with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        url = databases.POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    try:
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT_TWICE, url, str(csvs.resolve())],
            cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True,
        )
        if result.returncode:
            raise RuntimeError(f"importing with the code at {checkout} failed:\n{result.stderr[-2000:]}")
    finally:
        if backend != "sqlite":
            with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    first, again = json.loads(result.stdout.strip().splitlines()[-1])
    return float(first), float(again)


def measure_import_cost(backends: list[str], csvs: Path) -> dict[str, ImportCost]:
    """Both importers on both databases; the old code from `git archive CHANGELOG_BASE`."""
    costs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = work / "before-change-log"
        old.mkdir()
        archive = subprocess.run(["git", "archive", CHANGELOG_BASE], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        for backend in backends:
            log(f"{backend}: change log cost: importing with the change log")
            with_log = _import_twice(ROOT, backend, csvs, work, "with_log")
            log(f"{backend}: change log cost: importing without it ({CHANGELOG_BASE})")
            without_log = _import_twice(old, backend, csvs, work, "without_log")
            costs[backend] = ImportCost(with_log, without_log)
            log(f"{backend}: import {with_log[0]:.1f} s vs {without_log[0]:.1f} s; re-import {with_log[1]:.1f} s vs {without_log[1]:.1f} s")
    return costs


# -- report -------------------------------------------------------------------


def _memory_text(memory: dict[str, list[tuple[int, int]]]) -> str:
    return "; ".join(
        f"{moment}: " + ", ".join(f"{rss}/{hwm}" for rss, hwm in workers) for moment, workers in memory.items()
    )


def _memory_verdict(snapshot: SnapshotResult) -> str:
    """How much the workers' peak grew over the three snapshots, against the size of one body."""
    before, after = snapshot.memory["before"], list(snapshot.memory.values())[-1]
    growth = max((late[1] - early[1] for early, late in zip(before, after)), default=0)
    flat = growth * 2**20 < snapshot.api_bytes / 4
    return (
        f"The workers' peak grew by at most {growth} MiB over three snapshots of {snapshot.api_bytes / 2**20:,.0f} MiB each: "
        + ("flat, a block's worth, not the rows'." if flat else "**not shown to be flat at this size** (not small against one body).")
    )


def _verdict(met: bool) -> str:
    return "within the target" if met else "**over the target**"


def report_lines(snapshot: SnapshotResult | None, copy: CopyResult | None, cost: ImportCost | None) -> list[str]:
    """The Markdown for one database's exact-copy scenarios."""
    lines: list[str] = []
    if snapshot:
        lines += [
            "### Snapshot of the root scope",
            "",
            "`GET /api/v1/enrolments/snapshot` with the root business unit's token through the same gunicorn, timed",
            "to the body's last byte (a warm-up request first, on the same keep-alive connection), against the floor:",
            "the view's own block reads (`fetch_page`, "
            f"{SNAPSHOT_BLOCK_ROWS:,} rows a block) and JSON Lines in-process, in one transaction, with no HTTP,",
            f"Flask or authentication. Target: API ≤ {SNAPSHOT_TARGET_RATIO}× floor, and worker memory flat (no growth with the row count).",
            "Each request once (a snapshot of the root scope takes seconds): on a shared machine, one sample each.",
            "",
            "HTTP alone: the same number of bytes, in the same pieces (one a block), streamed from memory by",
            "`bench/echo_app.py`'s `stream_app` under the same gunicorn.conf.py and read the same way.",
            "",
            "| rows | API s | floor s | ratio | HTTP alone s | (API − HTTP) ÷ floor | body MB | gzip s | gzip MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {snapshot.rows:,} | {snapshot.api_s:.2f} | {snapshot.floor_s:.2f} | **{snapshot.ratio:.2f}** "
            f"| {snapshot.http_s:.2f} | {snapshot.work_ratio:.2f} "
            f"| {snapshot.api_bytes / 1e6:.0f} | {snapshot.gzip_s:.2f} | {snapshot.gzip_bytes / 1e6:.0f} |",
            "",
            f"Ratio {snapshot.ratio:.2f}: {_verdict(snapshot.ratio <= SNAPSHOT_TARGET_RATIO)}"
            + ("" if snapshot.ratio <= SNAPSHOT_TARGET_RATIO else
               f"; HTTP alone takes {snapshot.http_s:.2f} s of the API's {snapshot.api_s:.2f} s, and what is left"
               f" is {snapshot.work_ratio:.2f}× the floor")
            + ". "
            f"The API sent {snapshot.api_bytes:,} bytes, the floor encoded {snapshot.floor_bytes:,}. "
            "Worker VmRSS/VmHWM (MiB, per worker): " + _memory_text(snapshot.memory) + ". " + _memory_verdict(snapshot),
            "",
        ]
    if copy:
        paged = -(-copy.rows // PAGE_LIMIT)
        lines += [
            "### Mirror: first copy and catch-up",
            "",
            "`mirror()` (what `southrock-mirror` runs) with the root token into a fresh SQLite file, through gunicorn at",
            f"the default {DEFAULT_RATE_PER_MINUTE}/minute rate limit, on a copy of this database. Then an `enrolments.csv` changing",
            f"{CHANGED_ENROLMENTS:,} existing enrolments (scores; a tenth of the completed ones leave COMPLETED, the",
            "others chosen reach it) is imported into that database, and `mirror()` catches up from its stored token;",
            f"`iter_changes(token, {MAX_CHANGES_LIMIT})` from the snapshot's token is timed too. Targets: first copy ≤ "
            f"{MIRROR_TARGET_SECONDS} s; catch-up ≤ {CATCH_UP_TARGET_REQUESTS} requests and ≤ {CATCH_UP_TARGET_SECONDS} s. Each step once.",
            "",
            "| step | rows / changes | requests | wall s |",
            "|---|---:|---:|---:|",
            f"| first copy (snapshot) | {copy.rows:,} | {copy.first_requests} | **{copy.first_s:.1f}** |",
            f"| of which reading the snapshot with the client (`snapshot()`, storing nothing; timed apart) | {copy.rows:,} | 1 "
            f"| {copy.read_s:.1f} |",
            f"| paging the listing instead (computed) | {copy.rows:,} | {paged:,} | "
            f"{paged * 60 / DEFAULT_RATE_PER_MINUTE:,.0f} ({paged / DEFAULT_RATE_PER_MINUTE:.0f} min at the rate limit) |",
            f"| import of the {CHANGED_ENROLMENTS:,} changes | {CHANGED_ENROLMENTS:,} | – | {copy.delta_import_s:.1f} |",
            f"| mirror catch-up (its default page) | {copy.upserted:,} upserted, {copy.deleted:,} deleted "
            f"| {copy.catch_up_requests} | **{copy.catch_up_s:.1f}** |",
            f"| `iter_changes`, limit {MAX_CHANGES_LIMIT} | {copy.feed_changes:,} | {copy.feed_requests} | {copy.feed_s:.1f} |",
            "",
            f"First copy: {_verdict(copy.first_s <= MIRROR_TARGET_SECONDS)}"
            + ("" if copy.first_s <= MIRROR_TARGET_SECONDS else
               f": the client's reading and parsing of the snapshot takes {copy.read_s:.1f} s of its {copy.first_s:.1f} s"
               + (f" (the stream alone, read raw, {snapshot.api_s:.1f} s above)" if snapshot else "")
               + f", and writing the rows into the SQLite copy the other {max(copy.first_s - copy.read_s, 0):.1f} s")
            + ". Catch-up: "
            f"{_verdict(copy.catch_up_requests <= CATCH_UP_TARGET_REQUESTS and copy.catch_up_s <= CATCH_UP_TARGET_SECONDS)}. "
            "The copy after the catch-up "
            + ("holds exactly the database's completed enrolments." if copy.exact else "**does not** hold the database's completed enrolments.")
            + " Requests are counted in the client's HTTP session (retries and rate-limit waits included).",
            "",
        ]
    if cost:
        lines += [
            "### The change log's cost on an import",
            "",
            "`import_directory` on the benchmark CSVs into a fresh database, then again (a re-import of the same",
            f"extract), with this code and then with the code before the change log ({CHANGELOG_BASE}), each in a subprocess,",
            "once each: on a shared machine a single pair differs by several seconds either way.",
            f"Target: import with the log ≤ {CHANGELOG_TARGET_RATIO}× without.",
            "",
            "| import | with the change log s | without s | ratio |",
            "|---|---:|---:|---:|",
            f"| first import | {cost.with_log[0]:.1f} | {cost.without_log[0]:.1f} | **{cost.ratio:.2f}** |",
            f"| re-import of the same extract | {cost.with_log[1]:.1f} | {cost.without_log[1]:.1f} | {cost.reimport_ratio:.2f} |",
            "",
            f"First import: {_verdict(cost.ratio <= CHANGELOG_TARGET_RATIO)}.",
            "",
        ]
    return lines
