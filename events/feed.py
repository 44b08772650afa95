"""The event feed (`GET /v1/events`): a page of events after an id, long-polling until one exists."""

from __future__ import annotations

from core.errors import EventsExpired
from events.watch import StreamWatcher, id_key
from vault.outbox import Outbox, StoredEvent


class EventFeed:
    def __init__(self, outbox: Outbox, watcher: StreamWatcher, *, max_wait: float = 30) -> None:
        self.outbox = outbox
        self.watcher = watcher
        self.max_wait = max_wait  # EVENT_FEED_MAX_WAIT

    def page(self, after: str | None, limit: int, wait: float) -> tuple[list[StoredEvent], str]:
        """Up to `limit` events after `after`, waiting up to `wait` s for the first; and the id to go on after.

        EventsExpired when `after` is older than the oldest event retained and the stream was trimmed
        (older than the retention, or past the count cap): a reader that resumed from there could
        miss events without knowing. (Redis does not record the newest id a trim removed, so a
        reader whose `after` was itself the last event trimmed is refused too: safe, if cautious.)
        """
        self._check_retained(after)
        events = self.outbox.after(after, limit)
        wait = min(wait, self.max_wait)
        if not events and wait > 0 and self.watcher.wait_beyond(after, wait):
            events = self.outbox.after(after, limit)
        return events, events[-1].id if events else (after or "0-0")

    def _check_retained(self, after: str | None) -> None:
        if after is None:
            return  # from the oldest retained event on
        info = self.outbox.info()
        if not info.trimmed:
            return
        oldest = info.first_id
        if oldest is None:  # everything was trimmed: anything before the last id is gone
            if id_key(after) < id_key(info.last_generated_id):
                raise EventsExpired(None)
        elif id_key(after) < id_key(oldest):
            raise EventsExpired(oldest)
