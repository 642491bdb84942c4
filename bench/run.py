"""Benchmark GET /api/v1/enrolments through gunicorn against the in-process floor.

    python bench/run.py [--quick] [--database sqlite|postgresql|both] [--runs N] [--no-import]

The data set is `southrock demo-data`'s CSVs (1.25M enrolment rows, of which ~1M are
COMPLETED, 2,500 nested work units, 125k learners, 500 courses; --quick: 100k rows).
CSVs and imported databases are cached under bench/data/ (git-ignored) and reused.

API: a real gunicorn (gunicorn.conf.py, SOUTHROCK_WORKERS=2: one per core) on the imported database,
driven by one keep-alive HTTP/1.1 connection; each scenario is warmed up, then timed
`runs` times; the median is reported (client send → last byte of the body).

FLOOR: the same page computed in-process, with no HTTP, no framework and no
authentication, from an ideal covering index: a table holding exactly that request's
result (joined, filtered, rendered as text), clustered on the report order (SQLite:
WITHOUT ROWID primary key; PostgreSQL: primary key INCLUDE-ing every other column,
vacuumed so scans are index-only). floor = read the page (LIMIT/OFFSET for `start=`,
a keyset seek for a followed `next` link) + count the result (SELECT count(*)) +
encode the page as JSON (keys written once, each value through the json module's C
string encoder, as the API does). Each part is timed and reported.

HTTP ALONE: bench/echo_app.py under the same gunicorn.conf.py answers the API's request
with the API's response bytes from memory, timed the same way in a pass of its own (each
request after the same floor work as the API's): what HTTP costs with no application.
FLASK ALONE: the same from a one-view Flask app (echo_app.flask_app). Flask alone plus the
floor's page and JSON is the least a Flask application can take for the page (no
authentication, no rate limiting, the count cached, the page read and encoded as fast as
the floor does); where that exceeds the target ratio, no Flask application can meet it.

EXACT COPIES (bench/feed.py, once each): the root scope's snapshot through the same gunicorn
against the view's block reads in-process, with the workers' peak memory; `mirror()`'s first
copy and its catch-up after an import changing 10,000 enrolments, on a copy of the database
served at the default rate limit; the change log's cost on a full import (skipped with --no-import).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlencode, urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

import bound_cost  # noqa: E402  (beside this file)
import feed  # noqa: E402  (beside this file)
from southrock_api import create_app  # noqa: E402
from southrock_api.admin import tokens  # noqa: E402
from southrock_api.data import migrations  # noqa: E402
from southrock_api.data.db import get_database, read_versions  # noqa: E402
from southrock_api.data.demo import write_demo_csvs  # noqa: E402
from southrock_api.data.importer import import_directory  # noqa: E402
from southrock_api.data.models import BusinessUnit  # noqa: E402
from southrock_api.report.visibility import Hierarchy, WorkUnitInfo  # noqa: E402
from tests import databases, servers  # noqa: E402

DATA = ROOT / "bench" / "data"
FULL_ENROLMENTS = 1_250_000  # demo data completes 80%: ~1,000,000 COMPLETED rows
QUICK_ENROLMENTS = 100_000
SEED = 1
LIMIT = 500
FULL_RUNS = 15
QUICK_RUNS = 5
WARMUP = 2
FOLLOWED_PAGES = 3
TARGET_RATIO = 1.5
POSTGRES_ADMIN = databases.POSTGRES_ADMIN_URL
DATE_RANGE = ("2021-01-01", "2021-12-31")
KEYS = (
    "ORG_CODE", "ORG_NAME", "CRS_CODE", "CRS_DESC", "LR_ID", "LR_SNAME", "LR_FNAME", "LR_EMAIL",
    "SCH_AEDATE", "SCH_SCORE",
)
ROW_TEMPLATE = "{" + ",".join(f'"{key}":%s' for key in (*KEYS, "RNUM", "SCH_ID")) + "}"
FLOOR_COLUMNS = (
    "org_code", "org_name", "crs_code", "crs_desc", "lr_id", "lr_sname", "lr_fname", "lr_email",
    "sch_aedate", "sch_score",
)
ORDER = "org_code, crs_code, lr_id, sch_id"
TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass(frozen=True)
class Scope:
    """One result a scenario pages through: a token's units, maybe narrowed by ORGCODES and dates."""

    name: str
    token: str  # key of the token in Setup.tokens
    orgcodes: tuple[str, ...] = ()
    sdate: str | None = None
    edate: str | None = None

    def query(self) -> list[tuple[str, str]]:
        """The request's filter parameters."""
        pairs = [("ORGCODES", code) for code in self.orgcodes]
        if self.sdate:
            pairs.append(("SDATE", self.sdate))
        if self.edate:
            pairs.append(("EDATE", self.edate))
        return pairs


@dataclass
class Setup:
    """What the scenarios need from one database: tokens, unit sets and the floor."""

    backend: str
    url: str
    tokens: dict[str, tokens.IssuedToken]
    units: dict[str, list[WorkUnitInfo]]  # scope name → visible (and ORGCODES-filtered) units
    sizes: dict[str, int] = field(default_factory=dict)  # scope name → rows in its result


@dataclass
class Result:
    """One scenario's medians."""

    scenario: str
    api_ms: float
    floor_ms: float
    page_ms: float
    count_ms: float
    json_ms: float
    http_ms: float  # the same response bytes served by bench/echo_app.py through the same gunicorn
    flask_ms: float  # the same, served by a one-view Flask app (bench/echo_app.py's flask_app)

    @property
    def ratio(self) -> float:
        return self.api_ms / self.floor_ms

    @property
    def work_ratio(self) -> float:
        """The API's time less what HTTP alone costs for the same response, against the floor."""
        return max(self.api_ms - self.http_ms, 0.0) / self.floor_ms

    @property
    def least_ms(self) -> float:
        """The least a Flask application can take: Flask alone, then the floor's page and JSON (no count)."""
        return self.flask_ms + self.page_ms + self.json_ms

    @property
    def least_ratio(self) -> float:
        """least_ms against the floor: above the target, no Flask application can meet it."""
        return self.least_ms / self.floor_ms

    @property
    def overhead_ratio(self) -> float:
        """API time against the floor without its count (the count is cached by the API)."""
        return self.api_ms / (self.page_ms + self.json_ms)


# One database's results: pages, memory and sizes, the root scope's snapshot, the mirror's copy.
Section = tuple[list[Result], dict[str, Any], dict[str, int], feed.SnapshotResult, feed.CopyResult]


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data --------------------------------------------------------------------


def csv_directory(enrolments: int) -> Path:
    """The demo CSVs for this size, generated once."""
    directory = DATA / f"csv-{enrolments}-s{SEED}"
    if not (directory / "enrolments.csv").is_file():
        log(f"writing demo CSVs ({enrolments:,} enrolment rows) to {directory}")
        partial = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(partial, ignore_errors=True)
        write_demo_csvs(partial, enrolments=enrolments, seed=SEED)
        partial.rename(directory)
    return directory


def import_benchmark(csvs: Path) -> str:
    """Run bench/import_speed.py (the importer against raw loads) on the same CSVs; return its table."""
    log("import benchmark: bench/import_speed.py")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "import_speed.py"), "--data", str(csvs)],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def webhooks_benchmark() -> str:
    """Run bench/webhooks_cost.py (an import of ~10,000 changes with 100 subscriptions, then delivery); return its table."""
    log("webhooks benchmark: bench/webhooks_cost.py")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "webhooks_cost.py")], check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def _import(url: str, csvs: Path) -> None:
    app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://"})
    # As `southrock import` runs: no request's statement bound on a million-row load.
    get_database(app).for_commands(float(app.config["COMMAND_TIMEOUT"]))
    migrations.upgrade(app)
    with app.app_context(), get_database(app).session_factory() as session:
        import_directory(session, csvs)
    get_database(app).engine.dispose()


def sqlite_database(enrolments: int, csvs: Path) -> str:
    """The imported SQLite database for this size, built once."""
    path = DATA / f"app-{enrolments}-s{SEED}.sqlite"
    if not path.is_file():
        partial = path.with_name(path.name + ".tmp")
        partial.unlink(missing_ok=True)
        log(f"importing into {path}")
        _import(f"sqlite:///{partial}", csvs)
        partial.rename(path)
    return f"sqlite:///{path}"


def postgres_database(enrolments: int, csvs: Path) -> str:
    """The imported PostgreSQL database for this size, built once (renamed into place when done)."""
    name = f"southrock_bench_{enrolments}_s{SEED}"
    base = POSTGRES_ADMIN.rsplit("/", 1)[0]
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            partial = name + "_tmp"
            admin.execute(f'DROP DATABASE IF EXISTS "{partial}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{partial}"')
            log(f"importing into PostgreSQL database {name}")
            _import(f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{partial}", csvs)
            admin.execute(f'ALTER DATABASE "{partial}" RENAME TO "{name}"')
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def migrate_and_analyze(url: str) -> None:
    """Apply pending migrations; refresh planner statistics (and PostgreSQL's visibility map)."""
    app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://"})
    migrations.upgrade(app)
    get_database(app).engine.dispose()
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute("ANALYZE")
    else:
        with psycopg.connect(libpq(url), autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")


# -- scopes, tokens and the floor ---------------------------------------------


def choose_scopes(url: str) -> tuple[list[Scope], Setup]:
    """Issue the tokens and pick the scopes: the root business unit, a division, a work unit."""
    app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://"})
    with get_database(app).session_factory() as session:
        hierarchy = Hierarchy.load(session)
        business_units = dict(session.execute(select(BusinessUnit.code, BusinessUnit.id)).all())
        parents = dict(session.execute(select(BusinessUnit.code, BusinessUnit.parent_id)).all())
        root = next(code for code, parent in sorted(parents.items()) if parent is None)
        divisions = [code for code, parent in sorted(parents.items()) if parent == business_units[root]]
        # The division seeing the most work units, and the work unit with the largest subtree.
        division = max(
            divisions, key=lambda code: len(hierarchy.visible_work_units("business_unit", business_units[code]))
        )
        work_unit = max(
            hierarchy.work_units.values(), key=lambda info: len(hierarchy.visible_work_units("work_unit", info.id))
        )
        issued = {
            "root": tokens.create_token(session, business_unit=root, description="bench/run.py"),
            "division": tokens.create_token(session, business_unit=division, description="bench/run.py"),
            "work unit": tokens.create_token(session, work_unit=work_unit.code, description="bench/run.py"),
        }
        session.commit()
        principals = {
            "root": ("business_unit", business_units[root]),
            "division": ("business_unit", business_units[division]),
            "work unit": ("work_unit", work_unit.id),
        }
    get_database(app).engine.dispose()
    # Every 50th unit: ORGCODES spread across the whole code range.
    orgcodes = tuple(info.code for info in hierarchy.visible_work_units(*principals["root"])[::50])
    scopes = [
        Scope("root", "root"),
        Scope("root dates", "root", sdate=DATE_RANGE[0], edate=DATE_RANGE[1]),
        Scope("root orgcodes", "root", orgcodes=orgcodes),
        Scope("root orgcodes dates", "root", orgcodes=orgcodes, sdate=DATE_RANGE[0], edate=DATE_RANGE[1]),
        Scope(f"division {division}", "division"),
        Scope(f"work unit {work_unit.code}", "work unit"),
        Scope(f"work unit {work_unit.code} SDATE", "work unit", sdate=DATE_RANGE[0]),
    ]
    units = {
        scope.name: hierarchy.visible(*principals[scope.token], list(scope.orgcodes) or None) for scope in scopes
    }
    return scopes, Setup("", url, issued, units)


def _floor_select(scope: Scope, placeholder: str, score_text: str, date_text: str) -> tuple[str, list[Any]]:
    conditions = ["e.status = 'COMPLETED'"]
    parameters: list[Any] = []
    if scope.sdate:
        conditions.append(f"e.completed_on >= {placeholder}")
        parameters.append(scope.sdate)
    if scope.edate:
        conditions.append(f"e.completed_on <= {placeholder}")
        parameters.append(scope.edate)
    sql = (
        f"SELECT w.code, w.name, e.crs_code, c.description, e.lr_id, l.surname, l.first_name, l.email, "
        f"{date_text}, {score_text}, e.sch_id "
        f"FROM {{prefix}}enrolments e JOIN {{prefix}}work_units w ON w.id = e.work_unit_id "
        f"JOIN {{prefix}}learners l ON l.id = e.learner_id JOIN {{prefix}}courses c ON c.id = e.course_id "
        f"WHERE {' AND '.join(conditions)} AND e.work_unit_id IN (SELECT id FROM {{units}})"
    )
    return sql, parameters


def floor_tables(setup: Setup, scopes: list[Scope]) -> Callable[[], Any]:
    """Build (once per data version and scope set) one clustered result table per scope; return a connector."""
    data_app = create_app({"DATABASE_URL": setup.url, "RATELIMIT_STORAGE_URI": "memory://"})
    with get_database(data_app).session_factory() as session:
        version = read_versions(session).data
    get_database(data_app).engine.dispose()
    spec = hashlib.sha256(
        repr((version, [(s, [u.id for u in setup.units[s.name]]) for s in scopes])).encode()
    ).hexdigest()
    if setup.backend == "sqlite":
        app_path = setup.url.removeprefix("sqlite:///")
        path = Path(app_path).with_name(Path(app_path).stem + "-floor.sqlite")
        connect: Callable[[], Any] = lambda: sqlite3.connect(path)  # noqa: E731
        with connect() as connection:
            built = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'floor_spec'"
            ).fetchone() and connection.execute("SELECT spec FROM floor_spec").fetchone() == (spec,)
        if not built:
            path.unlink(missing_ok=True)
            log(f"building the floor tables in {path}")
            connection = sqlite3.connect(path)
            connection.execute("ATTACH DATABASE ? AS app", (app_path,))
            for number, scope in enumerate(scopes):
                connection.execute(
                    f"CREATE TABLE r{number} ({', '.join(f'{c} TEXT' for c in FLOOR_COLUMNS)}, sch_id TEXT, "
                    f"PRIMARY KEY ({ORDER})) WITHOUT ROWID"
                )
                connection.execute("CREATE TEMP TABLE units (id INTEGER PRIMARY KEY)")
                connection.executemany("INSERT INTO units VALUES (?)", [(u.id,) for u in setup.units[scope.name]])
                sql, parameters = _floor_select(
                    scope, "?", "printf('%d.%02d', e.score_hundredths / 100, e.score_hundredths % 100)", "e.completed_on"
                )
                connection.execute(
                    f"INSERT INTO r{number} {sql.format(prefix='app.', units='temp.units')} ORDER BY 1, 3, 5, 11",
                    parameters,
                )
                connection.execute("DROP TABLE temp.units")
            connection.execute("CREATE TABLE floor_spec (spec TEXT)")
            connection.execute("INSERT INTO floor_spec VALUES (?)", (spec,))
            connection.commit()
            connection.execute("ANALYZE")
            connection.close()
        return connect
    conninfo = libpq(setup.url)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        row = connection.execute("SELECT to_regclass('bench_floor.floor_spec') IS NOT NULL").fetchone()
        built = bool(row and row[0]) and connection.execute(
            "SELECT spec FROM bench_floor.floor_spec"
        ).fetchone() == (spec,)
        if not built:
            log("building the floor tables in schema bench_floor")
            connection.execute("DROP SCHEMA IF EXISTS bench_floor CASCADE")
            connection.execute("CREATE SCHEMA bench_floor")
            for number, scope in enumerate(scopes):
                connection.execute("CREATE TEMP TABLE units (id integer PRIMARY KEY)")
                with connection.cursor() as cursor:
                    cursor.executemany("INSERT INTO units VALUES (%s)", [(u.id,) for u in setup.units[scope.name]])
                sql, parameters = _floor_select(
                    scope,
                    "%s::date",
                    "(e.score_hundredths / 100)::text || '.' || lpad(mod(e.score_hundredths, 100)::text, 2, '0')",
                    "to_char(e.completed_on, 'YYYY-MM-DD')",
                )
                connection.execute(
                    f"CREATE TABLE bench_floor.r{number} ({', '.join(f'{c} text' for c in FLOOR_COLUMNS)}, sch_id text)"
                )
                connection.execute(
                    f"INSERT INTO bench_floor.r{number} {sql.format(prefix='public.', units='units')} ORDER BY 1, 3, 5, 11",
                    parameters,
                )
                connection.execute(
                    f"ALTER TABLE bench_floor.r{number} ADD PRIMARY KEY ({ORDER}) "
                    f"INCLUDE (org_name, crs_desc, lr_sname, lr_fname, lr_email, sch_aedate, sch_score)"
                )
                connection.execute("DROP TABLE units")
            connection.execute("CREATE TABLE bench_floor.floor_spec (spec text)")
            connection.execute("INSERT INTO bench_floor.floor_spec VALUES (%s)", (spec,))
            connection.execute("VACUUM ANALYZE")
    return lambda: psycopg.connect(conninfo, autocommit=True)


class Floor:
    """The floor's three parts for one scope table, on one connection."""

    def __init__(self, connection: Any, backend: str, table: str) -> None:
        self.connection = connection
        self.table = table
        mark = "?" if backend == "sqlite" else "%s"
        self.count_sql = f"SELECT count(*) FROM {table}"
        self.offset_sql = f"SELECT {', '.join(FLOOR_COLUMNS)}, sch_id FROM {table} ORDER BY {ORDER} LIMIT {mark} OFFSET {mark}"
        self.keyset_sql = (
            f"SELECT {', '.join(FLOOR_COLUMNS)}, sch_id FROM {table} WHERE ({ORDER}) > ({mark}, {mark}, {mark}, {mark}) "
            f"ORDER BY {ORDER} LIMIT {mark}"
        )

    def measure(self, start: int, after: tuple[str, str, str, str] | None) -> tuple[float, float, float, list[Any]]:
        """Return (page s, count s, json s, rows) for rows start.. (or after a key) of the result."""
        t0 = time.perf_counter()
        if after is None:
            rows = self.connection.execute(self.offset_sql, (LIMIT, start - 1)).fetchall()
        else:
            rows = self.connection.execute(self.keyset_sql, (*after, LIMIT)).fetchall()
        t1 = time.perf_counter()
        total = self.connection.execute(self.count_sql).fetchone()[0]
        t2 = time.perf_counter()
        # The fastest encoding the json module offers for these rows: keys encoded once, each
        # value through its C string encoder (what the API's RowRenderer does too).
        body = (
            "["
            + ",".join(
                ROW_TEMPLATE % (*map(encode_basestring, row[:10]), encode_basestring(str(number)), encode_basestring(row[10]))
                for number, row in enumerate(rows, start=start)
            )
            + "]"
        ).encode()
        t3 = time.perf_counter()
        assert total >= len(rows) and body
        return t1 - t0, t2 - t1, t3 - t2, rows


# -- the API client ---------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        self.reconnects = 0

    def get(self, path: str, authorization: str) -> tuple[float, http.client.HTTPResponse, bytes]:
        """GET path; return (seconds, response, body)."""
        headers = {"Authorization": authorization, "Accept": "application/json"}
        started = time.perf_counter()
        try:
            self.connection.request("GET", path, headers=headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the connection after its keep-alive timeout (a long floor
            # measurement in between, on a slow machine): reconnect, and time the retry only.
            self.connection.close()
            self.reconnects += 1
            started = time.perf_counter()
            self.connection.request("GET", path, headers=headers)
            response = self.connection.getresponse()
        body = response.read()
        seconds = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        if response.getheader("Connection", "").lower() == "close":
            self.reconnects += 1
            self.connection.close()
        return seconds, response, body


@dataclass
class Clients:
    """A keep-alive connection to the API and one to each echo server (bench/echo_app.py)."""

    api: Client
    echo: Client
    flask: Client

    def prime(self, body: bytes) -> None:
        """Make the echo servers answer with these bytes (on fresh connections: they may have idled out)."""
        for echo in (self.echo, self.flask):
            echo.connection.close()
            echo.connection.request("PUT", "/", body=body)
            response = echo.connection.getresponse()
            response.read()
            if response.status != 204:
                raise RuntimeError(f"echo server: {response.status}")


@contextmanager
def echo_server(target: str) -> Iterator[str]:
    """An app of bench/echo_app.py under gunicorn.conf.py's settings, one worker (one primed body)."""
    port = servers.free_port()
    env = {**os.environ, "SOUTHROCK_BIND": f"127.0.0.1:{port}", "SOUTHROCK_WORKERS": "1", "SOUTHROCK_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), f"bench.echo_app:{target}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the echo server did not start") from None
                time.sleep(0.1)
        yield base_url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def _path(scope: Scope, start: int) -> str:
    return "/api/v1/enrolments?" + urlencode([*scope.query(), ("start", str(start)), ("limit", str(LIMIT))])


def _next_path(response: http.client.HTTPResponse) -> str:
    for part in (response.getheader("Link") or "").split(", "):
        if part.endswith('rel="next"'):
            url = urlsplit(part[1 : part.index(">")])
            return f"{url.path}?{url.query}"
    raise RuntimeError("no next link")


def _key(row: tuple[Any, ...]) -> tuple[str, str, str, str]:
    return (row[0], row[2], row[4], row[10])


def run_backend(
    backend: str, url: str, runs: int, scopes: list[Scope], setup: Setup
) -> tuple[list[Result], dict[str, Any], feed.SnapshotResult]:
    """Serve the database with gunicorn and measure every scenario (and the root scope's snapshot) against its floor."""
    connect = floor_tables(setup, scopes)
    floor_connection = connect()
    floors = {scope.name: Floor(floor_connection, backend, f"{'' if backend == 'sqlite' else 'bench_floor.'}r{number}") for number, scope in enumerate(scopes)}
    for scope in scopes:
        setup.sizes[scope.name] = floors[scope.name].connection.execute(floors[scope.name].count_sql).fetchone()[0]
    env = {
        "SOUTHROCK_DATABASE_URL": url,
        "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{DATA / f'ratelimit-{backend}.sqlite'}",
        "SOUTHROCK_RATE_LIMIT": "100000000 per minute",
    }
    results: list[Result] = []
    memory: dict[str, Any] = {}
    memory["load average before"] = f"{os.getloadavg()[0]:.1f}"
    with (
        servers.gunicorn(env, workers=2, log_path=DATA / f"gunicorn-{backend}.log") as base_url,
        echo_server("app") as echo_url,
        echo_server("flask_app") as flask_url,
        echo_server("stream_app") as stream_url,
    ):
        client = Client(base_url)
        clients = Clients(client, Client(echo_url), Client(flask_url))
        memory["after start"] = worker_rss(base_url)
        for scope in scopes:
            size = setup.sizes[scope.name]
            authorization = setup.tokens[scope.token].authorization
            last = 1 + (max(size, 1) - 1) // LIMIT * LIMIT
            positions = {"first": 1, "25%": 1 + size // 4 // LIMIT * LIMIT, "50%": 1 + size // 2 // LIMIT * LIMIT, "last": last}
            wanted: tuple[str, ...] = ("first", "25%", "50%", "last") if scope.name == "root" else ("first", "50%", "last")
            if scope.token == "work unit" or "orgcodes" in scope.name:
                wanted = ("first", "last")
            for label in wanted:
                start = positions[label]
                results.append(
                    _measure(f"{scope.name}: {label} page (start={start:,})", runs, clients, authorization, floors[scope.name], scope, start)
                )
                log(f"{backend}: {results[-1].scenario}: API {results[-1].api_ms:.1f} ms, floor {results[-1].floor_ms:.1f} ms")
        root = scopes[0]
        authorization = setup.tokens[root.token].authorization
        for label, start in (("from the first page", 1), ("from the 50% page", 1 + setup.sizes[root.name] // 2 // LIMIT * LIMIT)):
            results.append(_measure_following(f"root: following next {label}", runs, clients, authorization, floors[root.name], root, start))
            log(f"{backend}: {results[-1].scenario}: API {results[-1].api_ms:.1f} ms, floor {results[-1].floor_ms:.1f} ms")
        memory["after scenarios"] = worker_rss(base_url)
        # A long walk deep into the result must not grow the worker.
        _, response, _ = client.get(_path(root, 1 + setup.sizes[root.name] // 2 // LIMIT * LIMIT), authorization)
        for _ in range(runs * 10):
            _, response, _ = client.get(_next_path(response), authorization)
        memory["after a 10×runs-page walk"] = worker_rss(base_url)
        memory["reconnects"] = client.reconnects
        log(f"{backend}: snapshot of the root scope")
        snapshot = feed.measure_snapshot(base_url, authorization, url, setup.units[root.name], worker_memory, stream_url)
        log(f"{backend}: snapshot: API {snapshot.api_s:.1f} s, floor {snapshot.floor_s:.1f} s, {snapshot.rows:,} rows")
    memory["load average after"] = f"{os.getloadavg()[0]:.1f}"
    floor_connection.close()
    return results, memory, snapshot


def _measure(name: str, runs: int, clients: Clients, authorization: str, floor: Floor, scope: Scope, start: int) -> Result:
    path = _path(scope, start)
    for _ in range(WARMUP):
        body = clients.api.get(path, authorization)[2]
        floor.measure(start, None)
    parts: list[tuple[float, float, float]] = []
    # Alternating, so that both sides see the same background load on a shared machine.
    api: list[float] = []
    for _ in range(runs):
        api.append(clients.api.get(path, authorization)[0])
        parts.append(floor.measure(start, None)[:3])
    http = _measure_http(runs, clients, (path, authorization), body, lambda: floor.measure(start, None))
    return _result(name, api, parts, http)


def _measure_http(
    runs: int, clients: Clients, request: tuple[str, str], body: bytes, pause: Callable[[], Any]
) -> tuple[list[float], list[float]]:
    """Time both echo servers answering the API's request with its body, after the same pause as the API."""
    clients.prime(body)
    timed: tuple[list[float], list[float]] = ([], [])
    # A pass of its own for each: an echo request between two API requests would slow the second down.
    for echo, seconds in zip((clients.echo, clients.flask), timed):
        for _ in range(WARMUP):
            echo.get(*request)
            pause()
        for _ in range(runs):
            seconds.append(echo.get(*request)[0])
            pause()
    return timed


def _measure_following(name: str, runs: int, clients: Clients, authorization: str, floor: Floor, scope: Scope, start: int) -> Result:
    """Time pages reached by following `next` from `start`, and the floor's keyset seek for the same pages."""
    api: list[float] = []
    parts: list[tuple[float, float, float]] = []
    for run in range(WARMUP + runs):
        _, response, _ = clients.api.get(_path(scope, start), authorization)
        rows = floor.measure(start, None)[3]
        position = start
        for _ in range(FOLLOWED_PAGES):
            path = _next_path(response)
            seconds, response, body = clients.api.get(path, authorization)
            position += LIMIT
            page, count, encode, next_rows = floor.measure(position, _key(rows[-1]))
            after = _key(rows[-1])
            rows = next_rows
            if run >= WARMUP:
                api.append(seconds)
                parts.append((page, count, encode))
    http = _measure_http(runs * FOLLOWED_PAGES, clients, (path, authorization), body, lambda: floor.measure(position, after))
    return _result(name, api, parts, http)


def _result(
    name: str, api: list[float], parts: list[tuple[float, float, float]], http: tuple[list[float], list[float]]
) -> Result:
    return Result(
        name,
        statistics.median(api) * 1000,
        statistics.median(sum(p) for p in parts) * 1000,
        statistics.median(p[0] for p in parts) * 1000,
        statistics.median(p[1] for p in parts) * 1000,
        statistics.median(p[2] for p in parts) * 1000,
        statistics.median(http[0]) * 1000,
        statistics.median(http[1]) * 1000,
    )


def worker_rss(base_url: str) -> list[int]:
    """Resident memory (MiB) of the gunicorn workers serving base_url."""
    return sorted(rss for rss, _peak in worker_memory(base_url))


def worker_memory(base_url: str) -> list[tuple[int, int]]:
    """(VmRSS, VmHWM) in MiB of each gunicorn worker serving base_url: processes whose parent serves it too."""
    marker = f"SOUTHROCK_BIND=127.0.0.1:{urlsplit(base_url).port}".encode()

    def serves(pid: str) -> bool:
        try:
            return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False

    sizes: list[tuple[int, int]] = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        parent = status.split("PPid:")[1].split()[0]
        if serves(pid) and serves(parent):
            sizes.append(
                (int(status.split("VmRSS:")[1].split()[0]) // 1024, int(status.split("VmHWM:")[1].split()[0]) // 1024)
            )
    return sorted(sizes)


# -- report -----------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    if databases.postgres_available():
        with psycopg.connect(POSTGRES_ADMIN) as connection:
            version = connection.execute("SHOW server_version").fetchone()
            assert version is not None
            info["postgresql"] = str(version[0])
    return info


def table(results: list[Result]) -> list[str]:
    """A Markdown table of the results."""
    lines = [
        "| scenario | API ms | floor ms | ratio | floor: page + count + JSON ms | API ÷ (page + JSON) | HTTP alone ms "
        "| (API − HTTP) ÷ floor | Flask alone ms | least ÷ floor |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.api_ms:.1f} | {r.floor_ms:.1f} | **{r.ratio:.2f}** | "
            f"{r.page_ms:.1f} + {r.count_ms:.1f} + {r.json_ms:.1f} | {r.overhead_ratio:.2f} | "
            f"{r.http_ms:.1f} | {r.work_ratio:.2f} | {r.flask_ms:.1f} | "
            + (f"**{r.least_ratio:.2f}** |" if r.least_ratio > TARGET_RATIO else f"{r.least_ratio:.2f} |")
        )
    return lines


def write_report(
    path: Path, enrolments: int, runs: int, info: dict[str, str], sections: dict[str, Section], imports: str | None,
    costs: dict[str, feed.ImportCost],
    hooks: str | None = None,
) -> None:
    """Write the Markdown report."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); do not edit by hand. How the API and the floor are",
        "measured is described in `bench/run.py`'s docstring and in docs/architecture.md.",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['cpu']}, {info['cores']} cores (shared), Python {info['python']}, "
        f"SQLite {info['sqlite']}" + (f", PostgreSQL {info['postgresql']}" if "postgresql" in info else ""),
        f"- Data: `southrock demo-data --enrolments {enrolments} --seed {SEED}`; page size {LIMIT}; "
        f"median of {runs} runs after {WARMUP} warm-up requests; target ratio ≤ {TARGET_RATIO}",
        "- API: gunicorn with gunicorn.conf.py and 2 workers (SOUTHROCK_WORKERS=2, one per core), one keep-alive connection, authentication,",
        "  rate limiting (SQLite store) and access logging on; time from sending the request to the body's last byte.",
        "- Floor: in-process, the same page read from a table that holds exactly that request's result, clustered",
        "  on the report order (LIMIT/OFFSET for `start=`, a keyset seek for a followed `next` link), plus",
        "  `SELECT count(*)` of the result, plus JSON encoding of the page (keys encoded once, values by the json module's C encoder).",
        "- API ÷ (page + JSON) compares the API with the floor's page + JSON alone (the API's count is cached).",
        "- HTTP alone: the same response bytes served from memory by `bench/echo_app.py` under the same",
        "  gunicorn.conf.py, measured the same way (one keep-alive connection, after the same pause). The last",
        "  column is the API's time less that, against the floor: the application's own share of the ratio.",
        "- Flask alone: the same bytes from a one-view Flask app (`bench/echo_app.py`'s `flask_app`), measured",
        "  the same way. least ÷ floor is (Flask alone + the floor's page + JSON) ÷ floor: what a Flask",
        "  application would take that authenticated nothing, limited nothing and read and encoded the page",
        f"  at the floor's own cost. **Bold**: above {TARGET_RATIO}, the target is out of reach of any Flask application.",
        "",
    ]
    for backend, (results, memory, sizes, snapshot, copy) in sections.items():
        worst = max(r.ratio for r in results)
        out_of_reach = [r for r in results if r.least_ratio > TARGET_RATIO]
        over = [r for r in results if r.ratio > TARGET_RATIO]
        lines += [f"## {backend}", ""]
        lines += ["Result sizes: " + ", ".join(f"{name} {size:,}" for name, size in sizes.items()), ""]
        lines += table(results)
        lines += [
            "",
            f"Worst ratio: **{worst:.2f}** ({'within' if worst <= TARGET_RATIO else 'OVER'} the {TARGET_RATIO}× target). "
            f"Over the target: {len(over)} of {len(results)} scenarios; out of reach of any Flask application "
            f"(least ÷ floor > {TARGET_RATIO}): {len(out_of_reach)}.",
            "Worker resident memory (MiB, per worker): "
            + "; ".join(f"{k}: {v}" for k, v in memory.items() if k.startswith("after"))
            + f". Connections the server closed: {memory.get('reconnects', 0)}. 1-minute load average of the"
            f" (shared) machine before / after: {memory['load average before']} / {memory['load average after']}.",
            "",
        ]
        if "bounded waits" in memory:
            lines += [memory["bounded waits"], ""]
        lines += feed.report_lines(snapshot, copy, costs.get(backend))
    if imports:
        lines += [
            "## Import (SQLite)",
            "",
            "`bench/import_speed.py --data` on the same CSVs: `southrock import` (validates, resolves",
            "references, upserts into the indexed schema in one transaction) against raw `csv` → `executemany`",
            "loads into fresh SQLite files; the target is importer ÷ raw ≤ 2.",
            "",
            "```",
            imports,
            "```",
            "",
        ]
    if hooks:
        lines += [
            "## Webhooks (SQLite)",
            "",
            "`bench/webhooks_cost.py`: the same import with and without 100 subscriptions (the outbox is",
            "written in the import's transaction), then one delivery pass to a loopback receiver.",
            "",
            "```",
            hooks,
            "```",
            "",
        ]
    path.write_text("\n".join(lines))


def main() -> None:
    """Build or reuse the data, run every scenario on each database, print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ENROLMENTS:,} rows; writes bench/data/benchmarks-quick.md")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--no-import", action="store_true", help="skip the import benchmarks (import speed, the change log's cost, webhooks)")
    args = parser.parse_args()
    enrolments = QUICK_ENROLMENTS if args.quick else FULL_ENROLMENTS
    runs = args.runs or (QUICK_RUNS if args.quick else FULL_RUNS)
    backends = {"sqlite": ["sqlite"], "postgresql": ["postgresql"], "both": ["sqlite", "postgresql"]}[
        args.database or ("both" if databases.postgres_available() else "sqlite")
    ]
    DATA.mkdir(parents=True, exist_ok=True)
    csvs = csv_directory(enrolments)
    sections: dict[str, Section] = {}
    for backend in backends:
        url = sqlite_database(enrolments, csvs) if backend == "sqlite" else postgres_database(enrolments, csvs)
        log(f"{backend}: migrating and analysing {url}")
        migrate_and_analyze(url)
        scopes, setup = choose_scopes(url)
        setup.backend = backend
        results, memory, snapshot = run_backend(backend, url, runs, scopes, setup)
        if backend == "postgresql":
            memory["bounded waits"] = bound_cost.measure(url)
            log(memory["bounded waits"])
        copy = feed.measure_copy(backend, url, setup.tokens["root"], csvs, DATA)
        title = TITLES[backend]
        sections[title] = (results, memory, dict(setup.sizes), snapshot, copy)
        print(f"\n{title}\n" + "\n".join(table(results)) + "\n\n" + "\n".join(feed.report_lines(snapshot, copy, None)))
    imports = None if args.no_import else import_benchmark(csvs)
    if imports:
        print(f"\nImport (SQLite)\n{imports}")
    costs = {} if args.no_import else {TITLES[b]: cost for b, cost in feed.measure_import_cost(backends, csvs).items()}
    for title, cost in costs.items():
        print(f"\n{title}\n" + "\n".join(feed.report_lines(None, None, cost)))
    hooks = None if args.no_import else webhooks_benchmark()
    if hooks:
        print(f"\nWebhooks (SQLite)\n{hooks}")
    report = DATA / "benchmarks-quick.md" if args.quick else ROOT / "docs" / "benchmarks.md"
    write_report(report, enrolments, runs, machine(), sections, imports, costs, hooks)
    log(f"wrote {report}")


if __name__ == "__main__":
    main()
