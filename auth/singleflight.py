"""Single-flight: of every process asking for one slot's missing token, exactly one asks Trackunit.

The others wait on the slot's Redis lock (bounded) and read its result, or get
its failure (shared for a few seconds) instead of all retrying.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from auth.fetcher import TokenFetcher, raise_shared
from core import metrics, tunables
from core.errors import AuthUnavailable
from vault.store import store_errors
from vault.tokencache import CachedToken, TokenCache

# A forced refresh's test of the token it finds under the slot's lock: take it instead of fetching?
Accept = Callable[[CachedToken], bool]


class SingleFlight:
    def __init__(self, cache: TokenCache, fetcher: TokenFetcher, *, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.clock = clock

    def fetch_once(
        self, account_id: str, scopes: tuple[str, ...], slot: str, *, forced: Accept | None = None
    ) -> tuple[CachedToken, bool]:
        """(the slot's token, whether it was fetched here) once this process held the slot's lock.

        A token another request stored meanwhile is taken. For a forced refresh (`forced` given)
        only one that `forced` accepts is: one a forced refresh fetched within the floor.
        """
        self._gate(account_id, slot)
        lock = self.cache.lock(account_id, slot, blocking_timeout=tunables.TOKEN_REQUEST_BUDGET)
        with store_errors():
            waited = not lock.acquire(blocking=False)
            acquired = not waited or lock.acquire()
        if not acquired:
            metrics.SINGLE_FLIGHT_WAITS.labels("timeout").inc()
            raise AuthUnavailable("Timed out waiting for a token fetch in progress.", retry_after=2)
        try:
            cached, failure = self.cache.peek(account_id, slot)
            if cached is not None and cached.cached_until > self.clock() and (forced is None or forced(cached)):
                if waited:
                    metrics.SINGLE_FLIGHT_WAITS.labels("served").inc()
                return cached, False
            if waited:
                metrics.SINGLE_FLIGHT_WAITS.labels("failure_shared" if failure else "fetched").inc()
            raise_shared(failure)
            record, creds = self.fetcher.load(account_id)
            return self.fetcher.fetch(record, creds, scopes, slot, forced=forced is not None), True
        finally:
            release(lock)

    def _gate(self, account_id: str, slot: str) -> None:
        """Refuse early, before queueing on the lock: a shared recent failure, unknown account, revoked.

        Reads the record's summary only: the credentials are opened once, under the lock.
        """
        raise_shared(self.cache.peek(account_id, slot)[1])
        self.fetcher.check(self.fetcher.accounts.get(account_id))


def release(lock: redis.lock.Lock) -> None:
    """Release a slot's lock if it is still ours; it frees itself after LOCK_TIMEOUT otherwise."""
    try:
        lock.release()
    except (redis.exceptions.LockError, redis.exceptions.RedisError):
        pass  # expired or Redis gone
