"""Liveness (`/healthz`: the process serves) and readiness (`/readyz`: Redis answers, safely configured)."""

from __future__ import annotations

from flask import Blueprint

from api.context import services

bp = Blueprint("health", __name__)

# Under allkeys-* Redis may evict credential records when memory runs out; volatile-* and
# noeviction only ever drop keys with a TTL (cached tokens) or refuse writes.
DANGEROUS_POLICY_PREFIX = "allkeys-"


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    health = services().health
    health.ping()  # StoreUnavailable -> 503
    body: dict = {"status": "ready"}
    policy = health.eviction_policy()
    if policy and policy.startswith(DANGEROUS_POLICY_PREFIX):
        body["warnings"] = [f"Redis maxmemory-policy is {policy}: it may evict credential records. Use noeviction."]
    return body
