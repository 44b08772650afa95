"""A worker's in-memory copy of cached tokens, so a hit costs no Redis round trip.

Bounded in size (accounts) and time (a token's own cache expiry), and trusted
only while the invalidation feed is fresh (`auth.memory.feed`).
Changes made in this process drop entries at once; changes made elsewhere
arrive through pub/sub. A global epoch guards the read-then-remember race: a
token read from Redis before an invalidation is never remembered after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from core import tunables
from vault.tokencache import CachedToken


class LocalTokenCache:
    def __init__(
        self, fresh: Callable[[], bool] = lambda: True, *, max_accounts: int = tunables.LOCAL_CACHE_MAX_ACCOUNTS
    ) -> None:
        self._fresh = fresh
        self._max = max_accounts
        self._entries: dict[str, dict[str, CachedToken]] = {}
        self._lock = threading.Lock()
        self.epoch = 0

    def bind(self, fresh: Callable[[], bool]) -> None:
        self._fresh = fresh

    def get(self, account_id: str, slot: str, now: float) -> CachedToken | None:
        if not self._fresh():
            return None
        slots = self._entries.get(account_id)
        token = slots.get(slot) if slots else None
        if token is None or token.cached_until <= now:
            return None
        return token

    def remember(self, account_id: str, slot: str, token: CachedToken, epoch: int) -> None:
        """Keep `token` unless anything was invalidated since `epoch` was read."""
        with self._lock:
            if epoch != self.epoch:
                return
            slots = self._entries.get(account_id)
            if slots is None:
                if len(self._entries) >= self._max:
                    self._entries.pop(next(iter(self._entries)))  # oldest account first
                slots = self._entries[account_id] = {}
            slots[slot] = token

    def invalidate(self, account_id: str) -> None:
        with self._lock:
            self.epoch += 1
            self._entries.pop(account_id, None)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._entries.clear()
