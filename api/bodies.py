"""Reading a request body: at most a limit, however it is framed, refused clearly when too long or broken."""

from __future__ import annotations

from typing import Any

from flask import request
from gunicorn.http.errors import ParseException

from core import jsontext
from core.errors import InvalidRequest, PayloadTooLarge


def read_body(limit: int) -> bytes:
    """The whole body, or PayloadTooLarge (413) if it is longer than `limit` bytes.

    A declared Content-Length over the limit is refused before a byte is read. A chunked body
    declares nothing: werkzeug stops reading it at `max_content_length` without saying that
    more followed, so the cap is one byte past the limit, and a body that reaches it is refused
    rather than passed on cut short. A chunked framing that gunicorn cannot parse, or a body
    that ends before its declared length, is 400 `invalid_request` (not a 500).
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge()
    request.max_content_length = limit + 1
    try:
        data = request.get_data(cache=False)
    except (ParseException, OSError):
        raise InvalidRequest("The request body is incomplete or its chunked framing is broken.") from None
    if len(data) > limit:
        raise PayloadTooLarge()
    return data


def parse_json(raw: bytes) -> Any:
    """The body's JSON value, or InvalidRequest (400) naming what is wrong with it."""
    try:
        return jsontext.loads(raw)
    except jsontext.InvalidJson as exc:
        raise InvalidRequest(f"The body is not usable JSON ({exc}).") from None
