"""The token policy: cache, single-flight, refresh-ahead, revocation cool-down.

A hit costs one Redis GET. A miss takes the slot's Redis lock so that exactly
one process (of all workers and dynos) asks Trackunit; the others wait for it
and read its result, or share its failure. Close to the cache expiry one
request starts a background refresh while everyone keeps getting the
still-valid token, so a busy account never waits for Trackunit at rollover.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable

import redis

import metrics
import tunables
from auth.localcache import LocalTokenCache
from auth.scopes import requested_scopes, scope_id
from auth.trackunit import TokenGrant, TrackunitAuth
from config import AppScopes
from errors import (
    AccountNotFound,
    AuthError,
    AuthUnavailable,
    CredentialsRevoked,
    ScopeNotGranted,
    VaultError,
)
from vault.accounts import REVOKED, AccountRecord, AccountRepository, Credentials
from vault.store import store_errors
from vault.tokencache import CachedToken, Failure, TokenCache

log = logging.getLogger(__name__)

_SHARED_FAILURES: dict[str, type[VaultError]] = {
    AuthUnavailable.code: AuthUnavailable,
    ScopeNotGranted.code: ScopeNotGranted,
    AuthError.code: AuthError,
}


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """What the API hands out: `expires_in` is what is left of the cache entry."""

    account_id: str
    access_token: str = dataclasses.field(repr=False)
    token_type: str
    expires_in: int
    scope: str
    source: str  # "cache" or "fetched" (for logs and metrics)


def cache_lifetime(expires_in: int, margin: int) -> tuple[int, float]:
    """(seconds to cache, seconds before that to refresh ahead) for a token of `expires_in`.

    The margin shrinks to at most half the lifetime, so a short-lived token is
    still cached; the refresh-ahead window is a small slice of what remains.
    """
    margin = min(margin, expires_in // 2)
    ttl = expires_in - margin
    window = min(tunables.REFRESH_AHEAD_SECONDS, ttl * tunables.REFRESH_AHEAD_FRACTION)
    return ttl, window


class TokenService:
    def __init__(
        self,
        accounts: AccountRepository,
        cache: TokenCache,
        trackunit: TrackunitAuth,
        app_scopes: AppScopes,
        *,
        expiry_margin: int,
        revoked_retry_after: int,
        local: LocalTokenCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self.cache = cache
        self.trackunit = trackunit
        self.app_scopes = app_scopes
        self.expiry_margin = expiry_margin
        self.revoked_retry_after = revoked_retry_after
        self.clock = clock
        # Without a listener to keep it honest, memory is never trusted (fresh() is False).
        self.local = local if local is not None else LocalTokenCache(lambda: False)
        # Parsing and hashing a scope parameter is pure: remember the common ones.
        self._slot = functools.lru_cache(maxsize=256)(self._parse_scope)
        self._refreshing: set[tuple[str, str]] = set()
        self._next_attempt: dict[tuple[str, str], float] = {}  # monotonic time before which not to try the lock
        self._refreshing_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_pid = 0

    # The request path ----------------------------------------------------------------

    def get_token(self, account_id: str, scope: str | None = None, *, force_refresh: bool = False) -> IssuedToken:
        scopes, slot = self._slot(scope)
        if not force_refresh:
            now = self.clock()
            cached = self.local.get(account_id, slot, now)
            if cached is not None:
                return self._serve(account_id, scopes, slot, cached, now)
        epoch = self.local.epoch
        cached = self.cache.get(account_id, slot)
        now = self.clock()
        if cached is not None and not force_refresh and cached.cached_until > now:
            self.local.remember(account_id, slot, cached, epoch)
            return self._serve(account_id, scopes, slot, cached, now)
        if not force_refresh:
            return self._fetch_once(account_id, scopes, slot, seen=None)
        self.local.invalidate(account_id)
        try:
            return self._fetch_once(account_id, scopes, slot, seen=cached)
        finally:
            # Again after the new token is stored: whatever this process read before it is forgotten.
            self.local.invalidate(account_id)

    def _parse_scope(self, scope: str | None) -> tuple[tuple[str, ...], str]:
        scopes = requested_scopes(scope, self.app_scopes)
        return scopes, scope_id(scopes)

    def _serve(self, account_id: str, scopes: tuple[str, ...], slot: str, cached: CachedToken, now: float) -> IssuedToken:
        if now >= cached.refresh_from:
            self._refresh_ahead(account_id, scopes, slot)
        return self._issue(account_id, cached, "cache", now)

    def _fetch_once(
        self, account_id: str, scopes: tuple[str, ...], slot: str, *, seen: CachedToken | None
    ) -> IssuedToken:
        """Single-flight: under the slot's lock, fetch unless someone else just did."""
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
            now = self.clock()
            if cached is not None and cached.cached_until > now and (seen is None or cached != seen):
                if waited:
                    metrics.SINGLE_FLIGHT_WAITS.labels("served").inc()
                return self._issue(account_id, cached, "cache", now)
            if waited:
                metrics.SINGLE_FLIGHT_WAITS.labels("failure_shared" if failure else "fetched").inc()
            _raise_shared(failure)
            record, creds = self._load(account_id)
            token = self._fetch(record, creds, scopes, slot)
            return self._issue(account_id, token, "fetched", self.clock())
        finally:
            _release(lock)

    def _gate(self, account_id: str, slot: str) -> None:
        """Refuse early, before queueing on the lock: a shared recent failure, unknown account, revoked.

        Reads the record's summary only: the credentials are opened once, under the lock.
        """
        _raise_shared(self.cache.peek(account_id, slot)[1])
        self._check_record(self.accounts.get(account_id))

    def _load(self, account_id: str) -> tuple[AccountRecord, Credentials]:
        """The record and its credentials, checked again under the lock (it may have changed meanwhile)."""
        loaded = self.accounts.load(account_id)
        self._check_record(loaded[0] if loaded else None)
        return loaded

    def _check_record(self, record: AccountRecord | None) -> None:
        if record is None:
            raise AccountNotFound()
        if record.status == REVOKED and record.revoked_until and self.clock() < record.revoked_until:
            raise CredentialsRevoked(retry_after=int(record.revoked_until - self.clock()) + 1)

    def _fetch(
        self, record: AccountRecord, creds: Credentials, scopes: tuple[str, ...], slot: str
    ) -> CachedToken:
        """Ask Trackunit, then cache the token, or record what went wrong."""
        account_id, generation = record.account_id, record.generation
        try:
            grant = self.trackunit.fetch_token(creds.client_id, creds.client_secret, scopes)
        except CredentialsRevoked:
            now = self.clock()
            until = math.ceil(now + self.revoked_retry_after)  # whole seconds, never shorter than configured
            self.accounts.revoke(account_id, generation, until)
            log.warning("account %s: Trackunit refused its credentials; revoked for %ss", account_id,
                        self.revoked_retry_after)
            raise CredentialsRevoked(retry_after=math.ceil(until - now)) from None
        except ScopeNotGranted as exc:
            self._share_failure(record, slot, exc, tunables.FAILURE_TTL_SCOPE_NOT_GRANTED)
            raise
        except (AuthUnavailable, AuthError) as exc:
            self._share_failure(record, slot, exc, tunables.FAILURE_TTL_UNAVAILABLE)
            raise
        token = self._cacheable(grant, scopes)
        if not self.cache.put(account_id, generation, slot, token):
            # Deleted or re-installed while we fetched: these credentials are no longer the account's.
            raise AuthUnavailable("The account changed during the token fetch; retry.", retry_after=1)
        return token

    def _cacheable(self, grant: TokenGrant, scopes: tuple[str, ...]) -> CachedToken:
        now = self.clock()
        ttl, window = cache_lifetime(grant.expires_in, self.expiry_margin)
        return CachedToken(
            access_token=grant.access_token,
            token_type=grant.token_type,
            scope=grant.scope or " ".join(scopes),
            cached_until=now + ttl,
            refresh_from=now + ttl - window,
        )

    def _share_failure(self, record: AccountRecord, slot: str, exc: VaultError, ttl: int) -> None:
        ttl = min(ttl, exc.retry_after or ttl)
        try:
            self.cache.put_failure(
                record.account_id, record.generation, slot, Failure(exc.code, exc.retry_after or ttl), ttl
            )
        except VaultError:
            pass  # Redis trouble: the original error is the one to report

    @staticmethod
    def _issue(account_id: str, token: CachedToken, source: str, now: float) -> IssuedToken:
        return IssuedToken(
            account_id=account_id,
            access_token=token.access_token,
            token_type=token.token_type,
            expires_in=token.remaining(now),
            scope=token.scope,
            source=source,
        )

    # Refresh ahead --------------------------------------------------------------------

    def _refresh_ahead(self, account_id: str, scopes: tuple[str, ...], slot: str) -> None:
        """Start one background refresh per slot across all processes; never wait for it."""
        key = (account_id, slot)
        with self._refreshing_lock:
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
            with self._refreshing_lock:
                self._refreshing.discard(key)
                if len(self._next_attempt) >= tunables.LOCAL_CACHE_MAX_ACCOUNTS:
                    self._next_attempt.clear()
                self._next_attempt[key] = time.monotonic() + tunables.REFRESH_ATTEMPT_INTERVAL
            return
        with self._refreshing_lock:
            self._next_attempt.pop(key, None)
        metrics.REFRESH_AHEAD.labels("started").inc()
        self._pool().submit(self._refresh_in_background, lock, account_id, scopes, slot)

    def _refresh_in_background(self, lock: redis.lock.Lock, account_id: str, scopes: tuple[str, ...], slot: str) -> None:
        ok = False
        try:
            cached = self.cache.get(account_id, slot)
            if cached is not None and self.clock() < cached.refresh_from:
                ok = True  # another process refreshed it already
                return
            loaded = self.accounts.load(account_id)
            if loaded is None or loaded[0].status == REVOKED:
                ok = True
                return
            self._fetch(*loaded, scopes, slot)
            metrics.REFRESH_AHEAD.labels("refreshed").inc()
            ok = True
        except VaultError as exc:
            metrics.REFRESH_AHEAD.labels("failed").inc()
            log.warning("account %s: refresh ahead failed (%s); the cached token is served meanwhile",
                        account_id, exc.code)
        except Exception:  # a background thread must never die silently
            log.exception("account %s: refresh ahead crashed", account_id)
        finally:
            with self._refreshing_lock:
                self._refreshing.discard((account_id, slot))
            if ok:
                _release(lock)
            else:
                # Keep the lock a little while: it doubles as a back-off before the next try.
                try:
                    lock.extend(tunables.REFRESH_BACKOFF_SECONDS, replace_ttl=True)
                except (redis.exceptions.RedisError, redis.exceptions.LockError):
                    pass

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        # Created lazily and per process: threads do not survive gunicorn's fork. Under the gevent
        # worker (monkey-patched before this module is imported) its "threads" are greenlets.
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=tunables.REFRESH_AHEAD_WORKERS, thread_name_prefix="refresh")
            self._executor_pid = os.getpid()
        return self._executor


def _raise_shared(failure: Failure | None) -> None:
    if failure is not None and failure.code in _SHARED_FAILURES:
        raise _SHARED_FAILURES[failure.code](retry_after=failure.retry_after)


def _release(lock: redis.lock.Lock) -> None:
    try:
        lock.release()
    except (redis.exceptions.LockError, redis.exceptions.RedisError):
        pass  # expired or Redis gone: it frees itself after LOCK_TIMEOUT
