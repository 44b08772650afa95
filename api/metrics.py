"""`GET /metrics`: Prometheus text format; behind `Authorization: Bearer $METRICS_TOKEN` when that is set."""
from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Response, current_app, request

import metrics
from errors import Unauthorized

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    services = current_app.extensions["vault"]
    expected = services.config.metrics_token
    if expected:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(),
                                   hashlib.sha256(expected.encode()).digest()):
            raise Unauthorized("A valid metrics token is required (Authorization: Bearer <METRICS_TOKEN>).")
    body, content_type = metrics.render(services.accounts)
    return Response(body, content_type=content_type)
