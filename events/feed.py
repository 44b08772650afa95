"""The event feed (`GET /v1/events`): a page of events after an id, in id order across every slot group,
long-polling until one exists.

Event ids are ordered across the groups (vault.outbox), so a cursor (the last id handed out) resumes
the merged stream. On a Redis Cluster the groups' streams live on several masters, each stamping ids
with its own clock, and the feed's read of them all is no snapshot: an event committed a moment later
on another master could get an id below one already handed out, and a reader past it would never see
it. So there the feed hands out only events at least EVENT_FEED_SETTLE_MS old (the settle horizon: a
long-poll waits until the first event after the cursor is past it); the order holds as long as the
masters' and the service's clocks agree within the horizon. Events reach a cluster's readers that
much later; webhooks are not delayed (their order is per account, and an account's events are in one
group). On a single Redis or Sentinel the horizon is 0: every read is one MULTI snapshot of all groups,
and scripts run one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from core import tunables
from core.errors import EventsExpired
from events.watch import StreamWatcher, id_key
from vault.outbox import Outbox, StoredEvent


class EventFeed:
    def __init__(
        self,
        outbox: Outbox,
        watcher: StreamWatcher,
        *,
        max_wait: float = 30,
        settle_ms: int | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.outbox = outbox
        self.watcher = watcher
        self.max_wait = max_wait  # EVENT_FEED_MAX_WAIT
        # The settle horizon (ms): EVENT_FEED_SETTLE_MS on a cluster, 0 where every read is a snapshot.
        self.settle_ms = (
            settle_ms if settle_ms is not None else (tunables.EVENT_FEED_SETTLE_MS if outbox.cluster else 0)
        )
        self.clock = clock
        self.sleep = sleep

    def page(self, after: str | None, limit: int, wait: float) -> tuple[list[StoredEvent], str]:
        """Up to `limit` events after `after`, waiting up to `wait` s for the first; and the id to go on after.

        EventsExpired when events after `after` may have been trimmed from some group (it is older
        than that group's oldest retained event, and the group was trimmed: older than the retention,
        or past its share of the count cap): a reader that resumed from there could miss events
        without knowing. (Redis does not record the newest id a trim removed, so a reader whose `after`
        was itself the last event trimmed is refused too: safe, if cautious.)
        """
        self._check_retained(after)
        deadline = time.monotonic() + min(wait, self.max_wait)
        while True:
            events = self.outbox.after(after, limit)
            settled = self._settled(events)
            left = deadline - time.monotonic()
            if settled or left <= 0:
                break
            if events:  # there are some, too fresh yet: wait until the first is past the horizon
                due = (events[0].milliseconds + self.settle_ms + 1) / 1000 - self.clock()
                self.sleep(max(0.001, min(left, due)))
            elif not self.watcher.wait_beyond(after, left):
                break
        return settled, settled[-1].id if settled else (after or "0-0")

    def _settled(self, events: list[StoredEvent]) -> list[StoredEvent]:
        """The events (in id order) up to the settle horizon."""
        if self.settle_ms <= 0:
            return events
        horizon = int(self.clock() * 1000) - self.settle_ms
        return [event for event in events if event.milliseconds <= horizon]

    def _check_retained(self, after: str | None) -> None:
        if after is None:
            return  # from the oldest retained event on
        info = self.outbox.info()
        if not info.trimmed:
            return
        # Each group is trimmed on its own. `after` is expired if some trimmed group's events after it
        # may be gone; a reader may start again after the newest of the trimmed groups' bounds.
        expired, resume = False, None
        for part in info.parts:
            if not part.trimmed:
                continue
            bound = part.first_id or part.last_generated_id  # empty: everything up to its last id is gone
            if id_key(after) < id_key(bound):
                expired = True
            if id_key(bound) > id_key(resume):
                resume = bound
        if expired:
            raise EventsExpired(resume if info.length else None)  # None: nothing is retained
