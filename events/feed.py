"""The event feed (`GET /v1/events`): a page of events after an id, in id order across every slot group,
long-polling until one exists.

Event ids are ordered across the groups (vault.outbox), so a cursor (the last id handed out) resumes
the merged stream, provided no event is committed later with an id below one already handed out. Each
group stamps its own ids (ms = max(the server's TIME, the group's newest ms)), so a group that has not
written in this millisecond yet, or whose newest id is ahead of the clock, can commit an id below
another group's newer one. So the feed hands out only events whose millisecond is below a horizon no
later commit can go under:

- On a single Redis or Sentinel: the server's TIME, read in the same MULTI as the events (a snapshot).
  A later commit's ms is at least its TIME, which is at least the read's. An event is handed out from
  the millisecond after its own (a long-poll answers about 1 ms after the commit; so does a read with
  `wait=0` right after a write, which waits that long: FRESH_WAIT); one stamped ahead of
  the clock (the group's newest id was, e.g. after the clock stepped back) waits until the clock gets
  there. After a Sentinel failover the new master's clock stands in: if it is behind the old one's,
  events committed in that difference can be missed by a reader past it.
- On a Redis Cluster: the earliest TIME of the masters, read just before the events (each master's
  TIME before the streams it holds, so the same holds per master), minus EVENT_FEED_SETTLE_MS: the
  margin for a group that moves to a master whose clock is behind (failover, resharding). The order
  holds as long as a group's old and new master agree within it; the service's own clock is not used.
  Events reach a cluster's readers that much later.

Webhooks are not affected: each endpoint's consumer group reads each group's stream in that stream's
own order (vault.deliveries), and an account's events are all in one group.

Expiry: each group keeps the newest id a trim removed from it (vault/lua/lifecycle.lua `trim`). A
cursor below some group's bound may have lost events: 410 EventsExpired, with the largest bound as
where to resume (every group is complete after it); a cursor at or above every bound has lost nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from core import tunables
from core.errors import EventsExpired
from events.watch import StreamWatcher, id_key
from vault.outbox import Outbox, StoredEvent

# An event committed but not yet below the horizon, due within FRESH_WAIT s, is waited for even with
# `wait=0` (up to FRESH_ROUNDS reads): on one server that is the next millisecond.
FRESH_WAIT = 0.005
FRESH_ROUNDS = 5


class EventFeed:
    def __init__(
        self,
        outbox: Outbox,
        watcher: StreamWatcher,
        *,
        max_wait: float = 30,
        settle_ms: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.outbox = outbox
        self.watcher = watcher
        self.max_wait = max_wait  # EVENT_FEED_MAX_WAIT
        # The margin below the servers' time (ms): EVENT_FEED_SETTLE_MS on a cluster, 0 on one server.
        self.settle_ms = (
            settle_ms if settle_ms is not None else (tunables.EVENT_FEED_SETTLE_MS if outbox.cluster else 0)
        )
        self.sleep = sleep

    def page(self, after: str | None, limit: int, wait: float) -> tuple[list[StoredEvent], str]:
        """Up to `limit` events after `after`, waiting up to `wait` s for the first; and the id to go on after.

        Only events below the horizon (see the module). EventsExpired when a trim removed events
        after `after` from some group (judged on every read, so also while a long-poll waits).
        """
        deadline = time.monotonic() + min(wait, self.max_wait)
        fresh_rounds = 0
        while True:
            window = self.outbox.window(after, limit)
            self._check_retained(after, window.trimmed)
            horizon = window.now_ms - self.settle_ms
            settled = [event for event in window.events if event.milliseconds < horizon]  # a prefix: in id order
            pending = window.events[len(settled) :]
            now = time.monotonic()
            if pending:  # too fresh yet: due when the first is below the horizon
                due = (pending[0].milliseconds + 1 - horizon) / 1000
                if due <= FRESH_WAIT and fresh_rounds < FRESH_ROUNDS:
                    # A moment away (on one server: the next millisecond): waited for even with `wait=0`
                    # and behind settled ones, so that a read right after a write sees it. Counted in
                    # rounds, not time, so that a slow round trip does not cut it short.
                    fresh_rounds += 1
                    self.sleep(max(0.001, due))
                    continue
                if settled or now >= deadline:
                    break
                self.sleep(max(0.001, min(deadline - now, due)))
            elif settled or now >= deadline or not self.watcher.wait_beyond(after, deadline - now):
                break
        return settled, settled[-1].id if settled else (after or "0-0")

    @staticmethod
    def _check_retained(after: str | None, trimmed: Sequence[str | None]) -> None:
        """EventsExpired if `after` is below the newest id some group's trims removed."""
        if after is None:
            return  # from the oldest retained event on
        bounds = [bound for bound in trimmed if bound is not None]
        if any(id_key(after) < id_key(bound) for bound in bounds):
            raise EventsExpired(max(bounds, key=id_key))
