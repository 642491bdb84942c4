"""Liveness and readiness probes, outside /api: unauthenticated and never rate limited."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from southrock_api.data import migrations
from southrock_api.data.db import begin_snapshot, failure_reason, get_session
from southrock_api.api.ratelimit import get_limiter

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Return 200 while the process can answer at all."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Return 200 when the database answers with a schema this release serves and the rate-limit store answers, else 503."""
    database, migrated = _database_ok()
    checks = {"database": database, "schema": migrated, "ratelimit_store": _limiter_ok()}
    response = jsonify({"status": "ok" if all(checks.values()) else "unavailable", "checks": checks})
    response.status_code = 200 if all(checks.values()) else 503
    return response


class _Problem:
    """The reason this worker last logged for not being ready: each reason is logged once, not per probe."""

    last: str | None = None

    @classmethod
    def report(cls, reason: str | None) -> None:
        """Log a new reason (and nothing while it stays the same); None: ready again."""
        if reason is not None and reason != cls.last:
            log.warning("not ready: %s", reason)
        cls.last = reason


def _database_ok() -> tuple[bool, bool]:
    """Whether the database answers, and whether its schema is one this release serves."""
    try:
        session = get_session()
        # Read-only like an API request's, so it too ends with COMMIT: a probe's ROLLBACK would
        # drop the prepared statements of the pooled connection it borrowed (see db.close_session).
        begin_snapshot(session)
        connection = session.connection()
        connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        _Problem.report(f"the database does not answer: {failure_reason(error)}")
        return False, False
    try:
        migrated = migrations.serves(connection)
    except SQLAlchemyError as error:
        _Problem.report(f"the schema cannot be read: {failure_reason(error)}")
        return True, False
    _Problem.report(None if migrated else str(migrations.NotMigrated()))
    return True, migrated


def _limiter_ok() -> bool:
    try:
        return bool(get_limiter().storage.check())
    except Exception:  # noqa: BLE001  (any failure of the store means not ready)
        return False


def init_app(app: Flask) -> None:
    """Register the probes."""
    app.register_blueprint(bp)
