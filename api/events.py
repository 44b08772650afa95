"""`GET /v1/events`: the account lifecycle events in order, for backends without a public webhook endpoint."""

from __future__ import annotations

import json

from flask import Blueprint, request

from api.context import services
from api.errors import error_response
from core import tunables
from core.errors import EventsExpired, InvalidRequest
from events.shape import event_json
from vault.outbox import parse_id

bp = Blueprint("events", __name__, url_prefix="/v1/events")


@bp.errorhandler(EventsExpired)
def _expired(exc: EventsExpired):
    response = error_response(exc)
    body = response.get_json()
    # Where a reader goes on (as `after`): the newest id a trim removed; every event retained after it is there.
    body["error"]["oldest"] = exc.oldest
    response.set_data(json.dumps(body))
    return response


def _whole(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


@bp.get("")
def list_events():
    after = request.args.get("after") or None
    if after is not None and parse_id(after) is None:
        raise InvalidRequest("after must be an event id this service returned (<milliseconds>-<sequence>).")
    limit = _whole("limit", tunables.FEED_DEFAULT_LIMIT, 1, tunables.FEED_MAX_LIMIT)
    wait = _whole("wait", 0, 0, tunables.FEED_MAX_WAIT)
    events, following = services().events.feed.page(after, limit, wait)
    return {"events": [event_json(e) for e in events], "next": following}
