"""`GET /metrics`: Prometheus text format; behind `Authorization: Bearer $METRICS_TOKEN` when that is set."""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.context import services
from core import metrics
from core.errors import Unauthorized

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    svc = services()
    if svc.metrics_token is not None:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or svc.metrics_token.name_for(presented.strip()) is None:
            raise Unauthorized("A valid metrics token is required (Authorization: Bearer <METRICS_TOKEN>).")
    body, content_type = metrics.render(svc.accounts, svc.events.outbox)
    return Response(body, content_type=content_type)
