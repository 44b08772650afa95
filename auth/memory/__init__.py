"""A worker's memory of tokens (`cache`) and API key lookups (`keycache`), kept honest by a pub/sub feed (`feed`).

Its misses that arrive together share one Redis read (`shared`).

`WorkerMemory` joins them: every account change heard on the feed drops that account
from memory, a change of the managed API keys forgets every key lookup, a lost
subscription clears both, and memory is trusted only while the feed has proven itself recently.
"""

from __future__ import annotations

import redis

from auth.memory.cache import LocalTokenCache
from auth.memory.feed import InvalidationListener
from auth.memory.keycache import LocalKeyCache
from vault.layout import APIKEYS_CHANGED

__all__ = ["InvalidationListener", "LocalKeyCache", "LocalTokenCache", "WorkerMemory"]


class WorkerMemory:
    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.cache = LocalTokenCache()
        self.keys = LocalKeyCache()
        self.listener = InvalidationListener(client, channel, on_change=self._changed, on_lost=self._lost)
        self.cache.bind(self.listener.fresh)
        self.keys.bind(self.listener.fresh)

    def _changed(self, message: str) -> None:
        if message == APIKEYS_CHANGED:
            self.keys.clear()
        else:
            self.cache.invalidate(message)  # the message is an account id

    def _lost(self) -> None:
        self.cache.clear()
        self.keys.clear()

    def stop(self) -> None:
        """Stop listening (tests build many apps; a server process simply exits)."""
        self.listener.stop()
