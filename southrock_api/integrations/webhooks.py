"""Webhook delivery: claim due events, sign them (Standard Webhooks), send, and record each attempt; replay and the log.

At least once: an event is claimed (PostgreSQL: SELECT … FOR UPDATE SKIP LOCKED, so workers on
several hosts never take the same one; SQLite: one worker) for long enough to send it once, and
only a recorded answer settles it. A 2xx is success; 410 disables the subscription; any other
answer, a redirect (never followed), a timeout or a failed connection is retried after the
backoff schedule (with jitter), and after its last pause the event is dead and the subscription
disabled with a logged warning. See docs/architecture.md, "Webhooks".
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from southrock_api.admin.tokens import as_utc, token_state
from southrock_api.data.models import WebhookAttempt, WebhookDelivery, WebhookEvent, WebhookSubscription

log = logging.getLogger(__name__)

# Due deliveries one worker claims at a time.
CLAIM_BATCH = 20
# A claim outlasts the attempt's timeout by this much; a worker that died mid-attempt loses it then.
CLAIM_MARGIN = dt.timedelta(seconds=30)
# ±25 %: workers retrying after one outage do not all come back at the same instant.
JITTER = 0.25
GONE = 410
USER_AGENT = "southrock-webhooks/1"


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds: what to send and where."""

    event_id: int
    public_id: str
    payload: str
    url: str
    secrets: tuple[str, ...]
    attempts: int
    subscription_id: int
    token_state: str


@dataclass(frozen=True)
class Outcome:
    """One attempt's answer: a status (None if none came), an error to log, and how long it took."""

    status: int | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        """Whether the receiver took it (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def claim(session: Session, now: dt.datetime, lease: dt.timedelta, limit: int = CLAIM_BATCH) -> list[Claimed]:
    """Take up to `limit` due deliveries of enabled subscriptions for this worker, and commit the claim."""
    query = (
        select(WebhookDelivery, WebhookEvent, WebhookSubscription)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookEvent.subscription_id)
        .where(
            WebhookDelivery.state == "pending",
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now),
            WebhookSubscription.enabled.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.event_id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Rows another worker is claiming are passed over, not waited for: never sent twice.
        query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
    claimed = []
    for delivery, event, subscription in session.execute(query):
        delivery.locked_until = now + lease
        signing = [subscription.secret]
        overlap = subscription.previous_secret_expires_at
        if subscription.previous_secret and overlap is not None and as_utc(overlap) > now:
            signing.append(subscription.previous_secret)
        claimed.append(
            Claimed(
                event.id, event.public_id, event.payload, subscription.url, tuple(signing), delivery.attempts,
                subscription.id, token_state(subscription.api_token),
            )
        )
    session.commit()
    return claimed


def signature_headers(claimed: Claimed, at: dt.datetime) -> dict[str, str]:
    """The Standard Webhooks headers: id, timestamp and one `v1,` signature per secret in use."""
    signatures = " ".join(Webhook(secret).sign(claimed.public_id, at, claimed.payload) for secret in claimed.secrets)
    return {
        "webhook-id": claimed.public_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }


def send(http: requests.Session, claimed: Claimed, timeout: float) -> Outcome:
    """POST the event once; redirects are answers, not followed."""
    started = time.monotonic()
    try:
        response = http.post(
            claimed.url,
            data=claimed.payload.encode(),
            headers=signature_headers(claimed, _now()),
            timeout=timeout,
            allow_redirects=False,
        )
        response.close()
    except requests.Timeout:
        return Outcome(None, f"no answer within {timeout:g} s", _elapsed(started))
    except requests.RequestException as error:
        return Outcome(None, f"connection failed: {type(error).__name__}", _elapsed(started))
    problem = None
    if 300 <= response.status_code < 400:
        problem = "redirect not followed: deliveries go to the subscribed URL only"
    elif not 200 <= response.status_code < 300:
        problem = f"answered {response.status_code}"
    return Outcome(response.status_code, problem, _elapsed(started))


def _elapsed(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def record(
    session: Session,
    claimed: Claimed,
    outcome: Outcome,
    now: dt.datetime,
    backoff: Sequence[float],
    random_source: Callable[[], float] = random.random,
) -> str:
    """Log the attempt and settle the delivery: succeeded, pending (next try set) or dead; return its state."""
    attempt = claimed.attempts + 1
    session.add(
        WebhookAttempt(
            event_id=claimed.event_id, attempt=attempt, at=now, status=outcome.status,
            duration_ms=outcome.duration_ms, error=outcome.error,
        )
    )
    subscription = session.get_one(WebhookSubscription, claimed.subscription_id)
    changes: dict[str, Any] = {
        "attempts": attempt, "locked_until": None, "last_status": outcome.status,
        "last_error": outcome.error, "last_duration_ms": outcome.duration_ms,
    }
    if outcome.succeeded:
        changes["state"] = "succeeded"
        subscription.consecutive_failures = 0
    else:
        subscription.consecutive_failures += 1
        if outcome.status == GONE:
            # The receiver says it will never want these again (Standard Webhooks, and Canvas's practice).
            changes["state"] = "dead"
            _disable(subscription, f"the receiver answered 410 Gone at {now:%Y-%m-%d %H:%M} UTC")
        elif attempt > len(backoff):
            changes["state"] = "dead"
            _disable(
                subscription,
                f"{attempt} attempts failed over {sum(backoff) / 3600:.1f} h, the last at {now:%Y-%m-%d %H:%M} UTC: {outcome.error}",
            )
        else:
            pause = backoff[attempt - 1] * (1 - JITTER + 2 * JITTER * random_source())
            changes["state"], changes["next_attempt_at"] = "pending", now + dt.timedelta(seconds=pause)
    session.execute(update(WebhookDelivery).where(WebhookDelivery.event_id == claimed.event_id).values(**changes))
    session.commit()
    return str(changes["state"])


def _disable(subscription: WebhookSubscription, reason: str) -> None:
    if subscription.enabled:
        log.warning("webhook subscription %s disabled: %s", subscription.public_id, reason)
    subscription.enabled, subscription.disabled_reason = False, reason


@dataclass
class Tally:
    """What a worker's pass did."""

    succeeded: int = 0
    retrying: int = 0
    dead: int = 0

    def line(self) -> str:
        """One line for the command's output."""
        return f"delivered {self.succeeded}, to retry {self.retrying}, dead {self.dead}"


def deliver_due(
    session_factory: Callable[[], Session],
    timeout: float,
    backoff: Sequence[float],
    http: requests.Session | None = None,
    stop: threading.Event | None = None,
) -> Tally:
    """Deliver every event due now, one batch at a time, until none is due or `stop` is set; return what happened."""
    tally = Tally()
    own = http is None
    client = http or requests.Session()
    lease = dt.timedelta(seconds=timeout) + CLAIM_MARGIN
    try:
        while stop is None or not stop.is_set():
            with session_factory() as session:
                batch = claim(session, _now(), lease)
            if not batch:
                return tally
            for claimed in batch:
                with session_factory() as session:
                    if claimed.token_state != "active":
                        # The subscription sees what its token sees: nothing, now (README, "Webhooks").
                        _disable(session.get_one(WebhookSubscription, claimed.subscription_id), f"its API token is {claimed.token_state}")
                        session.execute(
                            update(WebhookDelivery).where(WebhookDelivery.event_id == claimed.event_id).values(locked_until=None)
                        )
                        session.commit()
                        continue
                    outcome = send(client, claimed, timeout)
                    state = record(session, claimed, outcome, _now(), backoff)
                tally.succeeded += state == "succeeded"
                tally.retrying += state == "pending"
                tally.dead += state == "dead"
        return tally
    finally:
        if own:
            client.close()


def replay(session: Session, event_id: str | None = None, since: dt.datetime | None = None) -> list[str]:
    """Make events due again now, with their ids unchanged; return the ids."""
    query = select(WebhookDelivery, WebhookEvent.public_id).join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
    if event_id is not None:
        query = query.where(WebhookEvent.public_id == event_id)
    if since is not None:
        query = query.where(WebhookEvent.created_at >= since)
    now = _now()
    replayed = []
    for delivery, public_id in session.execute(query.order_by(WebhookEvent.id)):
        delivery.state, delivery.attempts, delivery.next_attempt_at, delivery.locked_until = "pending", 0, now, None
        replayed.append(public_id)
    return replayed


def delivery_log(session: Session, failed_only: bool = False) -> list[dict[str, object]]:
    """Every attempt, newest last: its event, subscription, status, duration, error, and the delivery's next try."""
    query = (
        select(WebhookAttempt, WebhookEvent.public_id, WebhookSubscription.public_id, WebhookDelivery)
        .join(WebhookEvent, WebhookEvent.id == WebhookAttempt.event_id)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookEvent.subscription_id)
        .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id)
        .order_by(WebhookAttempt.id)
    )
    if failed_only:
        query = query.where(or_(WebhookAttempt.status.is_(None), WebhookAttempt.status < 200, WebhookAttempt.status >= 300))
    rows: list[dict[str, object]] = []
    for attempt, event_id, subscription_id, delivery in session.execute(query):
        rows.append(
            {
                "at": as_utc(attempt.at).isoformat(timespec="seconds"),
                "subscription": subscription_id,
                "event": event_id,
                "attempt": attempt.attempt,
                "status": attempt.status,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
                "delivery": delivery.state,
                "next_try": as_utc(delivery.next_attempt_at).isoformat(timespec="seconds")
                if delivery.state == "pending"
                else None,
            }
        )
    return rows
