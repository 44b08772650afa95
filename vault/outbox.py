"""The outbox: the Redis Stream of account lifecycle events, appended by the scripts, read by the feed and delivery.

Every script that changes an account appends its event in the same atomic step
(`emit` in vault/lua/lifecycle.lua), trimmed by time (`EVENT_RETENTION`, as a
MINID) and by count (`EVENT_MAX_COUNT`). An event's id is its stream entry id
(`<milliseconds>-<sequence>`), so every reader and every retry names it alike.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis

from vault.layout import KeySpace
from vault.store import store_errors

DEFAULT_RETENTION = 7 * 24 * 3600
DEFAULT_MAX_COUNT = 100_000
EVENT_ID = re.compile(r"^(\d{1,19})-(\d{1,19})$")  # below 2**64, as Redis takes them


def parse_id(text: str) -> tuple[int, int] | None:
    """(milliseconds, sequence) of a stream id as this service hands them out; None for anything else."""
    match = EVENT_ID.fullmatch(text)
    return (int(match[1]), int(match[2])) if match else None


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """One outbox entry as stored: its id and its flat fields (type, account_id, iris_app_id, data fields)."""

    id: str
    fields: dict[str, str]

    @property
    def milliseconds(self) -> int:
        return int(self.id.split("-", 1)[0])


def stored(entries: Any) -> list[StoredEvent]:
    """XRANGE / XREAD entries `[(id, {field: value})]` as StoredEvents (an entry trimmed meanwhile is skipped)."""
    events = []
    for entry_id, fields in entries or ():
        if fields is None:  # XAUTOCLAIM's answer for an entry trimmed since it was read
            continue
        events.append(
            StoredEvent(
                text(entry_id), {text(name): text(value) for name, value in cast(Mapping[Any, Any], fields).items()}
            )
        )
    return events


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here are not created with decode_responses)."""
    return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What the feed and the CLI need to know about the stream: its length, ends, and whether it was trimmed."""

    length: int
    first_id: str | None
    last_id: str | None
    added: int  # entries ever appended (more than `length` once trimming removed some)
    last_generated_id: str

    @property
    def trimmed(self) -> bool:
        return self.added > self.length


class Outbox:
    """The retention every appending script is given, and reads of the stream."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySpace,
        *,
        retention: int = DEFAULT_RETENTION,
        max_count: int = DEFAULT_MAX_COUNT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.retention = retention
        self.max_count = max_count
        self.clock = clock

    def script_args(self, account_id: str) -> dict[str, Any]:
        """The keys and arguments every appending script takes: the stream, its counts and its trimming."""
        group = self.keys.group_of(account_id)
        return {
            "events": self.keys.events(group),
            "event_counts": self.keys.event_counts(group),
            "retain_after": f"{max(0, int((self.clock() - self.retention) * 1000))}-0",
            "retain_max": self.max_count,
        }

    def after(self, after: str | None, limit: int) -> list[StoredEvent]:
        """Up to `limit` events after the id `after` (from the oldest when None), in order."""
        with store_errors():
            return stored(self.redis.xrange(self.keys.events, "-" if after is None else "(" + after, "+", count=limit))

    def since(self, milliseconds: int, limit: int) -> list[StoredEvent]:
        """Up to `limit` events from a time on (epoch milliseconds), in order."""
        with store_errors():
            return stored(self.redis.xrange(self.keys.events, f"{milliseconds}-0", "+", count=limit))

    def last(self, limit: int) -> list[StoredEvent]:
        """The newest `limit` events, oldest first."""
        with store_errors():
            return stored(self.redis.xrevrange(self.keys.events, "+", "-", count=limit))[::-1]

    def newest_id(self) -> str:
        """The id of the newest event, "0-0" when there is none."""
        with store_errors():
            newest = self.redis.xrevrange(self.keys.events, "+", "-", count=1)
        return text(newest[0][0] or b"0-0") if newest else "0-0"

    def wait_after(self, cursor: str, block_ms: int) -> str | None:
        """Block up to `block_ms` for events after `cursor`; the newest id read, or None if none came.

        It holds one pooled connection for the block (the watcher's: events.watch).
        """
        with store_errors():
            answer: Any = self.redis.xread({self.keys.events: cursor}, count=1000, block=block_ms)
        newest = None
        for _, entries in answer or ():
            if entries:
                newest = text(entries[-1][0])
        return newest

    def get(self, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
        """The events of these ids that are still retained, by id."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for event_id in event_ids:
                pipe.xrange(self.keys.events, event_id, event_id)
            found = pipe.execute()
        return {event.id: event for rows in found for event in stored(rows)}

    def info(self) -> StreamInfo:
        """Length, first and last ids, and how many were ever appended (Redis 7's `entries-added`)."""
        with store_errors():
            try:
                raw: dict[str, Any] = self.redis.xinfo_stream(self.keys.events)
            except redis.exceptions.ResponseError:  # no such key: nothing appended yet
                return StreamInfo(0, None, None, 0, "0-0")
        first, last = raw.get("first-entry"), raw.get("last-entry")
        return StreamInfo(
            length=int(raw.get("length", 0)),
            first_id=text(first[0]) if first else None,
            last_id=text(last[0]) if last else None,
            added=int(raw.get("entries-added", 0)),
            last_generated_id=text(raw.get("last-generated-id", b"0-0")),
        )

    def counts(self) -> dict[str, int]:
        """Events ever appended, by type (the scripts count them atomically with appending)."""
        with store_errors():
            raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.event_counts))
        return {text(name): int(value) for name, value in raw.items()}
