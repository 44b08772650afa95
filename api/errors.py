"""The one JSON error shape: `{"error": {"code", "message"}}`, never HTML, never a traceback."""

from __future__ import annotations

import logging
import traceback

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from core.errors import PayloadTooLarge, VaultError

log = logging.getLogger(__name__)


def error_response(exc: VaultError) -> Response:
    response = jsonify({"error": {"code": exc.code, "message": exc.message}})
    response.vault_error_code = exc.code  # type: ignore[attr-defined]  # tells the vault's own errors apart (proxy)
    response.status_code = exc.status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response


def _http_error(exc: HTTPException) -> Response:
    """Werkzeug's own errors (404, 405, 413, ...) in our shape."""
    if exc.code == 413:
        return error_response(PayloadTooLarge())
    error = VaultError(exc.description)
    error.status = exc.code or 500
    error.code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(error)
    if exc.code == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def _unexpected(exc: Exception) -> Response:
    log_unexpected(exc)
    return error_response(VaultError())


def log_unexpected(exc: BaseException) -> None:
    """An error no handler expected: its type and where, never its text or its causes' (they could quote a value)."""
    where = "".join(traceback.format_tb(exc.__traceback__)[-3:])
    log.error("unhandled %s\n%s", type(exc).__name__, where)


def init_app(app: Flask) -> None:
    app.register_error_handler(VaultError, error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
