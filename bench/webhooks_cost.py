"""Webhooks' cost: an import of about 10,000 changes with and without 100 subscriptions, and delivering their events.

    python bench/webhooks_cost.py [--enrolments 16000] [--subscriptions 100] [--seed 1]

Two fresh SQLite databases each import the demo data's unit trees, then (one of them after
100 subscriptions for the root business unit's token, each to a loopback receiver) the whole demo
data set, whose completed enrolments are the import's changes. Then `southrock webhooks deliver`'s
pass sends the events to a real HTTP receiver on 127.0.0.1 that answers 204.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from southrock_api import create_app  # noqa: E402
from southrock_api.admin import tokens, webhooks  # noqa: E402
from southrock_api.data import migrations  # noqa: E402
from southrock_api.data.db import get_database  # noqa: E402
from southrock_api.data.demo import write_demo_csvs  # noqa: E402
from southrock_api.data.importer import import_directory  # noqa: E402
from southrock_api.data.models import BusinessUnit, WebhookEvent  # noqa: E402
from southrock_api.integrations.webhooks import deliver_due  # noqa: E402
from tests.fake_receiver import Receiver  # noqa: E402

UNIT_FILES = ("business_units.csv", "work_units.csv")


def _site(database: Path, units: Path, subscriptions: int, url: str) -> Flask:
    """A migrated database holding the unit trees and `subscriptions` subscriptions; return its app."""
    app = create_app({"DATABASE_URL": f"sqlite:///{database}", "RATELIMIT_STORAGE_URI": "memory://"})
    migrations.upgrade(app)
    factory = get_database(app).session_factory
    with factory() as session:
        import_directory(session, units)
        root = session.scalar(select(BusinessUnit.code).where(BusinessUnit.parent_id.is_(None)).order_by(BusinessUnit.code))
        issued = tokens.create_token(session, business_unit=root)
        for _ in range(subscriptions):
            webhooks.add_subscription(session, url, issued.public_key)
        session.commit()
    return app


def _timed_import(app: Flask, data: Path) -> tuple[float, int, int]:
    """Import data; return (seconds, changes logged, events written)."""
    factory = get_database(app).session_factory
    with factory() as session:
        started = time.perf_counter()
        report = import_directory(session, data)
        seconds = time.perf_counter() - started
        events = int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)
    return seconds, report.changes, events


def main() -> None:
    """Time the two imports and the delivery, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enrolments", type=int, default=16_000)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Receiver(default=204) as receiver:
        work = Path(tmp)
        data, units = work / "csv", work / "units"
        write_demo_csvs(data, enrolments=args.enrolments, seed=args.seed)
        units.mkdir()
        for name in UNIT_FILES:
            shutil.copy(data / name, units / name)
        bare = _site(work / "bare.sqlite", units, 0, receiver.url)
        subscribed = _site(work / "subscribed.sqlite", units, args.subscriptions, receiver.url)
        bare_seconds, changes, _ = _timed_import(bare, data)
        with_seconds, _, events = _timed_import(subscribed, data)
        started = time.perf_counter()
        tally = deliver_due(get_database(subscribed).session_factory, 10.0, [5.0])
        deliver_seconds = time.perf_counter() - started
    print(f"{changes:,} changes in one import; {args.subscriptions} subscriptions of the root business unit's token")
    print(f"{'step':<40} {'wall s':>7}")
    print(f"{'import, no subscriptions':<40} {bare_seconds:>7.2f}")
    print(f"{'import, writing ' + str(events) + ' events':<40} {with_seconds:>7.2f}")
    print(f"{'events written (import difference)':<40} {with_seconds - bare_seconds:>7.2f}")
    print(f"{'delivering them (' + tally.line() + ')':<40} {deliver_seconds:>7.2f}")
    print(f"loopback receiver got {len(receiver.posts())} POSTs")


if __name__ == "__main__":
    main()
