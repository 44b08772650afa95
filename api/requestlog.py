"""One structured log line per request, and the request id (`X-Request-ID`) that ties lines together.

A request that hands out a token or changes credentials logs that line on the
audit logger (`itv.audit`) with the event's fields: one line, not two, on the
hot path. Outside a request (the CLI) an audit event is logged at once.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, has_app_context, has_request_context, request

log = logging.getLogger("itv.request")
audit_log = logging.getLogger("itv.audit")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def audit(event: str, **fields: object) -> None:
    """Record who (API key name) did what, for which account. Never a secret."""
    if has_request_context():
        pending = g.get("audit")
        if pending is not None:  # a second event in one request: the first gets its own line
            _log_audit(*pending, extra={"request_id": g.get("request_id"), "key_name": g.get("api_key_name")})
        g.audit = (event, fields)
    else:
        _log_audit(event, fields, extra={"key_name": g.get("api_key_name") if has_app_context() else None})


def _log_audit(event: str, fields: dict, *, extra: dict) -> None:
    audit_log.info(event, extra={**extra, "event": event, **fields})


def _start() -> None:
    g.started = time.monotonic()
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    route = request.url_rule.rule if request.url_rule else None
    fields = {
        "request_id": g.get("request_id"),
        "method": request.method,
        "route": route,
        "account_id": (request.view_args or {}).get("account_id"),
        "status": response.status_code,
        "duration_ms": round((time.monotonic() - g.get("started", time.monotonic())) * 1000, 2),
        "key_name": g.get("api_key_name"),
    }
    pending = g.get("audit")
    if pending is not None:
        _log_audit(*pending, extra=fields)
    else:
        log.info("%s %s %s", request.method, route or "(no route)", response.status_code, extra=fields)
    return response


def init_app(app: Flask) -> None:
    # First in line, so even a refused request has an id and a line.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
