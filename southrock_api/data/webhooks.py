"""The webhook outbox: at the end of an import, in its transaction, one event per subscription whose scope it changed.

An event is thin (docs/architecture.md, "Webhooks"): the import's time, how many rows its
subscription's token (narrowed by the subscription's ORGCODES) would see upserted and deleted,
and a changes token to pull exactly those changes. The counts follow the change feed's rules
(report.changes) on this import's log rows: an UPSERT where the enrolment is COMPLETED and its
unit path after the import is visible, a DELETE where it is not but its path before or after was.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import Connection, insert, or_, select

from southrock_api.data.changes import UnitPathInfo, seal_key
from southrock_api.data.feed_tokens import ChangesToken, scope_of
from southrock_api.data.models import (
    COMPLETED,
    ApiToken,
    BusinessUnit,
    Enrolment,
    EnrolmentChange,
    UnitPath,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
    WorkUnit,
)

EVENT_TYPE = "enrolments.changed"
EVENT_ID_PREFIX = "evt_"
CHANGES_PATH = "/api/v1/enrolments/changes"


@dataclass(frozen=True)
class Subscriber:
    """An enabled subscription whose token is active: its id, scope ("B:code"/"W:code") and ORGCODES."""

    id: int
    scope: str
    orgcodes: frozenset[str] | None


def active_subscribers(connection: Connection, now: dt.datetime) -> list[Subscriber]:
    """The enabled subscriptions whose API token is neither revoked nor expired."""
    rows = connection.execute(
        select(WebhookSubscription.id, WebhookSubscription.orgcodes, BusinessUnit.code, WorkUnit.code)
        .join(ApiToken, ApiToken.id == WebhookSubscription.api_token_id)
        .outerjoin(BusinessUnit, BusinessUnit.id == ApiToken.business_unit_id)
        .outerjoin(WorkUnit, WorkUnit.id == ApiToken.work_unit_id)
        .where(
            WebhookSubscription.enabled.is_(True),
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
        .order_by(WebhookSubscription.id)
    )
    subscribers = []
    for sub_id, orgcodes, bu_code, wu_code in rows:
        scope = scope_of("business_unit", bu_code) if bu_code is not None else scope_of("work_unit", wu_code)
        codes = frozenset(json.loads(orgcodes)) if orgcodes else None
        subscribers.append(Subscriber(sub_id, scope, codes))
    return subscribers


def _changed_rows(connection: Connection, before: int, last: int) -> Counter[tuple[int | None, int | None, bool]]:
    """(path before, path after, completed now) → how many of the log rows in (before, last] have them."""
    rows = connection.execute(
        select(EnrolmentChange.units_before, EnrolmentChange.units_after, Enrolment.status)
        .outerjoin(Enrolment, Enrolment.sch_id == EnrolmentChange.sch_id)
        .where(EnrolmentChange.position > before, EnrolmentChange.position <= last)
    )
    return Counter((path_before, path_after, status == COMPLETED) for path_before, path_after, status in rows)


def count_changes(
    groups: Counter[tuple[int | None, int | None, bool]], paths: dict[int, UnitPathInfo], subscriber: Subscriber
) -> tuple[int, int]:
    """(upserted, deleted): what the subscriber's feed would report for these log rows."""
    upserted = deleted = 0

    def visible(path_id: int | None) -> bool:
        return path_id is not None and paths[path_id].visible_to(subscriber.scope, subscriber.orgcodes)

    for (path_before, path_after, completed), count in groups.items():
        if completed and visible(path_after):
            upserted += count
        elif visible(path_before) or visible(path_after):
            deleted += count
    return upserted, deleted


def write_events(connection: Connection, before: int, last: int, now: dt.datetime) -> int:
    """Write, in the caller's transaction, the events of the import that took positions (before, last]; return how many."""
    if last <= before:
        return 0
    subscribers = active_subscribers(connection, now)
    if not subscribers:
        return 0
    groups = _changed_rows(connection, before, last)
    path_ids = {path for path_before, path_after, _ in groups for path in (path_before, path_after) if path is not None}
    paths = {
        path_id: UnitPathInfo.parse(text)
        for path_id, text in connection.execute(select(UnitPath.id, UnitPath.units).where(UnitPath.id.in_(path_ids)))
    }
    key = seal_key(connection)
    written = 0
    for subscriber in subscribers:
        upserted, deleted = count_changes(groups, paths, subscriber)
        if not upserted and not deleted:
            continue
        orgcodes = sorted(subscriber.orgcodes) if subscriber.orgcodes is not None else None
        since = ChangesToken.start(subscriber.scope, orgcodes, None, None, before).encode(key)
        payload = {
            "type": EVENT_TYPE,
            "timestamp": _iso(now),
            "data": {
                "import_at": _iso(now),
                "upserted": upserted,
                "deleted": deleted,
                "since": since,
                "changes_url": f"{CHANGES_PATH}?since={quote(since, safe='')}",
            },
        }
        event_id = connection.execute(
            insert(WebhookEvent)
            .values(
                public_id=new_event_id(),
                subscription_id=subscriber.id,
                created_at=now,
                payload=json.dumps(payload, separators=(",", ":")),
                first_position=before + 1,
                last_position=last,
            )
            .returning(WebhookEvent.id)
        ).scalar_one()
        connection.execute(insert(WebhookDelivery).values(event_id=event_id, state="pending", attempts=0, next_attempt_at=now))
        written += 1
    return written


def new_event_id() -> str:
    """A new event's id: unique, and the webhook-id of every attempt to deliver it."""
    return EVENT_ID_PREFIX + secrets.token_urlsafe(18)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
