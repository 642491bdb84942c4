"""Import speed: `southrock import` against raw csv → executemany loads of the same files.

    python bench/import_speed.py [--enrolments 1200000] [--seed 1] [--data DIR]

Every load writes a fresh SQLite file with the engine's pragmas (WAL,
synchronous=NORMAL, foreign keys on) in one transaction:

- raw text:   every row of the five files, as text, into unindexed tables shaped like the files;
- raw schema: the same rows into the migrated schema, codes turned into ids with
  dictionaries, plain INSERTs, no validation (the same page cache as the importer);
- raw schema, indexes after: the same, with the enrolments' secondary indexes dropped
  before and built after the INSERTs, as the importer does for a bulk load: the least
  any importer that leaves the data as the API reads it can take, validating nothing;
- importer:   `import_directory`, which validates, resolves references and upserts.

Wall-clock time is shown with the process's CPU time: on a shared machine the
CPU time is the steadier measure.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from southrock_api import create_app  # noqa: E402
from southrock_api.data import migrations  # noqa: E402
from southrock_api.data.db import get_database  # noqa: E402
from southrock_api.data.demo import write_demo_csvs  # noqa: E402
from southrock_api.data.importer import import_directory  # noqa: E402
from southrock_api.data.importer.formats import FILES  # noqa: E402
from southrock_api.data.importer.writing import SQLITE_IMPORT_CACHE_KIB  # noqa: E402

BATCH_ROWS = 10_000


def _connect(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def _rows(path: Path) -> csv.DictReader[str]:
    return csv.DictReader(path.open(encoding="utf-8-sig", newline=""))


def _executemany(connection: sqlite3.Connection, sql: str, rows: object) -> int:
    count = 0
    batch: list[tuple[object, ...]] = []
    for row in rows:  # type: ignore[attr-defined]
        batch.append(row)
        if len(batch) == BATCH_ROWS:
            connection.executemany(sql, batch)
            count += len(batch)
            batch = []
    connection.executemany(sql, batch)
    return count + len(batch)


def raw_text_load(data: Path, database: Path) -> int:
    """Load every CSV row as text into tables shaped like the files; return the row count."""
    connection = _connect(database)
    rows = 0
    connection.execute("BEGIN")
    for spec in FILES:
        with (data / spec.name).open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            table = spec.name.removesuffix(".csv")
            connection.execute(f"CREATE TABLE {table} ({', '.join(f'{name} TEXT' for name in header)})")
            rows += _executemany(connection, f"INSERT INTO {table} VALUES ({', '.join('?' for _ in header)})", reader)
    connection.execute("COMMIT")
    connection.close()
    return rows


def _ids(connection: sqlite3.Connection, table: str, key: str = "code") -> dict[str, int]:
    return dict(connection.execute(f"SELECT {key}, id FROM {table}").fetchall())


def raw_schema_load(data: Path, database: Path, indexes_after: bool = False) -> None:
    """Insert the rows into the migrated schema with dictionary lookups and no checks."""
    connection = _connect(database)
    connection.execute(f"PRAGMA cache_size=-{SQLITE_IMPORT_CACHE_KIB}")
    connection.execute("BEGIN")
    # The CREATE statements as the migrations wrote them; UNIQUE constraints' indexes (sql IS NULL) stay.
    indexes = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'enrolments' AND sql IS NOT NULL"
    ).fetchall() if indexes_after else []
    for name, _sql in indexes:
        connection.execute(f'DROP INDEX "{name}"')
    units = list(_rows(data / "business_units.csv"))
    _executemany(connection, "INSERT INTO business_units (code, name) VALUES (?, ?)", ((r["ORGGRP_CODE"], r["ORGGRP_NAME"]) for r in units))
    business = _ids(connection, "business_units")
    _executemany(connection, "UPDATE business_units SET parent_id = ? WHERE id = ?", ((business.get(r["PARENT_ORGGRP_CODE"]), business[r["ORGGRP_CODE"]]) for r in units))
    units = list(_rows(data / "work_units.csv"))
    _executemany(
        connection,
        "INSERT INTO work_units (code, name, business_unit_id) VALUES (?, ?, ?)",
        ((r["ORG_CODE"], r["ORG_NAME"], business[r["ORGGRP_CODE"]]) for r in units),
    )
    work = _ids(connection, "work_units")
    _executemany(connection, "UPDATE work_units SET parent_id = ? WHERE id = ?", ((work.get(r["PARENT_ORG_CODE"]), work[r["ORG_CODE"]]) for r in units))
    _executemany(connection, "INSERT INTO courses (code, description) VALUES (?, ?)", ((r["CRS_CODE"], r["CRS_DESC"]) for r in _rows(data / "courses.csv")))
    _executemany(
        connection,
        "INSERT INTO learners (lr_id, first_name, surname, email, work_unit_id) VALUES (?, ?, ?, ?, ?)",
        ((r["LR_ID"], r["LR_FNAME"], r["LR_SNAME"], r["LR_EMAIL"], work[r["ORG_CODE"]]) for r in _rows(data / "learners.csv")),
    )
    courses = _ids(connection, "courses")
    learners = {lr_id: (id_, unit) for lr_id, id_, unit in connection.execute("SELECT lr_id, id, work_unit_id FROM learners")}

    def enrolment(r: dict[str, str]) -> tuple[object, ...]:
        learner = learners[r["LR_ID"]]
        score = round(float(r["SCH_SCORE"]) * 100) if r["SCH_SCORE"] else None
        progress = int(r["SCH_PROGRESS"] or (100 if r["SCH_STATUS"] == "COMPLETED" else 0))
        return (r["SCH_ID"], learner[0], courses[r["CRS_CODE"]], r["SCH_STATUS"], r["SCH_AEDATE"] or None, score, progress, learner[1], r["CRS_CODE"], r["LR_ID"])

    _executemany(
        connection,
        "INSERT INTO enrolments (sch_id, learner_id, course_id, status, completed_on, score_hundredths, progress,"
        " work_unit_id, crs_code, lr_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        map(enrolment, _rows(data / "enrolments.csv")),
    )
    for _name, sql in indexes:
        connection.execute(sql)
    connection.execute("COMMIT")
    connection.close()


def _migrated(database: Path) -> Callable[[Path], None]:
    app = create_app({"DATABASE_URL": f"sqlite:///{database}", "RATELIMIT_STORAGE_URI": "memory://"})
    get_database(app).for_commands(float(app.config["COMMAND_TIMEOUT"]))  # as `southrock import` runs
    migrations.upgrade(app)
    get_database(app).engine.dispose()

    def run(data: Path) -> None:
        with app.app_context(), get_database(app).session_factory() as session:
            import_directory(session, data)
        get_database(app).engine.dispose()

    return run


def _timed(load: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    load()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Generate (or reuse) a data set, time the four loads and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enrolments", type=int, default=1_200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, help="CSV directory to reuse instead of generating one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            data = work / "csv"
            write_demo_csvs(data, enrolments=args.enrolments, seed=args.seed)
        rows = raw_text_load(data, work / "count.sqlite")
        results = {"raw text": _timed(lambda: raw_text_load(data, work / "text.sqlite"))}
        schema_database, import_database = work / "schema.sqlite", work / "import.sqlite"
        _migrated(schema_database)
        results["raw schema"] = _timed(lambda: raw_schema_load(data, schema_database))
        late_database = work / "late.sqlite"
        _migrated(late_database)
        results["raw schema, indexes after"] = _timed(lambda: raw_schema_load(data, late_database, indexes_after=True))
        importer = _migrated(import_database)
        results["importer"] = _timed(lambda: importer(data))
    import_wall, import_cpu = results["importer"]
    print(f"{rows:,} rows in the five files of {data}")
    print(f"{'load':<26} {'wall s':>7} {'cpu s':>7} {'rows/s (wall)':>14} {'importer ÷ (wall, cpu)':>24}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<26} {wall:>7.2f} {cpu:>7.2f} {rows / wall:>14,.0f} {import_wall / wall:>15.2f} {import_cpu / cpu:>8.2f}")


if __name__ == "__main__":
    main()
