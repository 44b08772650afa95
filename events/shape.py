"""What an event looks like outside: `{"id", "type", "timestamp", "data"}`, rendered from its outbox entry."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from vault.outbox import StoredEvent

# Data fields stored as epoch seconds and shown as ISO 8601 UTC, and those shown as whole numbers.
_TIMES = ("installed_at", "updated_at")
_NUMBERS = ("retry_after",)
# The fields an event may carry: anything else in an entry is never shown (an allow-list, so a field
# added to a script by mistake, say a credential, cannot leave the vault).
_DATA = ("account_id", "iris_app_id", "installed_at", "updated_at", "scope", "retry_after", "via")


def iso_seconds(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(event: StoredEvent) -> str:
    """The event's time (its stream id's milliseconds) in ISO 8601 UTC with milliseconds."""
    moment = dt.datetime.fromtimestamp(event.milliseconds / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{event.milliseconds % 1000:03d}Z"


def data(event: StoredEvent) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name in _DATA:
        value = event.fields.get(name)
        if value is None:
            continue
        if name in _TIMES:
            shown[name] = iso_seconds(int(value))
        elif name in _NUMBERS:
            shown[name] = int(value)
        else:
            shown[name] = value
    return shown


def payload(event: StoredEvent) -> dict[str, Any]:
    """The Standard Webhooks payload: type, timestamp, data (the id travels in the `webhook-id` header)."""
    return {"type": event.fields.get("type", ""), "timestamp": timestamp(event), "data": data(event)}


def event_json(event: StoredEvent) -> dict[str, Any]:
    """An event as the feed and the CLI show it: its id, then the payload."""
    return {"id": event.id, **payload(event)}


def body(event: StoredEvent) -> bytes:
    """The exact bytes POSTed to a webhook endpoint (and signed)."""
    return json.dumps(payload(event), separators=(",", ":")).encode()
