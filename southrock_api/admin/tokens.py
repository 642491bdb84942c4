"""Create, list, revoke and rotate API tokens (spec §7); only hashes of private keys are kept."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import pwd
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from southrock_api.data.db import bump_tokens_version
from southrock_api.data.models import ApiToken, BusinessUnit, TokenAudit, WorkUnit

# Recognisable prefixes let secret scanners find a leaked private key.
PUBLIC_KEY_PREFIX = "srpk_"
PRIVATE_KEY_PREFIX = "srsk_"
# Characters a masked key must show on each side of its ellipsis, as `tokens list` prints it: with
# fewer, one typo could revoke or rotate some other token (the most privileged, say).
MASK_SHOWS = 4
KEY_BYTES = 32


class TokenError(Exception):
    """A token administration request that cannot be carried out."""


@dataclass(frozen=True)
class IssuedToken:
    """A token as shown once, at creation or rotation: the only time the private key exists."""

    public_key: str
    private_key: str
    unit_type: str
    unit_code: str
    description: str | None
    expires_at: dt.datetime | None

    @property
    def authorization(self) -> str:
        """The full Authorization header value (spec §6)."""
        return authorization_header(self.public_key, self.private_key)


def authorization_header(public_key: str, private_key: str) -> str:
    """Return `Basic base64(public:private)`."""
    raw = f"{public_key}:{private_key}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def hash_private_key(private_key: str) -> str:
    """Hash a private key; keys are 256-bit random, so a fast hash is not guessable."""
    return hashlib.sha256(private_key.encode("utf-8")).hexdigest()


def mask(public_key: str) -> str:
    """Show a public key as `abcd…wxyz`."""
    body = public_key.removeprefix(PUBLIC_KEY_PREFIX)
    return f"{PUBLIC_KEY_PREFIX}{body[:4]}…{body[-4:]}"


def _new_public_key() -> str:
    return PUBLIC_KEY_PREFIX + secrets.token_urlsafe(18)


def _new_private_key() -> str:
    return PRIVATE_KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _actor() -> str:
    # The account the process runs as, not $LOGNAME or $USER (which anyone can set); through sudo,
    # the invoking user too, as sudo records it.
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        name = f"uid {os.geteuid()}"
    invoker = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {invoker})" if invoker and invoker != name else name


def audit(session: Session, action: str, public_key: str, detail: str | None = None) -> None:
    """Log an administration step (a token's or a webhook subscription's, by its public id), never with a secret."""
    # Every change to a token is audited here, so here every server's token cache learns of it.
    bump_tokens_version(session)
    session.add(
        TokenAudit(at=_now(), actor=_actor(), action=action, public_key=public_key, detail=detail)
    )


def create_token(
    session: Session,
    *,
    business_unit: str | None = None,
    work_unit: str | None = None,
    description: str | None = None,
    expires_at: dt.datetime | None = None,
) -> IssuedToken:
    """Create a token for exactly one business unit or work unit."""
    if (business_unit is None) == (work_unit is None):
        raise TokenError("give exactly one of a business unit or a work unit")
    token = ApiToken(description=description, created_at=_now(), expires_at=expires_at)
    if business_unit is not None:
        bu = session.scalar(select(BusinessUnit).where(BusinessUnit.code == business_unit))
        if bu is None:
            raise TokenError(f"no business unit with code {business_unit!r}")
        token.business_unit_id, unit_type, unit_code = bu.id, "business_unit", bu.code
    else:
        wu = session.scalar(select(WorkUnit).where(WorkUnit.code == work_unit))
        if wu is None:
            raise TokenError(f"no work unit with code {work_unit!r}")
        token.work_unit_id, unit_type, unit_code = wu.id, "work_unit", wu.code
    private_key = _new_private_key()
    token.public_key = _new_public_key()
    token.private_key_hash = hash_private_key(private_key)
    session.add(token)
    audit(session, "create", token.public_key, f"{unit_type} {unit_code}")
    session.flush()
    return IssuedToken(
        token.public_key, private_key, unit_type, unit_code, description, expires_at
    )


def find_token(session: Session, public_key: str) -> ApiToken:
    """Find a token by its public key, or by the masked form `tokens list` shows (… or ...)."""
    if PRIVATE_KEY_PREFIX in public_key:
        # Never repeated back: it would land in the terminal's scrollback and the shell's history.
        raise TokenError(
            f"that holds a private key ({PRIVATE_KEY_PREFIX}…): give the public key ({PUBLIC_KEY_PREFIX}…). "
            "A private key that has been pasted somewhere should be rotated."
        )
    # Typed by hand, the ellipsis `tokens list` prints often becomes three dots.
    public_key = public_key.replace("...", "…")
    if "…" in public_key:
        head, _, tail = public_key.partition("…")
        if not head.startswith(PUBLIC_KEY_PREFIX) or min(len(head) - len(PUBLIC_KEY_PREFIX), len(tail)) < MASK_SHOWS:
            raise TokenError(
                f"{public_key!r} is too little of a key: give the whole public key or the masked form "
                f"`tokens list` shows ({mask(PUBLIC_KEY_PREFIX + 'abcdefghwxyz')})"
            )
        query = select(ApiToken).where(
            ApiToken.public_key.startswith(head, autoescape=True),
            ApiToken.public_key.endswith(tail, autoescape=True),
        )
    else:
        query = select(ApiToken).where(ApiToken.public_key == public_key)
    matches = session.scalars(query.limit(2)).all()
    if len(matches) != 1:
        problem = "no token" if not matches else "more than one token"
        raise TokenError(f"{problem} matches public key {public_key!r}")
    return matches[0]


def revoke_token(session: Session, public_key: str) -> ApiToken:
    """Revoke a token; the next request made with it fails (E1010)."""
    token = find_token(session, public_key)
    if token.revoked_at is None:
        token.revoked_at = _now()
        audit(session, "revoke", token.public_key)
    return token


def rotate_token(session: Session, public_key: str) -> IssuedToken:
    """Give a token a new private key; the old one stops working at once."""
    token = find_token(session, public_key)
    if token.revoked_at is not None:
        raise TokenError(f"token {mask(token.public_key)} is revoked")
    private_key = _new_private_key()
    token.private_key_hash = hash_private_key(private_key)
    audit(session, "rotate", token.public_key)
    unit_type, unit_code = unit_of(token)
    expires_at = as_utc(token.expires_at) if token.expires_at else None
    return IssuedToken(token.public_key, private_key, unit_type, unit_code, token.description, expires_at)


def unit_of(token: ApiToken) -> tuple[str, str]:
    """Return ("business_unit" | "work_unit", code) for a token."""
    if token.business_unit is not None:
        return "business_unit", token.business_unit.code
    assert token.work_unit is not None
    return "work_unit", token.work_unit.code


def token_state(token: ApiToken) -> str:
    """Return active, revoked or expired."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and as_utc(token.expires_at) <= _now():
        return "expired"
    return "active"


def as_utc(value: dt.datetime) -> dt.datetime:
    """Return a stored time as an aware UTC datetime (SQLite hands back naive ones; all are UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def list_tokens(session: Session) -> list[dict[str, str | None]]:
    """Describe every token without its secret."""
    rows = []
    for token in session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)):
        unit_type, unit_code = unit_of(token)
        rows.append(
            {
                "public_key": mask(token.public_key),
                "unit_type": unit_type,
                "unit": unit_code,
                "description": token.description,
                "created": _iso(token.created_at),
                "expires": _iso(token.expires_at),
                "last_used": _iso(token.last_used_at),
                "state": token_state(token),
            }
        )
    return rows


def audit_log(session: Session) -> list[dict[str, str | None]]:
    """Return the token administration log, oldest first."""
    return [
        {
            "at": _iso(event.at),
            "actor": event.actor,
            "action": event.action,
            # A webhook subscription's public id (`wh_…`) is no credential: shown whole.
            "public_key": mask(event.public_key) if event.public_key.startswith(PUBLIC_KEY_PREFIX) else event.public_key,
            "detail": event.detail,
        }
        for event in session.scalars(select(TokenAudit).order_by(TokenAudit.id))
    ]


def _iso(value: dt.datetime | None) -> str | None:
    return as_utc(value).isoformat(timespec="seconds") if value else None
