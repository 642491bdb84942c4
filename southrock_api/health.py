"""Liveness and readiness probes, outside /api: unauthenticated and never rate limited."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from southrock_api.db import get_session
from southrock_api.ratelimit import get_limiter

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Return 200 while the process can answer at all."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Return 200 when the database and the rate-limit store both answer, else 503."""
    checks = {"database": _database_ok(), "ratelimit_store": _limiter_ok()}
    response = jsonify({"status": "ok" if all(checks.values()) else "unavailable", "checks": checks})
    response.status_code = 200 if all(checks.values()) else 503
    return response


def _database_ok() -> bool:
    try:
        get_session().execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


def _limiter_ok() -> bool:
    try:
        return bool(get_limiter().storage.check())
    except Exception:  # noqa: BLE001  (any failure of the store means not ready)
        return False


def init_app(app: Flask) -> None:
    """Register the probes."""
    app.register_blueprint(bp)
