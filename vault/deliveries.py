"""One webhook endpoint's delivery state in Redis: its consumer group on the outbox, lease, retries and failures.

Per endpoint (named by a digest of its URL, never the URL): a consumer group on the
stream (`webhook:<id>`), so each event is handed to one consumer of all processes and
stays pending until settled; a lease, so one process delivers at a time (per-account
order); a retry sorted set (event id -> due time) and attempt counts, so an event that
waits hours for its next attempt is in Redis, not in memory, and its stream entry is
acknowledged; `held` (account -> its undelivered event) and a waiting list per account,
so a later event of that account waits behind it; and the failed set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from core import tunables
from vault.layout import KeySpace
from vault.outbox import StoredEvent, stored, text
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
    pending: int  # read from the stream, not yet settled
    lag: int | None  # entries not yet read by the group (None: unknown)
    retrying: int
    held_accounts: int
    failed: int


REPLAY_SLICE = 500  # events made due again per script call (`replay`)


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

    def _key(self, part: str) -> str:
        return self.keys.endpoint(self.id, part)

    def ensure_group(self, start: str = "$") -> None:
        """Create the consumer group at `start` (default the stream's end: events from now on) unless it exists."""
        with store_errors():
            try:
                self.redis.xgroup_create(self.keys.events, self.group, id=start, mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def hold_lease(self, consumer: str, seconds: float) -> bool:
        """Take or renew the lease; False if another consumer holds it."""
        with store_errors():
            return bool(self._lease(lease=self._key("lease"), consumer=consumer, ttl_ms=int(seconds * 1000)))

    def release_lease(self, consumer: str) -> None:
        """Give the lease up, if this consumer still holds it."""
        with store_errors():
            self._lease(lease=self._key("lease"), consumer=consumer, ttl_ms=0)

    def forget_consumers(self, keep: str, min_idle_ms: int) -> int:
        """Drop the group's consumers that hold nothing and were idle this long (processes gone); how many.

        Every process has its own consumer name (host and pid), so without this a group would
        collect one per restart. One with entries pending is kept: claim_stale takes them first.
        """
        dropped = 0
        with store_errors():
            try:
                consumers: list[dict[str, Any]] = self.redis.xinfo_consumers(self.keys.events, self.group)
            except redis.exceptions.ResponseError:
                return 0  # no stream or no group yet
            for consumer in consumers:
                name = text(consumer["name"])
                if name != keep and int(consumer.get("pending") or 0) == 0 and int(consumer["idle"]) >= min_idle_ms:
                    self.redis.xgroup_delconsumer(self.keys.events, self.group, name)
                    dropped += 1
        return dropped

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[StoredEvent]:
        """Entries read by a consumer that has not settled them for `min_idle_ms` (it died), now this one's.

        Entries trimmed meanwhile are dropped from the group's pending list by Redis itself.
        """
        claimed: list[StoredEvent] = []
        start = "0-0"
        with store_errors():
            while len(claimed) < count:
                answer: Any = self.redis.xautoclaim(
                    self.keys.events, self.group, consumer, min_idle_ms, start, count=count
                )
                start, entries = text(answer[0]), answer[1]
                claimed += stored(entries)
                if start == "0-0":
                    break
        return claimed

    def read_own_pending(self, consumer: str, count: int) -> list[StoredEvent]:
        """Entries this consumer read and has not settled (its pending list), oldest first."""
        return self._read(consumer, count, "0")

    def read_new(self, consumer: str, count: int) -> list[StoredEvent]:
        """Entries never handed to any consumer of the group (no blocking: the watcher waits)."""
        return self._read(consumer, count, ">")

    def _read(self, consumer: str, count: int, position: str) -> list[StoredEvent]:
        with store_errors():
            try:
                answer = self.redis.xreadgroup(self.group, consumer, {self.keys.events: position}, count=count)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream was lost (FLUSHALL, a Redis without AOF) and is new: all of it is undelivered.
                self.ensure_group("0")
                return []
        streams: Any = answer or ()
        return [event for _, entries in streams for event in stored(entries)]

    def defer_if_held(self, event: StoredEvent) -> bool:
        """True if the event's account has an undelivered earlier event: it waits behind it (and is acked)."""
        account = event.fields.get("account_id", "")
        with store_errors():
            return bool(
                self._defer(
                    held=self._key("held"),
                    waiting=self.keys.waiting(self.id, account),
                    events=self.keys.events,
                    group=self.group,
                    event_id=event.id,
                    account_id=account,
                )
            )

    def settle(self, event_id: str, account: str, outcome: str, *, due: float = 0.0, failures: int = 0) -> None:
        """Record how an attempt ended (Outcome), and acknowledge the stream entry, in one step."""
        with store_errors():
            self._settle(
                retry=self._key("retry"),
                attempts=self._key("attempts"),
                owners=self._key("owners"),
                held=self._key("held"),
                failed=self._key("failed"),
                waiting=self.keys.waiting(self.id, account),
                events=self.keys.events,
                group=self.group,
                event_id=event_id,
                account_id=account,
                outcome=outcome,
                due=repr(due),
                failures=failures,
                now=repr(self.clock()),
                failed_kept=tunables.WEBHOOK_FAILED_KEPT,
            )

    def due(self, limit: int) -> list[Due]:
        """The retries due now, earliest first."""
        with store_errors():
            ids = [
                text(i)
                for i in cast(list[bytes], self.redis.zrangebyscore(self._key("retry"), "-inf", self.clock(), 0, limit))
            ]
            if not ids:
                return []
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(self._key("attempts"), ids)
            pipe.hmget(self._key("owners"), ids)
            counts, owners = pipe.execute()
        return [Due(i, text(owner or b""), int(n or 0)) for i, n, owner in zip(ids, counts, owners)]

    def next_due(self) -> float | None:
        """When the earliest retry is due (epoch seconds), or None."""
        with store_errors():
            first = cast(list[tuple[bytes, float]], self.redis.zrange(self._key("retry"), 0, 0, withscores=True))
        return first[0][1] if first else None

    def replay(self, events: Sequence[StoredEvent]) -> int:
        """Make these events due now for this endpoint (attempts from zero); how many."""
        done = 0
        # In slices: one script over 100,000 events would hold Redis for everyone while it runs.
        for start in range(0, len(events), REPLAY_SLICE):
            pairs = [
                item
                for event in events[start : start + REPLAY_SLICE]
                for item in (event.id, event.fields.get("account_id", ""))
            ]
            with store_errors():
                done += int(
                    self._replay(
                        retry=self._key("retry"),
                        attempts=self._key("attempts"),
                        owners=self._key("owners"),
                        failed=self._key("failed"),
                        now=repr(self.clock()),
                        pairs=pairs,
                    )
                )
        return done

    def failed(self, limit: int) -> list[tuple[str, float]]:
        """(event id, when it was marked failed) of the newest failed events, oldest first."""
        with store_errors():
            rows = cast(
                list[tuple[bytes, float]], self.redis.zrevrange(self._key("failed"), 0, limit - 1, withscores=True)
            )
        return [(text(i), score) for i, score in reversed(rows)]

    def stats(self) -> EndpointStats:
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self._key("lease"))
            pipe.zcard(self._key("retry"))
            pipe.hlen(self._key("held"))
            pipe.zcard(self._key("failed"))
            holder, retrying, held, failed = pipe.execute()
            pending, lag = 0, None
            try:
                groups: list[dict[str, Any]] = self.redis.xinfo_groups(self.keys.events)
                for group in groups:
                    if text(group["name"]) == self.group:
                        pending, lag = int(group.get("pending") or 0), group.get("lag")
            except redis.exceptions.ResponseError:
                pass  # no stream yet
        return EndpointStats(
            self.id,
            text(holder) if holder else None,
            pending,
            int(lag) if lag is not None else None,
            int(retrying),
            int(held),
            int(failed),
        )
