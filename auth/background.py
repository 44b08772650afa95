"""Token work that no request waits for: refresh-ahead near a token's expiry, and verifying stored credentials.

Refresh-ahead: close to a cached token's expiry one request (of all processes:
the slot's Redis lock) starts a background fetch while everyone keeps getting the
still-valid token, so a busy account never waits for Trackunit at rollover. A
process asks Redis for a slot's lock at most once per REFRESH_ATTEMPT_INTERVAL, and
a failed refresh keeps the lock a little while as a back-off.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from auth.fetcher import TokenFetcher
from auth.singleflight import release
from core import metrics, tunables
from core.errors import VaultError
from vault.layout import Status
from vault.store import store_errors
from vault.tokencache import TokenCache

log = logging.getLogger(__name__)


class Background:
    """A small pool of background workers, created per process (threads do not survive gunicorn's fork).

    Under the gevent worker (monkey-patched before this module is imported) its threads are greenlets.
    """

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._executor is None or self._pid != os.getpid():
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="refresh"
            )
            self._pid = os.getpid()
        self._executor.submit(fn, *args)


class RefreshAhead:
    def __init__(
        self,
        cache: TokenCache,
        fetcher: TokenFetcher,
        background: Background,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.background = background
        self.clock = clock
        self._refreshing: set[tuple[str, str]] = set()
        self._next_attempt: dict[tuple[str, str], float] = {}  # monotonic time before which not to try the lock
        self._lock = threading.Lock()

    def start(self, account_id: str, scopes: tuple[str, ...], slot: str) -> None:
        """Start one background refresh per slot across all processes; never wait for it."""
        key = (account_id, slot)
        with self._lock:
            if key in self._refreshing or self._next_attempt.get(key, 0.0) > time.monotonic():
                return
            self._refreshing.add(key)
        lock = self.cache.lock(account_id, slot)
        try:
            with store_errors():
                acquired = lock.acquire(blocking=False)
        except VaultError:
            acquired = False
        if not acquired:
            # Someone else refreshes (or backs off after a failure): do not ask Redis on every hit meanwhile.
            with self._lock:
                self._refreshing.discard(key)
                if len(self._next_attempt) >= tunables.LOCAL_CACHE_MAX_ACCOUNTS:
                    self._next_attempt.clear()
                self._next_attempt[key] = time.monotonic() + tunables.REFRESH_ATTEMPT_INTERVAL
            return
        with self._lock:
            self._next_attempt.pop(key, None)
        metrics.REFRESH_AHEAD.labels("started").inc()
        self.background.submit(self._refresh, lock, account_id, scopes, slot)

    def _refresh(self, lock: redis.lock.Lock, account_id: str, scopes: tuple[str, ...], slot: str) -> None:
        ok = False
        try:
            cached = self.cache.get(account_id, slot)
            if cached is not None and self.clock() < cached.refresh_from:
                ok = True  # another process refreshed it already
                return
            loaded = self.fetcher.accounts.load(account_id)
            if loaded is None or loaded[0].status is Status.REVOKED:
                ok = True
                return
            self.fetcher.fetch(*loaded, scopes, slot)
            metrics.REFRESH_AHEAD.labels("refreshed").inc()
            ok = True
        except VaultError as exc:
            metrics.REFRESH_AHEAD.labels("failed").inc()
            log.warning(
                "account %s: refresh ahead failed (%s); the cached token is served meanwhile", account_id, exc.code
            )
        except Exception:  # a background thread must never die silently
            log.exception("account %s: refresh ahead crashed", account_id)
        finally:
            with self._lock:
                self._refreshing.discard((account_id, slot))
            if ok:
                release(lock)
            else:
                # Keep the lock a little while: it doubles as a back-off before the next try.
                try:
                    lock.extend(tunables.REFRESH_BACKOFF_SECONDS, replace_ttl=True)
                except (redis.exceptions.RedisError, redis.exceptions.LockError):
                    pass
