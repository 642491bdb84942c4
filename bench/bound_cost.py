"""What bounding every PostgreSQL wait costs: the same statement on a plain and a bounded connection.

    python bench/bound_cost.py [postgresql+psycopg://…]

Runs `SELECT 1` (one wait, like each of the four a page request makes on PostgreSQL) on a
plain psycopg connection and on the application's BoundedConnection under a request's
deadline, in alternating blocks, and prints the fastest block of each (on a shared machine the
fastest is the one least disturbed) and their difference per wait and per request.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from southrock_api.data.deadlines import connection_class, deadline  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
BLOCKS = 60
PER_BLOCK = 200
WAITS_PER_REQUEST = 4  # pre-ping, BEGIN + versions, page, COMMIT


def _block(connection: psycopg.Connection) -> float:
    started = time.perf_counter()
    for _ in range(PER_BLOCK):
        connection.execute("SELECT 1")
    return (time.perf_counter() - started) / PER_BLOCK


def measure(url: str = DEFAULT_URL) -> str:
    """One line: the fastest block's µs per wait, plain and bounded, and the bound's cost per request."""
    libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
    bounded_class = connection_class(10.0)
    with psycopg.connect(libpq, autocommit=True) as plain, bounded_class.connect(libpq, autocommit=True) as bounded:
        plain_times, bounded_times = [], []
        for _ in range(BLOCKS):
            plain_times.append(_block(plain))
            with deadline(10.0, "a request's deadline"):
                bounded_times.append(_block(bounded))
    plain_us = min(plain_times) * 1e6
    bounded_us = min(bounded_times) * 1e6
    cost = bounded_us - plain_us
    return (
        f"Bounded waits (`bench/bound_cost.py`, fastest of {BLOCKS} blocks): `SELECT 1` {plain_us:.1f} µs on a plain psycopg connection, "
        f"{bounded_us:.1f} µs on the application's bounded one under a deadline: {cost:+.1f} µs a wait, "
        f"{cost * WAITS_PER_REQUEST:+.1f} µs a page request ({WAITS_PER_REQUEST} waits)."
    )


if __name__ == "__main__":
    print(measure(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL))
