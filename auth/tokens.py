"""The token request path: memory, then the Redis cache, then one fetch for everyone (single-flight).

A hit costs no Redis round trip once a worker has seen the token (`LocalTokenCache`),
else one Redis round trip, shared by the requests that miss together (`SharedReads`). A miss
goes through `SingleFlight`; close to the cache expiry one request starts a background
refresh (`RefreshAhead`) while everyone keeps getting the still-valid token.
Revocation and its cool-down are the fetcher's (`TokenFetcher`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import time
from collections.abc import Callable

from auth.background import Background, RefreshAhead
from auth.fetcher import TokenFetcher
from auth.memory import LocalTokenCache
from auth.memory.shared import SharedReads
from auth.scopes import requested_scopes, scope_id
from auth.singleflight import Accept, Look, SingleFlight
from auth.trackunit import TrackunitAuth
from core import metrics, tunables
from core.config import AppScopes
from core.errors import VaultError
from vault.accounts import AccountRepository
from vault.tokencache import CachedToken, TokenCache

log = logging.getLogger(__name__)


class Source(enum.StrEnum):
    """Where a token handed out came from (for logs and metrics)."""

    CACHE = "cache"  # memory or Redis, or another request's fetch that this one waited for
    FETCHED = "fetched"  # this request asked Trackunit


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """What the API hands out: `expires_in` is what is left of the cache entry."""

    account_id: str
    access_token: str = dataclasses.field(repr=False)
    token_type: str
    expires_in: int
    scope: str
    source: Source


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
        force_refresh_floor: float = 0,
        local: LocalTokenCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.app_scopes = app_scopes
        self.clock = clock
        self.force_refresh_floor = force_refresh_floor
        # Without a listener to keep it honest, memory is never trusted (fresh() is False).
        self.local = local if local is not None else LocalTokenCache(lambda: False)
        self.fetcher = TokenFetcher(
            accounts,
            cache,
            trackunit,
            expiry_margin=expiry_margin,
            revoked_retry_after=revoked_retry_after,
            clock=clock,
        )
        self.single_flight = SingleFlight(cache, self.fetcher, clock=clock)
        # Memory misses of one slot at once (a worker's first requests, memory not trusted) read Redis once.
        self.reads: SharedReads[tuple[str, str], Look] = SharedReads(
            tunables.SHARED_READ_WINDOW, tunables.SHARED_READ_WAIT
        )
        self.background = Background(workers=tunables.REFRESH_AHEAD_WORKERS)
        self.refresh_ahead = RefreshAhead(cache, self.fetcher, self.background, clock=clock)
        # Parsing and hashing a scope parameter is pure: remember the common ones.
        self._slot = functools.lru_cache(maxsize=256)(self._parse_scope)

    def get_token(self, account_id: str, scope: str | None = None, *, force_refresh: bool = False) -> IssuedToken:
        scopes, slot = self._slot(scope)
        if force_refresh:
            return self._refresh(account_id, scopes, slot)
        now = self.clock()
        cached = self.local.get(account_id, slot, now)
        if cached is not None:
            return self._serve(account_id, scopes, slot, cached, now)
        epoch = self.local.epoch
        # The token, a shared failure and the account's summary in one round trip: the gate of a fetch.
        seen = self.reads.read((account_id, slot), epoch, lambda: self.single_flight.look(account_id, slot))
        now = self.clock()
        if seen.token is not None and seen.token.cached_until > now:
            self.local.remember(account_id, slot, seen.token, epoch)
            return self._serve(account_id, scopes, slot, seen.token, now)
        return self._fetch_once(account_id, scopes, slot, seen=seen)

    def _refresh(self, account_id: str, scopes: tuple[str, ...], slot: str) -> IssuedToken:
        """A forced refresh: a new token from Trackunit, unless one was forced within the floor."""
        cached = self.cache.get(account_id, slot)
        now = self.clock()
        if cached is not None and cached.cached_until > now and self._recently_forced(cached):
            metrics.FORCED_REFRESHES.labels("floor").inc()
            return _issue(account_id, cached, Source.CACHE, now)
        self.local.invalidate(account_id)
        try:
            return self._fetch_once(account_id, scopes, slot, forced=self._recently_forced)
        finally:
            # Again after the new token is stored: whatever this process read before it is forgotten.
            self.local.invalidate(account_id)

    def remembered(self, account_id: str, scope: str | None = None) -> IssuedToken | None:
        """The token as `get_token` would hand it out, if this worker's memory holds it; else None (no I/O)."""
        scopes, slot = self._slot(scope)
        now = self.clock()
        cached = self.local.get(account_id, slot, now)
        if cached is None:
            return None
        return self._serve(account_id, scopes, slot, cached, now)

    def _recently_forced(self, token: CachedToken) -> bool:
        """Whether a forced refresh fetched `token` less than FORCE_REFRESH_FLOOR seconds ago.

        Then a forced refresh hands it out instead of asking Trackunit again: it is newer than
        any token the caller held before that fetch. A token obtained otherwise never is.
        """
        return token.forced_at is not None and self.clock() - token.forced_at < self.force_refresh_floor

    def verify_soon(self, account_id: str) -> None:
        """Fetch a new token with the stored credentials in the background; never waits for it.

        If Trackunit refuses them the account becomes revoked (as any refused fetch makes it);
        if they work, the new token is cached and nothing else changes.
        """
        self.background.submit(self._verify, account_id)

    def _verify(self, account_id: str) -> None:
        try:
            # UNINSTALLED dropped the cached tokens first: no forced token within the floor is left.
            self.get_token(account_id, force_refresh=True)
            result = "ok"
        except VaultError as exc:
            result = exc.code
        except Exception:  # a background thread must never die silently
            log.exception("account %s: verification crashed", account_id)
            result = "crashed"
        metrics.VERIFICATIONS.labels(result).inc()
        log.info("account %s: verification fetch: %s", account_id, result)

    def _parse_scope(self, scope: str | None) -> tuple[tuple[str, ...], str]:
        scopes = requested_scopes(scope, self.app_scopes)
        return scopes, scope_id(scopes)

    def _serve(
        self, account_id: str, scopes: tuple[str, ...], slot: str, cached: CachedToken, now: float
    ) -> IssuedToken:
        if now >= cached.refresh_from:
            self.refresh_ahead.start(account_id, scopes, slot)
        return _issue(account_id, cached, Source.CACHE, now)

    def _fetch_once(
        self,
        account_id: str,
        scopes: tuple[str, ...],
        slot: str,
        *,
        forced: Accept | None = None,
        seen: Look | None = None,
    ) -> IssuedToken:
        token, fetched = self.single_flight.fetch_once(account_id, scopes, slot, forced=forced, seen=seen)
        if forced is not None:
            metrics.FORCED_REFRESHES.labels("fetched" if fetched else "floor").inc()
        return _issue(account_id, token, Source.FETCHED if fetched else Source.CACHE, self.clock())


def _issue(account_id: str, token: CachedToken, source: Source, now: float) -> IssuedToken:
    return IssuedToken(
        account_id=account_id,
        access_token=token.access_token,
        token_type=token.token_type,
        expires_in=token.remaining(now),
        scope=token.scope,
        source=source,
    )
