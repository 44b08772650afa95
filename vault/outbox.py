"""The outbox: one Redis Stream of account lifecycle events per slot group, read as one ordered stream.

Every script that changes an account appends its event to the stream of the account's group
(`keys.events(group)`) in the same atomic step (`emit` in vault/lua/lifecycle.lua), trimmed exactly
by time (`EVENT_RETENTION`, as a MINID) and by the group's share of the count cap (`EVENT_MAX_COUNT`
/ GROUPS), keeping the newest id a trim removed (`keys.event_trimmed(group)`). An event's id is its
stream entry id (`<milliseconds>-<sequence>`), so every reader and every retry names it alike. The
script makes the id itself: the server's time (never below the group's newest id) and a sequence
that is the group's number, then GROUPS more for each further event of that millisecond, so
`sequence % GROUPS` is the event's group, ids of different groups never collide, and all ids are
totally ordered by (milliseconds, sequence). That order is commit order within a group, not across
groups within a millisecond: the feed's horizon (events.feed) covers that, with the server time
`Outbox.window` reads along with the events. Reads merge the groups in id order: on a single Redis
(or Sentinel's master) in one MULTI, a snapshot; on a Redis Cluster, where the groups live on several
masters, in one pipeline that is not a snapshot.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import redis
import redis.cluster

from core import tunables
from vault.layout import GROUPS, KeySpace
from vault.store import is_cluster, store_errors

DEFAULT_RETENTION = 7 * 24 * 3600
DEFAULT_MAX_COUNT = 100_000
EVENT_ID = re.compile(r"^(\d{1,19})-(\d{1,19})$")  # below 2**64, as Redis takes them


def parse_id(text: str) -> tuple[int, int] | None:
    """(milliseconds, sequence) of a stream id as this service hands them out; None for anything else."""
    match = EVENT_ID.fullmatch(text)
    return (int(match[1]), int(match[2])) if match else None


def order_of(event_id: str | None) -> tuple[int, int]:
    """An id as a comparable pair; None (nothing yet) or anything unparsable sorts first."""
    return parse_id(event_id or "0-0") or (0, 0)


def group_of_id(event_id: str) -> int | None:
    """The slot group whose script wrote this event id (its sequence modulo GROUPS); None if not an id."""
    parsed = parse_id(event_id)
    return parsed[1] % GROUPS if parsed else None


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """One outbox entry as stored: its id and its flat fields (type, account_id, iris_app_id, data fields)."""

    id: str
    fields: dict[str, str]

    @property
    def milliseconds(self) -> int:
        return int(self.id.split("-", 1)[0])

    @property
    def order(self) -> tuple[int, int]:
        return order_of(self.id)


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


def merged(lists: Iterable[list[StoredEvent]]) -> list[StoredEvent]:
    """Several groups' events (each list in id order) as one list in id order."""
    return list(heapq.merge(*lists, key=lambda event: event.order))


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here are not created with decode_responses)."""
    return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What the feed and the CLI need to know about the outbox: its length, ends, and whether it was trimmed.

    Of all groups together (`Outbox.info`), with each group's own in `parts` (in group order);
    a group's own has no parts.
    """

    length: int
    first_id: str | None
    last_id: str | None
    added: int  # entries ever appended (more than `length` once trimming removed some)
    last_generated_id: str
    parts: tuple[StreamInfo, ...] = ()

    @property
    def trimmed(self) -> bool:
        return self.added > self.length

    @classmethod
    def of_groups(cls, parts: Sequence[StreamInfo]) -> StreamInfo:
        firsts = [p.first_id for p in parts if p.first_id is not None]
        lasts = [p.last_id for p in parts if p.last_id is not None]
        return cls(
            length=sum(p.length for p in parts),
            first_id=min(firsts, key=order_of) if firsts else None,
            last_id=max(lasts, key=order_of) if lasts else None,
            added=sum(p.added for p in parts),
            last_generated_id=max((p.last_generated_id for p in parts), key=order_of, default="0-0"),
            parts=tuple(parts),
        )


_EMPTY = StreamInfo(0, None, None, 0, "0-0")


@dataclasses.dataclass(frozen=True)
class Window:
    """A read of the events after a cursor, with what the feed needs to hand them out safely."""

    events: list[StoredEvent]
    # Epoch ms that no event committed after this read can be stamped below (the server's TIME, as
    # `next_event_id` stamps ms = max(TIME, the group's newest ms)): events below it are complete.
    now_ms: int
    # Of each group (in group order), the newest id a trim removed (None: none yet), read after its events.
    trimmed: tuple[str | None, ...]


def _milliseconds(answer: Any) -> int:
    """A TIME answer (seconds, microseconds) as epoch milliseconds, as the scripts compute it."""
    seconds, micros = answer
    return int(seconds) * 1000 + int(micros) // 1000


class Outbox:
    """The retention every appending script is given, and reads of the groups' streams merged in id order."""

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
        # On a cluster the groups' streams are on several masters: no MULTI across them, no XREAD of them all.
        self.cluster = is_cluster(client)

    def script_args(self, account_id: str) -> dict[str, Any]:
        """The keys and arguments every appending script takes: the account's group's stream, counts, newest
        id, newest id trimmed and trimming (each group keeps its share of EVENT_MAX_COUNT), and the group's number."""
        group = self.keys.group_of(account_id)
        return {
            "events": self.keys.events(group),
            "event_counts": self.keys.event_counts(group),
            "event_last": self.keys.event_last(group),
            "event_trimmed": self.keys.event_trimmed(group),
            "retain_after": f"{max(0, int((self.clock() - self.retention) * 1000))}-0",
            "retain_max": max(1, -(-self.max_count // GROUPS)),
            "event_group": group,
            "event_groups": GROUPS,
        }

    def _each_group(self, command: Callable[[Any, str], Any], groups: Iterable[int] | None = None) -> list[Any]:
        """One command per group's stream, in one round trip: a MULTI (a snapshot of all groups) on a
        single Redis, a plain pipeline on a cluster (which splits it by master)."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=not self.cluster)
            for group in self.keys.groups if groups is None else groups:
                command(pipe, self.keys.events(group))
            answers: list[Any] = pipe.execute()
            return answers

    def window(self, after: str | None, limit: int) -> Window:
        """Up to `limit` events after the id `after` (from the oldest when None), in order, with the time
        below which no later commit can stamp an event, and each group's trim bound (read after its events).

        On a single Redis (or Sentinel's master) one MULTI: the server's TIME, then every group's events
        and bound. On a cluster, first every master's TIME (the earliest is the horizon: a master's TIME
        was read before the streams it holds), then one pipeline of the groups' events and bounds.
        """
        start = "-" if after is None else "(" + after
        with store_errors():
            now = self._masters_time_ms() if self.cluster else None
            pipe = self.redis.pipeline(transaction=not self.cluster)
            if now is None:
                pipe.time()
            for group in self.keys.groups:
                pipe.xrange(self.keys.events(group), start, "+", count=limit)
                pipe.get(self.keys.event_trimmed(group))
            answers: list[Any] = pipe.execute()
        if now is None:
            now = _milliseconds(answers.pop(0))
        return Window(
            merged(stored(rows) for rows in answers[0::2])[:limit],
            now,
            tuple(None if bound is None else text(bound) for bound in answers[1::2]),
        )

    def _masters_time_ms(self) -> int:
        """The earliest clock of the cluster's masters (epoch ms)."""
        answer: Any = self.redis.time(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
        return min(_milliseconds(t) for t in (answer.values() if isinstance(answer, dict) else [answer]))

    def after(self, after: str | None, limit: int) -> list[StoredEvent]:
        """Up to `limit` events after the id `after` (from the oldest when None), in order."""
        start = "-" if after is None else "(" + after
        rows = self._each_group(lambda pipe, key: pipe.xrange(key, start, "+", count=limit))
        return merged(stored(r) for r in rows)[:limit]

    def since(self, milliseconds: int, limit: int) -> list[StoredEvent]:
        """Up to `limit` events from a time on (epoch milliseconds), in order."""
        rows = self._each_group(lambda pipe, key: pipe.xrange(key, f"{milliseconds}-0", "+", count=limit))
        return merged(stored(r) for r in rows)[:limit]

    def last(self, limit: int) -> list[StoredEvent]:
        """The newest `limit` events, oldest first."""
        rows = self._each_group(lambda pipe, key: pipe.xrevrange(key, "+", "-", count=limit))
        everything = merged(stored(r)[::-1] for r in rows)
        return everything[max(0, len(everything) - limit) :]

    def newest_id(self) -> str:
        """The id of the newest event of all groups, "0-0" when there is none."""
        rows = self._each_group(lambda pipe, key: pipe.xrevrange(key, "+", "-", count=1))
        return max((text(r[0][0]) for r in rows if r), key=order_of, default="0-0")

    def wait_after(self, cursor: str, block_ms: int) -> str | None:
        """Wait up to `block_ms` for events after `cursor` in any group; the newest id read, or None if none came.

        On a single Redis one `XREAD BLOCK` of every group's stream, holding one pooled connection
        for the block (the watcher's: events.watch). On a cluster that is CROSSSLOT: the newest id of
        every group is polled every EVENT_WATCH_POLL_MS instead (one pipelined round per master).
        """
        if self.cluster:
            return self._poll_after(cursor, block_ms)
        with store_errors():
            answer: Any = self.redis.xread(
                {self.keys.events(group): cursor for group in self.keys.groups}, count=1000, block=block_ms
            )
        newest = None
        for _, entries in answer or ():
            if entries and order_of(text(entries[-1][0])) > order_of(newest):
                newest = text(entries[-1][0])
        return newest

    def _poll_after(self, cursor: str, block_ms: int) -> str | None:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            newest = self.newest_id()
            if order_of(newest) > order_of(cursor):
                return newest
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(left, tunables.EVENT_WATCH_POLL_MS / 1000))

    def get(self, event_ids: Sequence[str], *, group: int | None = None) -> dict[str, StoredEvent]:
        """The events of these ids that are still retained, by id; each looked up in the group its
        sequence names, or in `group` when given (the group of their account)."""
        routed = [(i, group if group is not None else group_of_id(i)) for i in event_ids]
        wanted = [(i, g) for i, g in routed if g is not None]
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for event_id, in_group in wanted:
                pipe.xrange(self.keys.events(in_group), event_id, event_id)
            found = pipe.execute() if wanted else []
        return {event.id: event for rows in found for event in stored(rows)}

    def info(self) -> StreamInfo:
        """Length, first and last ids, and how many were ever appended (Redis 7's `entries-added`): of
        all groups together, each group's own in `parts`."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for group in self.keys.groups:
                pipe.xinfo_stream(self.keys.events(group))
            answers = pipe.execute(raise_on_error=False)
        parts = []
        for raw in answers:
            if isinstance(raw, redis.exceptions.ResponseError):
                if "no such key" not in str(raw).lower():
                    with store_errors():
                        raise raw
                parts.append(_EMPTY)  # nothing appended to this group yet
                continue
            first, last = raw.get("first-entry"), raw.get("last-entry")
            parts.append(
                StreamInfo(
                    length=int(raw.get("length", 0)),
                    first_id=text(first[0]) if first else None,
                    last_id=text(last[0]) if last else None,
                    added=int(raw.get("entries-added", 0)),
                    last_generated_id=text(raw.get("last-generated-id", b"0-0")),
                )
            )
        return StreamInfo.of_groups(parts)

    def counts(self) -> dict[str, int]:
        """Events ever appended, by type, summed over the groups (the scripts count them atomically with appending)."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for group in self.keys.groups:
                pipe.hgetall(self.keys.event_counts(group))
            answers = cast(list[dict[bytes, bytes]], pipe.execute())
        totals: dict[str, int] = {}
        for raw in answers:
            for name, value in raw.items():
                totals[text(name)] = totals.get(text(name), 0) + int(value)
        return totals
