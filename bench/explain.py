"""Print the query plans of the report's key statements on the benchmark databases.

    python bench/explain.py [--quick] [--database sqlite|postgresql|both]

SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN (ANALYZE, BUFFERS). The statements are
the ones southrock_api.report.summary runs, compiled for each dialect, with the parameters
of a page in the middle of the root business unit's result. docs/architecture.md quotes
this output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
from pathlib import Path
from itertools import accumulate
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Select, func, select  # noqa: E402
from sqlalchemy.engine import Dialect  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from southrock_api import create_app  # noqa: E402
from southrock_api.data.db import get_database, read_versions  # noqa: E402
from southrock_api.report.summary import Filters, SortKey, _completed, _page_query, _page_statement, _plan, _Slice  # noqa: E402
from southrock_api.data.models import BusinessUnit, Enrolment  # noqa: E402
from southrock_api.report.visibility import hierarchy  # noqa: E402
from tests import databases  # noqa: E402

FULL_ENROLMENTS = 1_250_000
QUICK_ENROLMENTS = 100_000
LIMIT = 500


def _counts(session: Session, filters: Filters) -> dict[int, int]:
    return dict(session.execute(_count_statement(filters)).all())


def _count_statement(filters: Filters) -> Select:
    return _completed(select(Enrolment.work_unit_id, func.count()).group_by(Enrolment.work_unit_id), filters)


def statements(url: str) -> tuple[Dialect, list[tuple[str, Select, dict[str, Any]]]]:
    """The key statements with the parameters of pages of the root business unit's result."""
    app = create_app({"DATABASE_URL": url, "RATELIMIT_STORAGE_URI": "memory://"})
    database = get_database(app)
    dates = Filters(dt.date(2021, 1, 1), dt.date(2021, 12, 31))
    with database.session_factory() as session:
        version = read_versions(session).data
        root = session.scalar(select(BusinessUnit.id).where(BusinessUnit.parent_id.is_(None)))
        assert root is not None
        units = hierarchy(session, version).visible_work_units("business_unit", root)
        counts, date_counts = _counts(session, Filters()), _counts(session, dates)
    database.engine.dispose()

    def plan(counts: dict[int, int], start: int, after: SortKey | None = None) -> list[_Slice]:
        sizes = [counts.get(unit.id, 0) for unit in units]
        return _plan(units, sizes, list(accumulate(sizes)), start, LIMIT, after)

    def page(slices: list[_Slice], filters: Filters) -> tuple[Select, dict[str, Any]]:
        shape, parameters = _page_query(slices, filters)
        return _page_statement(shape), parameters

    middle = sum(counts.values()) // 2
    first = plan(counts, middle)[0]
    # A key inside the middle page's first unit, as the previous page's last row would be.
    key = SortKey(first.unit.code, "CRS0250", "m", "SCH")
    return database.engine.dialect, [
        (f"page by start={middle:,} (OFFSET inside the first unit only)", *page(plan(counts, middle), Filters())),
        ("page following a next link (keyset seek, no OFFSET)", *page(plan(counts, middle, key), Filters())),
        ("first page with SDATE/EDATE (a year)", *page(plan(date_counts, 1), dates)),
        ("per-unit counts (once per data version)", _count_statement(Filters()), {}),
        ("per-unit counts with SDATE/EDATE (once per data version and range)", _count_statement(dates), {}),
    ]


def explain(url: str) -> None:
    """Print each statement's plan."""
    dialect, items = statements(url)
    if url.startswith("sqlite"):
        connection: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
    else:
        connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))
    for title, statement, parameters in items:
        compiled = statement.compile(dialect=dialect)
        values = compiled.construct_params(parameters)
        print(f"\n### {title}\n\n```")
        if url.startswith("sqlite"):
            positional = [values[name] for name in compiled.positiontup or ()]
            positional = [value.isoformat() if hasattr(value, "isoformat") else value for value in positional]
            for row in connection.execute("EXPLAIN QUERY PLAN " + str(compiled), positional):
                print(f"{'  ' * (row[1] and 1)}{row[3]}")
        else:
            for (line,) in connection.execute("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), values or None):
                print(line)
        print("```")
    connection.close()


def main() -> None:
    """Explain on each requested database."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    size = QUICK_ENROLMENTS if args.quick else FULL_ENROLMENTS
    if args.database in ("sqlite", "both"):
        print("## SQLite")
        explain(f"sqlite:///{ROOT / 'bench' / 'data' / f'app-{size}-s1.sqlite'}")
    if args.database in ("postgresql", "both"):
        base = databases.POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        print("\n## PostgreSQL")
        explain(f"{base}/southrock_bench_{size}_s1")


if __name__ == "__main__":
    main()
