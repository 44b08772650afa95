"""A worker's memory of cached tokens (`cache`), kept honest by a Redis pub/sub feed of account changes (`feed`).

`WorkerMemory` joins the two: every change heard on the feed drops that account
from memory, a lost subscription clears it, and memory is trusted only while the
feed has proven itself recently.
"""

from __future__ import annotations

import redis

from auth.memory.cache import LocalTokenCache
from auth.memory.feed import InvalidationListener

__all__ = ["InvalidationListener", "LocalTokenCache", "WorkerMemory"]


class WorkerMemory:
    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.cache = LocalTokenCache()
        self.listener = InvalidationListener(client, channel, on_change=self.cache.invalidate, on_lost=self.cache.clear)
        self.cache.bind(self.listener.fresh)

    def stop(self) -> None:
        """Stop listening (tests build many apps; a server process simply exits)."""
        self.listener.stop()
