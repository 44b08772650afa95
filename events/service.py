"""The events of one process, built once from the configuration: outbox, stream watcher, feed and delivery."""

from __future__ import annotations

import dataclasses

import redis

from core.config import Config
from events.delivery import EventDelivery
from events.feed import EventFeed
from events.watch import StreamWatcher
from vault.layout import KeySpace
from vault.outbox import Outbox


@dataclasses.dataclass(frozen=True)
class Events:
    outbox: Outbox
    watcher: StreamWatcher
    feed: EventFeed
    delivery: EventDelivery
    mode: str  # EVENT_DELIVERY: web (the web workers deliver), worker (`events deliver` does), off

    def start_in_web(self) -> None:
        """Called by the web entry point (wsgi.py) in each worker: start delivering unless another process does.

        With EVENT_DELIVERY=worker the endpoints' consumer groups are still made here, so that the
        events the web dynos write before the worker process first runs are delivered too.
        """
        if self.mode == "web":
            self.delivery.start()
        elif self.mode == "worker":
            self.delivery.ensure_groups()

    def close(self) -> None:
        self.delivery.stop()
        self.watcher.stop()


def build_events(client: redis.Redis, keys: KeySpace, config: Config) -> Events:
    outbox = Outbox(client, keys, retention=config.event_retention, max_count=config.event_max_count)
    watcher = StreamWatcher(outbox)
    delivery = EventDelivery(
        config.webhook_urls, config.webhook_secret, config.webhook_retry_schedule, outbox, keys, watcher
    )
    return Events(
        outbox, watcher, EventFeed(outbox, watcher, max_wait=config.feed_max_wait), delivery, config.event_delivery
    )
