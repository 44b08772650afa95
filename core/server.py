"""The gunicorn worker of production: gevent's, with gunicorn's own refusals in the API's JSON error shape.

gunicorn answers some requests before the app sees them: a request line over
`limit_request_line` (414), a header block over its limits (431), a request it
cannot parse (400), an unsupported transfer coding (501). Its stock answer is
an HTML page that quotes part of the request. Here it is the API's
`{"error": {"code", "message"}}` instead, with a fixed message that quotes
nothing the client sent, and `Token-Vault-Error` (whatever the path: gunicorn
has not routed the request, and the answer is the vault's, never Trackunit's).
gunicorn still decides the status and closes the connection afterwards (it
cannot know where the broken request ends).
This module is imported by the master too (gunicorn loads the worker class
there): it imports nothing that the worker's monkey-patching must come before.
"""

from __future__ import annotations

import json
import socket
from http import HTTPStatus

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

# gunicorn's statuses -> the API's error codes and messages (never the client's bytes).
_CODES: dict[int, tuple[str, str]] = {
    400: ("invalid_request", "The HTTP request could not be parsed."),
    403: ("forbidden", "The request was refused."),
    414: ("uri_too_long", "The request line is too long (at most 4094 bytes)."),
    417: ("expectation_failed", "The Expect header is not supported."),
    431: ("headers_too_large", "The request headers are too large or too many."),
    500: ("internal_error", "The service failed to handle the request."),
    501: ("not_implemented", "The request's transfer coding is not supported."),
}


def error_bytes(status: int) -> bytes:
    """The whole HTTP response gunicorn sends for a refusal of `status`."""
    code, message = _CODES.get(status, _CODES[500] if status >= 500 else _CODES[400])
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "Cache-Control: no-store\r\n"
        f"Token-Vault-Error: {code}\r\n"  # the vault's own answer, never Trackunit's (as on proxy paths)
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for `gunicorn.util.write_error`; `reason` and `mesg` (which quote the request) are not sent."""
    util.write_nonblock(sock, error_bytes(int(status_int)))


class JsonErrorGeventWorker(GeventWorker):
    """gunicorn's gevent worker; its error pages are JSON.

    gunicorn's `handle_error` picks the status, logs the request and then calls the module
    function `gunicorn.util.write_error`: replacing that function in the worker process
    (after the fork, never in the master) changes what is written and nothing else.
    """

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
