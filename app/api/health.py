"""Operational probes: liveness (process up) and readiness (database and cache reachable)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app
from sqlalchemy import text

from app.api._http import json_response
from app.extensions import db

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


def _database_ok() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except Exception as exc:  # any failure means "not reachable"; the detail goes to the log
        log.warning("readyz: database check failed: %s", type(exc).__name__)
        db.session.rollback()
        return False


def _cache_ok() -> bool:
    return bool(current_app.extensions["readwire.cache"].store.ping())


@bp.get("/readyz")
def readyz() -> Response:
    """503 when the database is down (nothing new can be served); 200 "degraded" when only
    the cache is, since reads then fall back to the database."""
    checks = {"database": "ok" if _database_ok() else "down", "cache": "ok" if _cache_ok() else "down"}
    if checks["database"] != "ok":
        response = json_response({"status": "unavailable", "checks": checks}, status=503)
        response.headers["Retry-After"] = "5"
    else:
        status = "ok" if checks["cache"] == "ok" else "degraded"
        response = json_response({"status": status, "checks": checks})
    response.headers["Cache-Control"] = "no-store"
    return response
