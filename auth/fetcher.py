"""One token fetch with an account's stored credentials: ask Trackunit, cache the answer, or record the failure.

`invalid_client` revokes the account (with a cool-down before the next probe); a
scope not granted or an unavailable endpoint is shared with the slot's waiters
for a few seconds, so they do not all ask again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from auth.trackunit import TokenGrant, TrackunitAuth
from core import tunables
from core.errors import (
    AccountNotFound,
    AuthError,
    AuthUnavailable,
    CredentialsRevoked,
    ScopeNotGranted,
    VaultError,
)
from vault.accounts import AccountRecord, AccountRepository, Credentials
from vault.layout import Status
from vault.tokencache import CachedToken, Failure, TokenCache

log = logging.getLogger(__name__)

# Failures a slot's waiters get instead of asking Trackunit again, by code.
SHARED_FAILURES: dict[str, type[VaultError]] = {
    AuthUnavailable.code: AuthUnavailable,
    ScopeNotGranted.code: ScopeNotGranted,
    AuthError.code: AuthError,
}


def cache_lifetime(expires_in: int, margin: int) -> tuple[int, float]:
    """(seconds to cache, seconds before that to refresh ahead) for a token of `expires_in`.

    The margin shrinks to at most half the lifetime, so a short-lived token is
    still cached; the refresh-ahead window is a small slice of what remains.
    """
    margin = min(margin, expires_in // 2)
    ttl = expires_in - margin
    window = min(tunables.REFRESH_AHEAD_SECONDS, ttl * tunables.REFRESH_AHEAD_FRACTION)
    return ttl, window


def raise_shared(failure: Failure | None) -> None:
    """Raise the failure another request of the slot met moments ago, if any."""
    if failure is not None and failure.code in SHARED_FAILURES:
        raise SHARED_FAILURES[failure.code](retry_after=failure.retry_after)


class TokenFetcher:
    def __init__(
        self,
        accounts: AccountRepository,
        cache: TokenCache,
        trackunit: TrackunitAuth,
        *,
        expiry_margin: int,
        revoked_retry_after: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self.cache = cache
        self.trackunit = trackunit
        self.expiry_margin = expiry_margin
        self.revoked_retry_after = revoked_retry_after
        self.clock = clock

    def check(self, record: AccountRecord | None) -> AccountRecord:
        """The record, if a token may be fetched for it: AccountNotFound, or CredentialsRevoked in its cool-down."""
        if record is None:
            raise AccountNotFound()
        if record.status is Status.REVOKED and record.revoked_until and self.clock() < record.revoked_until:
            raise CredentialsRevoked(retry_after=int(record.revoked_until - self.clock()) + 1)
        return record

    def load(self, account_id: str) -> tuple[AccountRecord, Credentials]:
        """The record and its opened credentials, checked (it may have changed since it was last read)."""
        return self.checked(self.accounts.load(account_id))

    def checked(self, loaded: tuple[AccountRecord, Credentials] | None) -> tuple[AccountRecord, Credentials]:
        """`load`'s answer from a record read already (`AccountRepository.loaded`)."""
        if loaded is None:
            raise AccountNotFound()
        self.check(loaded[0])
        return loaded

    def fetch(
        self, record: AccountRecord, creds: Credentials, scopes: tuple[str, ...], slot: str, *, forced: bool = False
    ) -> CachedToken:
        """Ask Trackunit, then cache the token (marked as forced, if `forced`), or record what went wrong."""
        account_id, generation = record.account_id, record.generation
        try:
            grant = self.trackunit.fetch_token(creds.client_id, creds.client_secret, scopes)
        except CredentialsRevoked:
            now = self.clock()
            until = math.ceil(now + self.revoked_retry_after)  # whole seconds, never shorter than configured
            self.accounts.revoke(account_id, generation, until)
            log.warning(
                "account %s: Trackunit refused its credentials; revoked for %ss", account_id, self.revoked_retry_after
            )
            raise CredentialsRevoked(retry_after=math.ceil(until - now)) from None
        except ScopeNotGranted as exc:
            self._share_failure(record, slot, exc, tunables.FAILURE_TTL_SCOPE_NOT_GRANTED)
            raise
        except (AuthUnavailable, AuthError) as exc:
            self._share_failure(record, slot, exc, tunables.FAILURE_TTL_UNAVAILABLE)
            raise
        token = self._cacheable(grant, scopes, forced=forced)
        if not self.cache.put(account_id, generation, slot, token):
            # Deleted or re-installed while we fetched: these credentials are no longer the account's.
            raise AuthUnavailable("The account changed during the token fetch; retry.", retry_after=1)
        return token

    def _cacheable(self, grant: TokenGrant, scopes: tuple[str, ...], *, forced: bool) -> CachedToken:
        now = self.clock()
        ttl, window = cache_lifetime(grant.expires_in, self.expiry_margin)
        return CachedToken(
            access_token=grant.access_token,
            token_type=grant.token_type,
            scope=grant.scope or " ".join(scopes),
            cached_until=now + ttl,
            refresh_from=now + ttl - window,
            forced_at=now if forced else None,
        )

    def _share_failure(self, record: AccountRecord, slot: str, exc: VaultError, ttl: int) -> None:
        ttl = min(ttl, exc.retry_after or ttl)
        try:
            self.cache.put_failure(
                record.account_id, record.generation, slot, Failure(exc.code, exc.retry_after or ttl), ttl
            )
        except VaultError:
            pass  # Redis trouble: the original error is the one to report
