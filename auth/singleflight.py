"""Single-flight: of every process asking for one slot's missing token, exactly one asks Trackunit.

The others wait on the slot's Redis lock (bounded) and read its result, or get
its failure (shared for a few seconds) instead of all retrying.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.lock

from auth.fetcher import TokenFetcher, raise_shared
from core import metrics, tunables
from core.errors import AuthUnavailable
from vault.accounts import AccountRecord, AccountRepository
from vault.store import STORE_ERRORS, store_errors
from vault.tokencache import CachedToken, Failure, TokenCache

# A forced refresh's test of the token it finds under the slot's lock: take it instead of fetching?
Accept = Callable[[CachedToken], bool]


@dataclasses.dataclass(frozen=True)
class Look:
    """What one round trip tells of a slot before its lock: its token, a shared failure, the account's summary."""

    token: CachedToken | None
    failure: Failure | None
    record: AccountRecord | None


class SingleFlight:
    def __init__(self, cache: TokenCache, fetcher: TokenFetcher, *, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.clock = clock

    def look(self, account_id: str, slot: str) -> Look:
        """The slot's token and shared failure and the account's summary, in one round trip (no lock)."""
        with store_errors():
            pipe = self.cache.redis.pipeline(transaction=False)
            self.cache.queue_peek(pipe, account_id, slot)
            self.accounts.queue_get(pipe, account_id)
            sealed, failure, summary = pipe.execute()
        token, shared = self.cache.peeked(account_id, slot, sealed, failure)
        return Look(token, shared, self.accounts.got(account_id, summary))

    def fetch_once(
        self,
        account_id: str,
        scopes: tuple[str, ...],
        slot: str,
        *,
        forced: Accept | None = None,
        seen: Look | None = None,
    ) -> tuple[CachedToken, bool]:
        """(the slot's token, whether it was fetched here) once this process held the slot's lock.

        A token another request stored meanwhile is taken. For a forced refresh (`forced` given)
        only one that `forced` accepts is: one a forced refresh fetched within the floor.
        `seen`: the slot's `look` the caller made just before, if it did (else it is made here).
        """
        self._gate(seen if seen is not None else self.look(account_id, slot))
        lock = self.cache.lock(account_id, slot, blocking_timeout=tunables.TOKEN_REQUEST_BUDGET)
        acquired, peek_reply, load_reply = self._try_lock(lock, account_id, slot)
        waited = not acquired
        if waited:
            with store_errors():
                acquired = lock.acquire()
            if not acquired:
                metrics.SINGLE_FLIGHT_WAITS.labels("timeout").inc()
                raise AuthUnavailable("Timed out waiting for a token fetch in progress.", retry_after=2)
        try:
            # Waited: what the lock's holder left is read now; else it came with the lock.
            peeked = self.cache.peek(account_id, slot) if waited else self.cache.peeked(account_id, slot, *peek_reply)
            cached, failure = peeked
            if cached is not None and cached.cached_until > self.clock() and (forced is None or forced(cached)):
                if waited:
                    metrics.SINGLE_FLIGHT_WAITS.labels("served").inc()
                return cached, False
            if waited:
                metrics.SINGLE_FLIGHT_WAITS.labels("failure_shared" if failure else "fetched").inc()
            raise_shared(failure)
            loaded = (
                self.fetcher.load(account_id)
                if waited
                else self.fetcher.checked(self.accounts.loaded(account_id, load_reply))
            )
            return self.fetcher.fetch(*loaded, scopes, slot, forced=forced is not None), True
        finally:
            release(lock)

    @property
    def accounts(self) -> AccountRepository:
        return self.fetcher.accounts

    def _try_lock(self, lock: redis.lock.Lock, account_id: str, slot: str) -> tuple[bool, Any, Any]:
        """Take the slot's lock if it is free, reading the slot and the account in the same round trip.

        (taken, the slot's `peek` replies, the account's `load` reply): the replies hold what was there
        just after the lock was taken, as `peek` and `load` under the lock would have read them.
        The lock is taken as `Lock.acquire(blocking=False)` takes it (SET NX PX, a token of our own);
        whether it is ours is read back (GET) rather than taken from the SET's reply, so that a pipeline
        redis-py sent again after a dropped connection does not find our own lock taken. If the round
        trip fails, the SET may have run all the same: the lock is freed if it is ours. (A SET that a
        stalled Redis runs only after that release is not freed: it expires after LOCK_TIMEOUT.)
        """
        token = secrets.token_hex(16).encode()  # what only this holder knows (redis-py uses uuid1, slower)
        try:
            with store_errors():
                pipe = self.cache.redis.pipeline(transaction=False)
                pipe.set(lock.name, token, nx=True, px=int((lock.timeout or tunables.LOCK_TIMEOUT) * 1000))
                pipe.get(lock.name)
                self.cache.queue_peek(pipe, account_id, slot)
                self.accounts.queue_load(pipe, account_id)
                _, holder, sealed, failure, record = pipe.execute()
        except BaseException:
            lock.local.token = token
            release(lock)  # compare-and-delete: frees it only if our SET ran
            raise
        taken = holder == token
        if taken:
            lock.local.token = token  # as Lock.acquire records it, so that release() frees it
        return taken, (sealed, failure), record

    def _gate(self, seen: Look) -> None:
        """Refuse early, before queueing on the lock: a shared recent failure, unknown account, revoked.

        From the record's summary only: the credentials are opened once, under the lock.
        """
        raise_shared(seen.failure)
        self.fetcher.check(seen.record)


_RELEASE_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.LockError, *STORE_ERRORS)


def release(lock: redis.lock.Lock) -> None:
    """Release a slot's lock if it is still ours; it frees itself after LOCK_TIMEOUT otherwise."""
    try:
        lock.release()
    except _RELEASE_ERRORS:
        pass  # expired, or Redis (a cluster's slot included) unavailable
