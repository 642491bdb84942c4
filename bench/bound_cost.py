"""What bounding every PostgreSQL wait costs: the same statement on a plain and a bounded connection.

    python bench/bound_cost.py [postgresql+psycopg://…]

Runs `SELECT 1` (one wait, like each of the four a page request makes on PostgreSQL) on one
connection, in alternating blocks as a plain psycopg connection and as the application's
BoundedConnection under a request's deadline, and prints the fastest block of each and the median
difference of neighbouring blocks (what the bound adds), per wait and per request.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from southrock_api.data.deadlines import connection_class, deadline  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
BLOCKS = 100
PER_BLOCK = 200
WAITS_PER_REQUEST = 4  # pre-ping, BEGIN + versions, page, COMMIT


def _block(connection: psycopg.Connection[Any]) -> float:
    started = time.perf_counter()
    for _ in range(PER_BLOCK):
        connection.execute("SELECT 1")
    return (time.perf_counter() - started) / PER_BLOCK


def measure(url: str = DEFAULT_URL) -> str:
    """One line: the fastest block's µs per wait, plain and bounded, and the bound's cost per request."""
    libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
    bounded_class = connection_class(10.0)
    # One connection, its class switched between blocks: two connections' server processes may sit
    # on different cores, which alone makes one of them several times slower than the other.
    with bounded_class.connect(libpq, autocommit=True) as opened:
        connection: psycopg.Connection[Any] = opened
        plain_times, bounded_times = [], []
        for _ in range(BLOCKS):
            connection.__class__ = psycopg.Connection
            plain_times.append(_block(connection))
            connection.__class__ = bounded_class
            with deadline(10.0, "a request's deadline"):
                bounded_times.append(_block(connection))
    plain_us = min(plain_times) * 1e6
    bounded_us = min(bounded_times) * 1e6
    # Neighbouring blocks share the machine's state of the moment: their difference is the cost.
    cost = statistics.median(b - p for p, b in zip(plain_times, bounded_times)) * 1e6
    return (
        f"Bounded waits (`bench/bound_cost.py`, fastest of {BLOCKS} blocks on one connection): `SELECT 1` "
        f"{plain_us:.1f} µs as a plain psycopg connection, {bounded_us:.1f} µs as the application's bounded "
        f"one under a deadline; the median difference of neighbouring blocks: {cost:+.1f} µs a wait, "
        f"{cost * WAITS_PER_REQUEST:+.1f} µs a page request ({WAITS_PER_REQUEST} waits)."
    )


if __name__ == "__main__":
    print(measure(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL))
