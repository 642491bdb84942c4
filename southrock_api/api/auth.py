"""HTTP Basic `public:private` (spec §6) → the token and its unit, or E1010 / E1020."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import logging
import re
import threading
from dataclasses import dataclass, replace

from sqlalchemy import or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from southrock_api.data.db import Versions
from southrock_api.api.errors import AUTHENTICATION_FAILED, BAD_TOKEN_TYPE, ApiError
from southrock_api.data.models import ApiToken, BusinessUnit, WorkUnit
from southrock_api.admin.tokens import PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX, as_utc, hash_private_key

log = logging.getLogger(__name__)

REALM = "Southrock LMS API"
# Longer credentials than any key we issue are refused before any work is done.
MAX_CREDENTIALS_LENGTH = 512
MAX_KEY_LENGTH = 64
# Issued public keys are URL-safe Base64; anything else (NUL, which PostgreSQL refuses in text,
# other control characters, non-ASCII) cannot name a token and never reaches the database.
_PUBLIC_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Hashed once so that an unknown public key costs the same comparison as a wrong private key.
_DUMMY_HASH = hash_private_key("no such token")
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """An authenticated token and the unit whose enrolments it may read."""

    token_id: int
    public_key: str
    unit_type: str  # "business_unit" or "work_unit"
    unit_id: int
    unit_code: str
    unit_name: str
    last_used_at: dt.datetime | None


def _unauthorized(message: str = "Authentication failed") -> ApiError:
    # WWW-Authenticate makes a browser prompt for the keys (spec §6).
    return ApiError(
        AUTHENTICATION_FAILED,
        message,
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


def parse_basic(header: str | None) -> tuple[str, str]:
    """Split an Authorization header into (public key, private key)."""
    if not header or not header.strip():
        raise _unauthorized("Authentication failed: no Authorization header")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise ApiError(BAD_TOKEN_TYPE, "Bad API token type: use the Basic scheme (spec §6)")
    credentials = credentials.strip()
    if len(credentials) > MAX_CREDENTIALS_LENGTH:
        raise _unauthorized()
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _unauthorized("Authentication failed: credentials are not valid Base64") from None
    public_key, colon, private_key = decoded.partition(":")
    if not colon or not public_key or not private_key:
        raise _unauthorized("Authentication failed: expected public_key:private_key")
    if len(public_key) > MAX_KEY_LENGTH or len(private_key) > MAX_KEY_LENGTH:
        raise _unauthorized()
    if public_key.startswith(PRIVATE_KEY_PREFIX):
        # Keys swapped: say so (the answer names only the prefixes, never a key).
        raise _unauthorized(
            f"Authentication failed: the user name is the public key ({PUBLIC_KEY_PREFIX}…), "
            f"the password the private key ({PRIVATE_KEY_PREFIX}…)"
        )
    if not _PUBLIC_KEY.fullmatch(public_key):
        raise _unauthorized()
    return public_key, private_key


@dataclass(frozen=True)
class Credential:
    """What authentication needs of a token: its hash, its state and whom it speaks for."""

    private_key_hash: str
    revoked: bool
    expires_at: dt.datetime | None
    principal: Principal | None  # None when the token's unit no longer exists


def _load(session: Session, public_key: str) -> Credential | None:
    row = session.execute(
        select(ApiToken, BusinessUnit, WorkUnit)
        .outerjoin(BusinessUnit, BusinessUnit.id == ApiToken.business_unit_id)
        .outerjoin(WorkUnit, WorkUnit.id == ApiToken.work_unit_id)
        .where(ApiToken.public_key == public_key)
    ).first()
    if row is None:
        return None
    token, bu, wu = row
    principal = None
    if token.business_unit_id is not None and bu is not None:
        principal = Principal(token.id, public_key, "business_unit", bu.id, bu.code, bu.name, token.last_used_at)
    elif token.work_unit_id is not None and wu is not None:
        principal = Principal(token.id, public_key, "work_unit", wu.id, wu.code, wu.name, token.last_used_at)
    return Credential(token.private_key_hash, token.revoked_at is not None, token.expires_at, principal)


class TokenCache:
    """Tokens by public key, good while the data and tokens versions a request reads are unchanged.

    Every request reads both versions (one statement it needs anyway), and every token
    change bumps the tokens version in its own transaction, so a revoked or rotated key
    fails on the next request in every process; only the per-request token query is saved.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._versions: Versions | None = None
        self._entries: dict[str, Credential] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, versions: Versions, public_key: str) -> Credential | None:
        """Return the token's credential as of these versions, or None if there is no such token."""
        with self._lock:
            if self._versions != versions:
                self._versions, self._entries = versions, {}
            found = self._entries.get(public_key)
        if found is None:
            # Unknown keys are never cached, so guessing them cannot fill the cache.
            found = _load(session, public_key)
            if found is not None:
                with self._lock:
                    if self._versions == versions and len(self._entries) < self._size:
                        self._entries[public_key] = found
        return found

    def used(self, versions: Versions, public_key: str, at: dt.datetime) -> None:
        """Remember that the token's last-used time is being written, so it is written once."""
        with self._lock:
            found = self._entries.get(public_key)
            if self._versions == versions and found is not None and found.principal is not None:
                principal = replace(found.principal, last_used_at=at)
                self._entries[public_key] = replace(found, principal=principal)


def authenticate(
    session: Session, credentials: tuple[str, str], now: dt.datetime, versions: Versions, cache: TokenCache
) -> Principal:
    """Return the principal for parse_basic's (public key, private key), or raise E1010/E1020."""
    public_key, private_key = credentials
    credential = cache.get(session, versions, public_key)
    expected = credential.private_key_hash if credential is not None else _DUMMY_HASH
    matches = hmac.compare_digest(hash_private_key(private_key), expected)
    if credential is None or not matches or credential.revoked:
        raise _unauthorized()
    if credential.expires_at is not None and as_utc(credential.expires_at) <= now:
        raise _unauthorized("Authentication failed: the API token has expired")
    if credential.principal is None:
        raise ApiError(BAD_TOKEN_TYPE, "Bad API token type: the token has no business or work unit")
    return credential.principal


def needs_last_used(principal: Principal, now: dt.datetime) -> bool:
    """Whether the token's last-used time is stale enough to be written again."""
    last = principal.last_used_at
    return last is None or now - as_utc(last) >= LAST_USED_RESOLUTION


def record_last_used(session: Session, token_id: int, now: dt.datetime) -> None:
    """Write the token's last-used time; never waits on a busy database."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    # The connection's own busy wait (SOUTHROCK_DATABASE_TIMEOUT), restored after the write.
    busy = int(session.execute(text("PRAGMA busy_timeout")).scalar_one()) if sqlite else 0
    try:
        if sqlite:
            # An import may hold the write lock for a while; last-used can wait a minute.
            session.execute(text("PRAGMA busy_timeout=50"))
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id)
            .where(
                or_(
                    ApiToken.last_used_at.is_(None),
                    ApiToken.last_used_at < now - LAST_USED_RESOLUTION,
                )
            )
            .values(last_used_at=now)
        )
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        log.info("last-used time not recorded: database busy")
    finally:
        if sqlite:
            session.execute(text(f"PRAGMA busy_timeout={busy}"))
