"""A worker's memory of managed API key lookups, so that a known key costs no Redis round trip.

Keyed by the key's digest under the current vault key (so the memory never holds a key), bounded,
and trusted only while the invalidation feed is fresh (`auth.memory.feed`): every create or revoke
announces itself there and clears this memory in every worker, within the feed's staleness bound.
Unknown keys are remembered apart (a client retrying with a revoked key costs Redis nothing), in a
bound of their own, so that a flood of made-up keys never pushes out the known ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from core import tunables
from vault.apikeys import ManagedKey

UNKNOWN = None  # what `get` returns for a key remembered as not found; MISSING: not remembered
MISSING = object()


class LocalKeyCache:
    def __init__(
        self,
        fresh: Callable[[], bool] = lambda: False,
        *,
        max_keys: int = tunables.APIKEY_CACHE_MAX_KEYS,
        max_unknown: int = tunables.APIKEY_CACHE_MAX_UNKNOWN,
    ) -> None:
        self._fresh = fresh
        self._known: dict[str, ManagedKey] = {}
        self._unknown: dict[str, None] = {}
        self._max_known, self._max_unknown = max_keys, max_unknown
        self._lock = threading.Lock()
        self.epoch = 0

    def bind(self, fresh: Callable[[], bool]) -> None:
        self._fresh = fresh

    def get(self, digest: str) -> ManagedKey | None | object:
        """The remembered record, UNKNOWN (None) for a key remembered as not found, or MISSING."""
        if not self._fresh():
            return MISSING
        found = self._known.get(digest)
        if found is not None:
            return found
        return UNKNOWN if digest in self._unknown else MISSING

    def remember(self, digest: str, record: ManagedKey | None, epoch: int) -> None:
        """Keep what Redis said, unless the keys changed since `epoch` was read."""
        with self._lock:
            if epoch != self.epoch:
                return
            if record is not None:
                _put(self._known, digest, record, self._max_known)
            else:
                _put(self._unknown, digest, None, self._max_unknown)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._known.clear()
            self._unknown.clear()


def _put(table: dict, digest: str, value: object, bound: int) -> None:  # type: ignore[type-arg]
    if len(table) >= bound:
        table.pop(next(iter(table)))  # the oldest first
    table[digest] = value
