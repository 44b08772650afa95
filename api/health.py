"""Liveness (`/healthz`: the process serves) and readiness (`/readyz`: Redis answers)."""
from __future__ import annotations

from flask import Blueprint, current_app

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    current_app.extensions["vault"].accounts.ping()  # StoreUnavailable → 503
    return {"status": "ready"}
