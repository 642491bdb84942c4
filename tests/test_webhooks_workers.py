"""Several delivery workers at once on PostgreSQL: every event is sent, none twice (SELECT … FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from southrock_api.admin import webhooks
from southrock_api.data.db import get_database
from southrock_api.data.models import WebhookAttempt, WebhookDelivery, WebhookEvent, WebhookSubscription
from southrock_api.data.webhooks import new_event_id
from southrock_api.integrations.webhooks import Claimed, Outcome, deliver_due, record
from tests import databases, factories, servers
from tests.fake_receiver import Receiver

EVENTS = 40
WORKERS = 3


@pytest.mark.postgres
def test_workers_on_postgresql_never_send_one_attempt_twice(tmp_path: Path) -> None:
    with databases.postgres_database(tmp_path) as url, Receiver(default=204, delay=0.01) as receiver:
        app = servers.migrated_app(url)
        try:
            factory = get_database(app).session_factory
            now = dt.datetime.now(dt.timezone.utc)
            with factory() as session:
                token = factories.token(session, factories.business_unit(session))
                issued = webhooks.add_subscription(session, receiver.url, token.public_key)
                subscription_id = session.scalar(
                    select(WebhookSubscription.id).where(WebhookSubscription.public_id == issued.public_id)
                )
                assert subscription_id is not None
                for _ in range(EVENTS):
                    event = WebhookEvent(
                        public_id=new_event_id(), subscription_id=subscription_id, created_at=now,
                        payload='{"type":"enrolments.changed"}', first_position=1, last_position=1,
                    )
                    session.add(event)
                    session.flush()
                    session.add(WebhookDelivery(event_id=event.id, state="pending", attempts=0, next_attempt_at=now))
                session.commit()
            start = threading.Barrier(WORKERS)

            def work() -> None:
                start.wait()
                deliver_due(factory, 5.0, [60.0])

            workers = [threading.Thread(target=work) for _ in range(WORKERS)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(30)
            sent = Counter(post.headers["webhook-id"] for post in receiver.posts())
            assert len(sent) == EVENTS and set(sent.values()) == {1}
            with factory() as session:
                assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == EVENTS
                assert set(session.scalars(select(WebhookDelivery.state))) == {"succeeded"}
        finally:
            servers.dispose(app)


def test_the_backoff_grows_with_jitter_and_ends_in_a_dead_event(session: Session) -> None:
    token = factories.token(session, factories.business_unit(session))
    issued = webhooks.add_subscription(session, "https://receiver.example/hooks", token.public_key)
    subscription = session.scalars(select(WebhookSubscription).where(WebhookSubscription.public_id == issued.public_id)).one()
    now = dt.datetime.now(dt.timezone.utc)
    event = WebhookEvent(
        public_id=new_event_id(), subscription_id=subscription.id, created_at=now, payload="{}", first_position=1, last_position=1
    )
    session.add(event)
    session.flush()
    session.add(WebhookDelivery(event_id=event.id, state="pending", attempts=0, next_attempt_at=now))
    session.commit()
    failure = Outcome(500, "answered 500", 3)
    schedule = [10.0, 100.0]
    pauses = []
    for attempts, lowest in ((0, True), (1, False)):
        claimed = Claimed(event.id, event.public_id, "{}", subscription.url, ("whsec_x",), attempts, subscription.id, "active")
        assert record(session, claimed, failure, now, schedule, (lambda: 0.0) if lowest else (lambda: 1.0)) == "pending"
        session.expire_all()
        delivery = session.get_one(WebhookDelivery, event.id)
        pauses.append((webhooks.as_utc(delivery.next_attempt_at) - now).total_seconds())
    # ±25 % around each pause of the schedule.
    assert pauses == pytest.approx([7.5, 125.0])
    claimed = Claimed(event.id, event.public_id, "{}", subscription.url, ("whsec_x",), 2, subscription.id, "active")
    assert record(session, claimed, failure, now, schedule) == "dead"
    session.expire_all()
    assert not session.get_one(WebhookSubscription, subscription.id).enabled
    assert session.get_one(WebhookSubscription, subscription.id).consecutive_failures == 3


def test_the_worker_service_delivers_until_sigterm(tmp_path: Path) -> None:
    """`southrock webhooks deliver --loop` as systemd runs it: it sends what comes due and stops cleanly on SIGTERM."""
    with databases.fresh_database("sqlite", tmp_path) as url, Receiver(default=204) as receiver:
        app = servers.migrated_app(url)
        factory = get_database(app).session_factory
        with factory() as session:
            token = factories.token(session, factories.business_unit(session))
            webhooks.add_subscription(session, receiver.url, token.public_key)
            session.commit()
        env = {**os.environ, "SOUTHROCK_DATABASE_URL": url, "SOUTHROCK_INSTANCE_PATH": str(tmp_path / "instance")}
        process = subprocess.Popen(
            [sys.executable, "-c", "from southrock_api.admin.cli import main; main()", "webhooks", "deliver", "--loop", "--interval", "0.1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            with factory() as session:
                subscription_id = session.scalar(select(WebhookSubscription.id))
                assert subscription_id is not None
                now = dt.datetime.now(dt.timezone.utc)
                event = WebhookEvent(
                    public_id=new_event_id(), subscription_id=subscription_id, created_at=now, payload="{}",
                    first_position=1, last_position=1,
                )
                session.add(event)
                session.flush()
                session.add(WebhookDelivery(event_id=event.id, state="pending", attempts=0, next_attempt_at=now))
                session.commit()
            deadline = time.monotonic() + 30
            while not receiver.posts():
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the worker sent nothing"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
            servers.dispose(app)
    assert process.returncode == 0, err
    assert b"delivered 1, to retry 0, dead 0" in out
