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
            log_audit(*pending, extra={"request_id": g.get("request_id"), "key_name": g.get("api_key_name")})
        g.audit = (event, fields)
    else:
        log_audit(event, fields, extra={"key_name": g.get("api_key_name") if has_app_context() else None})


def log_audit(event: str, fields: dict, *, extra: dict) -> None:
    """An audit line: the event's `fields` beside `extra` (a request's line fields, from `line_fields`)."""
    audit_log.info(event, extra={**extra, "event": event, **fields})


def request_id(incoming: str) -> str:
    """The request's id: the caller's `X-Request-ID` when it is a sane one, else a new one."""
    return incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def line_fields(
    request_id: str | None,
    method: str,
    route: str | None,
    account_id: str | None,
    status: int,
    started: float,
    key_name: str | None,
) -> dict:
    """The fields of a request's one line (both the Flask path and `api.hotpath` log through here)."""
    return {
        "request_id": request_id,
        "method": method,
        "route": route,
        "account_id": account_id,
        "status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 2),
        "key_name": key_name,
    }


def _start() -> None:
    g.started = time.monotonic()
    g.request_id = request_id(request.headers.get("X-Request-ID", ""))


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    route = request.url_rule.rule if request.url_rule else None
    fields = line_fields(
        g.get("request_id"),
        request.method,
        route,
        (request.view_args or {}).get("account_id"),
        response.status_code,
        g.get("started", time.monotonic()),
        g.get("api_key_name"),
    )
    pending = g.get("audit")
    if pending is not None:
        log_audit(*pending, extra=fields)
    else:
        log_line(fields)
    return response


def log_line(fields: dict) -> None:
    """A request's line when no audit event took its place (`fields` from `line_fields`)."""
    log.info("%s %s %s", fields["method"], fields["route"] or "(no route)", fields["status"], extra=fields)


def init_app(app: Flask) -> None:
    # First in line, so even a refused request has an id and a line.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
