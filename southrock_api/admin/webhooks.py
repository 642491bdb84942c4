"""Webhook subscriptions: add, list, remove, rotate the secret, enable and disable (docs/architecture.md, "Webhooks").

A subscription belongs to an API token: it is told of what that token sees, narrowed by its own
ORGCODES, and its receiver pulls the changes with that token. Its signing secret (`whsec_…`) is
shown once, when it is made or rotated; every step is in the token audit log, never with it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from southrock_api.admin.tokens import TokenError, as_utc, audit, find_token, mask, token_state
from southrock_api.data.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
    WorkUnit,
)
from southrock_api.integrations.transport import LOOPBACK_HOSTS

SUBSCRIPTION_PREFIX = "wh_"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# How long, after a rotation, the old secret still signs (both signatures are sent meanwhile).
DEFAULT_OVERLAP = dt.timedelta(hours=24)


class WebhookError(Exception):
    """A subscription administration request that cannot be carried out; nothing was changed."""


@dataclass(frozen=True)
class IssuedSecret:
    """A subscription's signing secret as shown once."""

    public_id: str
    secret: str


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def check_url(url: str) -> str:
    """The receiver's URL if deliveries may go there: https, or plain http to this host only (for testing)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise WebhookError(f"{url!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookError(f"{url!r} is not an https:// URL")
    if parts.username or parts.password:
        raise WebhookError("the URL must not hold credentials: deliveries are signed instead")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        # Events carry a feed token: they cross networks encrypted only.
        raise WebhookError(f"{url!r} is plain http: use https:// (http is allowed for localhost only)")
    return url


def _orgcodes(session: Session, orgcodes: list[str] | None) -> str | None:
    if not orgcodes:
        return None
    codes = sorted(set(orgcodes))
    known = set(session.scalars(select(WorkUnit.code).where(WorkUnit.code.in_(codes))))
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise WebhookError("no work unit with code " + ", ".join(repr(code) for code in unknown))
    return json.dumps(codes)


def add_subscription(
    session: Session, url: str, token_key: str, orgcodes: list[str] | None = None, description: str | None = None
) -> IssuedSecret:
    """Subscribe URL to the changes the token sees; return the signing secret, shown only now."""
    check_url(url)
    try:
        token = find_token(session, token_key)
    except TokenError as error:
        raise WebhookError(str(error)) from None
    state = token_state(token)
    if state != "active":
        raise WebhookError(f"token {mask(token.public_key)} is {state}: its subscriptions could never be delivered")
    secret = new_secret()
    subscription = WebhookSubscription(
        public_id=SUBSCRIPTION_PREFIX + secrets.token_urlsafe(12),
        url=url,
        api_token_id=token.id,
        orgcodes=_orgcodes(session, orgcodes),
        description=description,
        secret=secret,
        enabled=True,
        created_at=_now(),
        consecutive_failures=0,
    )
    session.add(subscription)
    audit(session, "webhook-add", subscription.public_id, f"{shown_url(url)} for token {mask(token.public_key)}")
    session.flush()
    return IssuedSecret(subscription.public_id, secret)


def find_subscription(session: Session, public_id: str) -> WebhookSubscription:
    """The subscription with this id (`wh_…`)."""
    subscription = session.scalar(select(WebhookSubscription).where(WebhookSubscription.public_id == public_id))
    if subscription is None:
        raise WebhookError(f"no webhook subscription {public_id!r} (see `southrock webhooks list`)")
    return subscription


def remove_subscription(session: Session, public_id: str) -> None:
    """Delete a subscription, its events and their delivery log."""
    subscription = find_subscription(session, public_id)
    events = select(WebhookEvent.id).where(WebhookEvent.subscription_id == subscription.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.event_id.in_(events)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(events)))
    session.execute(delete(WebhookEvent).where(WebhookEvent.subscription_id == subscription.id))
    session.delete(subscription)
    audit(session, "webhook-remove", public_id, shown_url(subscription.url))


def rotate_secret(session: Session, public_id: str, overlap: dt.timedelta = DEFAULT_OVERLAP) -> IssuedSecret:
    """Give a subscription a new secret; the old one signs too until the overlap ends."""
    subscription = find_subscription(session, public_id)
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_expires_at = _now() + overlap
    subscription.secret = new_secret()
    audit(session, "webhook-rotate", public_id, f"old secret signs too until {subscription.previous_secret_expires_at:%Y-%m-%d %H:%M} UTC")
    return IssuedSecret(public_id, subscription.secret)


def set_enabled(session: Session, public_id: str, enabled: bool, reason: str | None = None) -> WebhookSubscription:
    """Enable a subscription (its pending deliveries resume) or disable it (they wait)."""
    subscription = find_subscription(session, public_id)
    if enabled:
        state = token_state(subscription.api_token)
        if state != "active":
            raise WebhookError(f"its token {mask(subscription.api_token.public_key)} is {state}: add a subscription for an active token")
        subscription.enabled, subscription.disabled_reason, subscription.consecutive_failures = True, None, 0
        audit(session, "webhook-enable", public_id)
    else:
        subscription.enabled, subscription.disabled_reason = False, reason or "disabled by an administrator"
        audit(session, "webhook-disable", public_id, subscription.disabled_reason)
    return subscription


def shown_url(url: str) -> str:
    """A URL as listed: without its query, which may hold a receiver's own key."""
    parts = urlsplit(url)
    return parts._replace(query="…" if parts.query else "", fragment="").geturl()


def list_subscriptions(session: Session) -> list[dict[str, object]]:
    """Describe every subscription, never with its secret."""
    rows: list[dict[str, object]] = []
    now = _now()
    for subscription in session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)):
        rotating = subscription.previous_secret_expires_at
        rows.append(
            {
                "id": subscription.public_id,
                "url": shown_url(subscription.url),
                "token": mask(subscription.api_token.public_key),
                "orgcodes": json.loads(subscription.orgcodes) if subscription.orgcodes else None,
                "state": "enabled" if subscription.enabled else "disabled",
                "disabled_reason": subscription.disabled_reason,
                "secret_overlap_until": as_utc(rotating).isoformat(timespec="seconds")
                if rotating and as_utc(rotating) > now
                else None,
                "created": as_utc(subscription.created_at).isoformat(timespec="seconds"),
                "description": subscription.description,
            }
        )
    return rows
