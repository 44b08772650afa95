"""Who a caller is: the presented API key → its name and policy, from API_KEYS or the managed keys in Redis.

Keys of API_KEYS are compared, in constant time, with every one of them (as before managed keys
existed). Only a key with the managed prefix (`itv_`) is then looked up: by its keyed digest, in the
worker's memory while the invalidation feed is fresh, else in Redis (one round trip, shared by the
requests presenting that key at the same moment), so a key
without the prefix is refused without touching Redis. The lookup is by an HMAC of the key, which a
caller cannot steer, so its timing tells nothing about any stored key. "Last used" is written at
most once per APIKEY_LAST_USED_INTERVAL per key per process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable

from auth.memory.keycache import MISSING, LocalKeyCache
from auth.memory.shared import SharedReads
from core import tunables
from core.config import ApiKey
from core.errors import VaultError
from core.permissions import KeyPolicy
from vault.apikeys import PREFIX, ApiKeyStore, ManagedKey

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Caller:
    """A known, unexpired key: its name (safe to log) and what it may do."""

    name: str
    policy: KeyPolicy


class Expired(Exception):
    """A managed key past its expiry (refused as unauthorized; counted apart)."""


class CallerCheck:
    def __init__(
        self,
        env_keys: tuple[ApiKey, ...],
        store: ApiKeyStore | None = None,
        memory: LocalKeyCache | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._env = [(hashlib.sha256(k.key.encode()).digest(), Caller(k.name, k.policy)) for k in env_keys]
        self.store = store
        # Without a listener to keep it honest, memory is never trusted (fresh() is False).
        self.memory = memory if memory is not None else LocalKeyCache()
        self.clock = clock
        self._touched: dict[str, float] = {}  # digest -> monotonic time "last used" was last written
        self._touch_lock = threading.Lock()
        # Requests presenting one key that memory does not hold, at once, look it up in Redis once.
        self._reads: SharedReads[str, ManagedKey | None] = SharedReads(
            tunables.SHARED_READ_WINDOW, tunables.SHARED_READ_WAIT
        )

    def identify(self, presented: str) -> Caller | None:
        """The caller a key belongs to, or None; raises Expired for an expired managed key."""
        found = self._from_env(presented)
        if found is not None or self.store is None or not presented.startswith(PREFIX):
            return found
        return self._caller(self._managed(presented))

    def remembered(self, presented: str) -> Caller | None:
        """The caller, when it can be told without Redis: an API_KEYS key, or an unexpired managed key
        this worker remembers. None means "ask `identify`" (unknown, forgotten, expired: it decides)."""
        found = self._from_env(presented)
        if found is not None or self.store is None or not presented.startswith(PREFIX):
            return found
        record = self.memory.get(self.store.digests.current(presented)[1])
        if record is MISSING or record is None:
            return None
        try:
            return self._caller(record)  # type: ignore[arg-type]
        except Expired:
            return None

    def _from_env(self, presented: str) -> Caller | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for expected, caller in self._env:  # every one, so the timing tells nothing
            if hmac.compare_digest(digest, expected):
                found = caller
        return found

    def _caller(self, record: ManagedKey | None) -> Caller | None:
        if record is None:
            return None
        now = self.clock()
        if record.expired(now):
            raise Expired()
        self._touch(record, now)
        return Caller(record.name, record.policy)

    def _managed(self, presented: str) -> ManagedKey | None:
        assert self.store is not None
        _, digest = self.store.digests.current(presented)
        remembered = self.memory.get(digest)
        if remembered is not MISSING:
            return remembered  # type: ignore[return-value]  # a ManagedKey, or None for an unknown key
        epoch = self.memory.epoch
        store = self.store
        record = self._reads.read(digest, epoch, lambda: store.find(presented))
        if record is not None and record.digest != digest:
            self.store.rehash(record, presented)  # found under an older VAULT_KEY: move it to the current one
            return record  # not remembered: its record has moved; the next request reads it anew
        self.memory.remember(digest, record, epoch)
        return record

    def _touch(self, record: ManagedKey, now: float) -> None:
        """Write "last used" if this process has not done so for this key within the interval."""
        tick = time.monotonic()
        last = self._touched.get(record.digest)
        if last is not None and tick - last < tunables.APIKEY_LAST_USED_INTERVAL:
            return
        with self._touch_lock:
            last = self._touched.get(record.digest)
            if last is not None and tick - last < tunables.APIKEY_LAST_USED_INTERVAL:
                return
            self._touched[record.digest] = tick
        assert self.store is not None
        try:
            self.store.touch(record.digest, now)
        except VaultError:  # Redis down: the request was already allowed from memory; try again next interval
            log.warning("api key %s: last used not written (store unavailable)", record.name)
