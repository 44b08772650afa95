"""One webhook endpoint's delivery state in Redis: its consumer groups on the outbox, lease, retries and failures.

Per endpoint (named by a digest of its URL, never the URL): a consumer group (`webhook:<id>`) on
each slot group's stream, so each event is handed to one consumer of all processes and stays
pending until settled; one lease (endpoint-wide), so one process delivers at a time (per-account
order); and per slot group, beside that group's stream (one Cluster slot, so each settling script
touches one): a retry sorted set (event id -> due time) and attempt counts, so an event that waits
hours for its next attempt is in Redis, not in memory, and its stream entry is acknowledged;
`held` (account -> its undelivered event) and a waiting list per account, so a later event of that
account waits behind it; and the failed set. An account's events and its delivery state are all in
its group; reads and stats go over every group (one pipelined round per Redis master).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import redis

from core import tunables
from vault.layout import GROUPS, KeySpace
from vault.outbox import StoredEvent, order_of, stored, text
from vault.scripts import Script
from vault.store import store_errors


def endpoint_id(url: str) -> str:
    """A short, stable name of an endpoint (keys, logs, metrics never carry its URL: it may hold a token)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


class Outcome:
    """How one attempt settled (`event_settle.lua`)."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class Due:
    """A retry due now: the event, its account, and the attempts made so far."""

    event_id: str
    account_id: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class EndpointStats:
    endpoint_id: str
    lease_holder: str | None
    pending: int  # read from the streams, not yet settled
    lag: int | None  # entries not yet read by the groups (None: unknown)
    retrying: int
    held_accounts: int
    failed: int


REPLAY_SLICE = 500  # events made due again per script call (`replay`)
# The failed events remembered per slot group: together about WEBHOOK_FAILED_KEPT per endpoint.
FAILED_KEPT_PER_GROUP = max(1, -(-tunables.WEBHOOK_FAILED_KEPT // GROUPS))


def _raise_unless(answer: Any, *allowed: str) -> bool:
    """For a pipeline answered with raise_on_error=False: True if `answer` is an error naming one of
    `allowed` (expected: the caller handles it), False if it is no error; raises any other error."""
    if not isinstance(answer, redis.exceptions.RedisError):
        return False
    if isinstance(answer, redis.exceptions.ResponseError) and any(word in str(answer) for word in allowed):
        return True
    with store_errors():
        raise answer


class EndpointState:
    def __init__(
        self, client: redis.Redis, keys: KeySpace, endpoint: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.keys = keys
        self.id = endpoint
        self.group = f"webhook:{endpoint}"
        self.clock = clock
        self._lease = Script(client, "event_lease")
        self._defer = Script(client, "event_defer")
        self._settle = Script(client, "event_settle")
        self._replay = Script(client, "event_replay")

    def _key(self, part: str, group: int | None = None) -> str:
        """A key of this endpoint's state: of one slot group, or endpoint-wide (the lease)."""
        return self.keys.endpoint(self.id, part, group)

    def _pipeline(self) -> Any:
        return self.redis.pipeline(transaction=False)  # on a cluster: split by master, one round each

    def ensure_group(self, start: str = "$", groups: Iterable[int] | None = None) -> None:
        """Create the consumer group on every slot group's stream (or on `groups`') at `start` (default
        each stream's end: events from now on), where it does not exist yet."""
        with store_errors():
            pipe = self._pipeline()
            for group in self.keys.groups if groups is None else groups:
                pipe.xgroup_create(self.keys.events(group), self.group, id=start, mkstream=True)
            for answer in pipe.execute(raise_on_error=False):
                _raise_unless(answer, "BUSYGROUP")

    def hold_lease(self, consumer: str, seconds: float) -> bool:
        """Take or renew the lease; False if another consumer holds it."""
        with store_errors():
            return bool(self._lease(lease=self._key("lease"), consumer=consumer, ttl_ms=int(seconds * 1000)))

    def release_lease(self, consumer: str) -> None:
        """Give the lease up, if this consumer still holds it."""
        with store_errors():
            self._lease(lease=self._key("lease"), consumer=consumer, ttl_ms=0)

    def forget_consumers(self, keep: str, min_idle_ms: int) -> int:
        """Drop the consumers (of every group's stream) that hold nothing and were idle this long (processes
        gone); how many were dropped.

        Every process has its own consumer name (host and pid), so without this a group would
        collect one per restart. One with entries pending is kept: claim_stale takes them first.
        """
        with store_errors():
            pipe = self._pipeline()
            for group in self.keys.groups:
                pipe.xinfo_consumers(self.keys.events(group), self.group)
            answers = pipe.execute(raise_on_error=False)
            drop = self._pipeline()
            dropped = 0
            for group, consumers in zip(self.keys.groups, answers):
                if _raise_unless(consumers, "no such key", "NOGROUP"):
                    continue  # no stream or no group yet
                for consumer in cast(list[dict[str, Any]], consumers):
                    name = text(consumer["name"])
                    if name != keep and int(consumer.get("pending") or 0) == 0 and int(consumer["idle"]) >= min_idle_ms:
                        drop.xgroup_delconsumer(self.keys.events(group), self.group, name)
                        dropped += 1
            if dropped:
                drop.execute()
        return dropped

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[StoredEvent]:
        """Entries read by a consumer that has not settled them for `min_idle_ms` (it died), now this one's:
        up to about `count` of each slot group, in id order.

        Entries trimmed meanwhile are dropped from the group's pending list by Redis itself.
        """
        claimed: dict[int, list[StoredEvent]] = {group: [] for group in self.keys.groups}
        starts = {group: "0-0" for group in self.keys.groups}
        with store_errors():
            while starts:
                pipe = self._pipeline()
                for group, start in starts.items():
                    pipe.xautoclaim(self.keys.events(group), self.group, consumer, min_idle_ms, start, count=count)
                answers = pipe.execute(raise_on_error=False)
                for group, answer in zip(list(starts), answers):
                    if _raise_unless(answer, "NOGROUP", "no such key"):
                        del starts[group]  # made by the next read (`_read`)
                        continue
                    claimed[group] += stored(answer[1])
                    if text(answer[0]) == "0-0" or len(claimed[group]) >= count:
                        del starts[group]
                    else:
                        starts[group] = text(answer[0])
        return sorted((e for events in claimed.values() for e in events), key=lambda e: e.order)

    def read_own_pending(self, consumer: str, count: int) -> list[StoredEvent]:
        """Entries this consumer read and has not settled (its pending lists), up to `count` of each group, in order."""
        return self._read(consumer, count, "0")

    def read_new(self, consumer: str, count: int) -> list[StoredEvent]:
        """Entries never handed to any consumer, up to `count` of each group (no blocking: the watcher waits)."""
        return self._read(consumer, count, ">")

    def _read(self, consumer: str, count: int, position: str) -> list[StoredEvent]:
        # One XREADGROUP per group's stream (one slot each, as a cluster requires), pipelined.
        lost = []
        events: list[StoredEvent] = []
        with store_errors():
            pipe = self._pipeline()
            for group in self.keys.groups:
                pipe.xreadgroup(self.group, consumer, {self.keys.events(group): position}, count=count)
            for group, answer in zip(self.keys.groups, pipe.execute(raise_on_error=False)):
                if _raise_unless(answer, "NOGROUP"):
                    lost.append(group)
                    continue
                events += [event for _, entries in answer or () for event in stored(entries)]
        if lost:
            # The stream was lost (FLUSHALL, a Redis without AOF) and is new: all of it is undelivered.
            self.ensure_group("0", lost)
        return sorted(events, key=lambda e: e.order)

    def defer_if_held(self, event: StoredEvent) -> bool:
        """True if the event's account has an undelivered earlier event: it waits behind it (and is acked)."""
        account = event.fields.get("account_id", "")
        group = self.keys.group_of(account)
        with store_errors():
            return bool(
                self._defer(
                    held=self._key("held", group),
                    waiting=self.keys.waiting(self.id, account),
                    events=self.keys.events(group),
                    group=self.group,
                    event_id=event.id,
                    account_id=account,
                )
            )

    def settle(self, event_id: str, account: str, outcome: str, *, due: float = 0.0, failures: int = 0) -> None:
        """Record how an attempt ended (Outcome) and acknowledge the stream entry: one step, in the account's group."""
        group = self.keys.group_of(account)
        with store_errors():
            self._settle(
                retry=self._key("retry", group),
                attempts=self._key("attempts", group),
                owners=self._key("owners", group),
                held=self._key("held", group),
                failed=self._key("failed", group),
                waiting=self.keys.waiting(self.id, account),
                events=self.keys.events(group),
                group=self.group,
                event_id=event_id,
                account_id=account,
                outcome=outcome,
                due=repr(due),
                failures=failures,
                now=repr(self.clock()),
                failed_kept=FAILED_KEPT_PER_GROUP,
            )

    def due(self, limit: int) -> list[Due]:
        """The retries due now (up to `limit` of each group), earliest first."""
        with store_errors():
            pipe = self._pipeline()
            for group in self.keys.groups:
                pipe.zrangebyscore(self._key("retry", group), "-inf", self.clock(), 0, limit, withscores=True)
            found = [(g, cast(list[tuple[bytes, float]], rows)) for g, rows in zip(self.keys.groups, pipe.execute())]
            found = [(g, rows) for g, rows in found if rows]
            if not found:
                return []
            pipe = self._pipeline()
            for group, rows in found:
                ids = [text(i) for i, _ in rows]
                pipe.hmget(self._key("attempts", group), ids)
                pipe.hmget(self._key("owners", group), ids)
            answers = pipe.execute()
        due: list[tuple[float, Due]] = []
        for n, (_, rows) in enumerate(found):
            counts, owners = answers[2 * n], answers[2 * n + 1]
            for (raw, score), count, owner in zip(rows, counts, owners):
                due.append((score, Due(text(raw), text(owner or b""), int(count or 0))))
        return [item for _, item in sorted(due, key=lambda pair: (pair[0], order_of(pair[1].event_id)))]

    def next_due(self) -> float | None:
        """When the earliest retry of any group is due (epoch seconds), or None."""
        with store_errors():
            pipe = self._pipeline()
            for group in self.keys.groups:
                pipe.zrange(self._key("retry", group), 0, 0, withscores=True)
            firsts = cast(list[list[tuple[bytes, float]]], pipe.execute())
        return min((rows[0][1] for rows in firsts if rows), default=None)

    def replay(self, events: Sequence[StoredEvent]) -> int:
        """Make these events due now for this endpoint (attempts from zero); how many."""
        by_group: dict[int, list[StoredEvent]] = {}
        for event in events:
            by_group.setdefault(self.keys.group_of(event.fields.get("account_id", "")), []).append(event)
        done = 0
        for group, mine in sorted(by_group.items()):
            # In slices: one script over 100,000 events would hold Redis for everyone while it runs.
            for start in range(0, len(mine), REPLAY_SLICE):
                pairs = [
                    item
                    for event in mine[start : start + REPLAY_SLICE]
                    for item in (event.id, event.fields.get("account_id", ""))
                ]
                with store_errors():
                    done += int(
                        self._replay(
                            retry=self._key("retry", group),
                            attempts=self._key("attempts", group),
                            owners=self._key("owners", group),
                            failed=self._key("failed", group),
                            now=repr(self.clock()),
                            pairs=pairs,
                        )
                    )
        return done

    def failed(self, limit: int) -> list[tuple[str, float]]:
        """(event id, when it was marked failed) of the newest failed events of all groups, oldest first."""
        with store_errors():
            pipe = self._pipeline()
            for group in self.keys.groups:
                pipe.zrevrange(self._key("failed", group), 0, limit - 1, withscores=True)
            rows = [(text(i), score) for found in pipe.execute() for i, score in found]
        rows.sort(key=lambda row: (row[1], order_of(row[0])))
        return rows[max(0, len(rows) - limit) :]

    def stats(self) -> EndpointStats:
        with store_errors():
            pipe = self._pipeline()
            pipe.get(self._key("lease"))
            for group in self.keys.groups:
                pipe.zcard(self._key("retry", group))
                pipe.hlen(self._key("held", group))
                pipe.zcard(self._key("failed", group))
                pipe.xinfo_groups(self.keys.events(group))
            answers = pipe.execute(raise_on_error=False)
        holder = answers[0]
        _raise_unless(holder)
        retrying = held = failed = pending = 0
        lag: int | None = 0
        for n in range(len(self.keys.groups)):
            group_retrying, group_held, group_failed, infos = answers[1 + 4 * n : 5 + 4 * n]
            for answer in (group_retrying, group_held, group_failed):
                _raise_unless(answer)
            retrying, held, failed = retrying + group_retrying, held + group_held, failed + group_failed
            mine = None
            if not _raise_unless(infos, "no such key"):  # else: no stream yet
                mine = next((i for i in cast(list[dict[str, Any]], infos) if text(i["name"]) == self.group), None)
            if mine is None:
                lag = None  # this group's stream has no consumer group yet: unknown
                continue
            pending += int(mine.get("pending") or 0)
            lag = None if lag is None or mine.get("lag") is None else lag + int(mine["lag"])
        return EndpointStats(
            self.id, text(holder) if holder else None, pending, lag, int(retrying), int(held), int(failed)
        )
