"""One structured log line per request, and the request id (`X-Request-ID`) that ties lines together."""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

log = logging.getLogger("itv.request")
audit_log = logging.getLogger("itv.audit")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def audit(event: str, **fields: object) -> None:
    """An audit line: who (API key name), what, for which account. Never a secret."""
    audit_log.info(event, extra={"event": event, "request_id": g.get("request_id"),
                                 "key_name": g.get("api_key_name"), **fields})


def _start() -> None:
    g.started = time.monotonic()
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    log.info(
        "%s %s %s", request.method, request.url_rule.rule if request.url_rule else "(no route)", response.status_code,
        extra={
            "request_id": g.get("request_id"),
            "method": request.method,
            "route": request.url_rule.rule if request.url_rule else None,
            "account_id": (request.view_args or {}).get("account_id"),
            "status": response.status_code,
            "duration_ms": round((time.monotonic() - g.get("started", time.monotonic())) * 1000, 2),
            "key_name": g.get("api_key_name"),
        },
    )
    return response


def init_app(app: Flask) -> None:
    # First in line, so even a refused request has an id and a line.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
