"""Cached access tokens in Redis: sealed values with a TTL, failure markers, and locks.

Slots are per (account, scope set). Every slot key is recorded in the
account's `cache` set, so installing, revoking or deleting the account drops
them all in one atomic step. A write names the account's generation and is
refused if the account was re-installed or deleted meanwhile: a token fetched
with old credentials never lands in the cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.lock import Lock

from core import tunables
from vault.layout import CACHE, FAILURE, LOCK, TOKEN, KeySpace
from vault.outbox import Outbox
from vault.scripts import Script
from vault.seal import Sealer, SealError, associated_data
from vault.store import store_errors

log = logging.getLogger(__name__)


def token_aad(app_id: str, account_id: str, slot: str) -> bytes:
    """The associated data that binds a sealed token to its app, account and slot (also used by rotation)."""
    return associated_data("token", app_id, account_id, slot)


@dataclasses.dataclass(frozen=True)
class CachedToken:
    access_token: str = dataclasses.field(repr=False)
    token_type: str
    scope: str
    cached_until: float  # epoch seconds: when the cache entry (and our promise to callers) ends
    refresh_from: float  # epoch seconds: from here on one request refreshes it ahead of time
    forced_at: float | None = None  # epoch seconds, if a forced refresh fetched it (the floor's clock)

    def remaining(self, now: float) -> int:
        return max(0, int(self.cached_until - now))


@dataclasses.dataclass(frozen=True)
class Failure:
    """A recent failure shared with every waiter of a slot, so they do not all retry Trackunit."""

    code: str
    retry_after: int


class TokenCache:
    def __init__(
        self,
        client: redis.Redis,
        sealer: Sealer,
        keys: KeySpace,
        app_id: str,
        *,
        clock: Callable[[], float] = time.time,
        outbox: Outbox | None = None,
    ) -> None:
        self.redis = client
        self.outbox = outbox if outbox is not None else Outbox(client, keys, clock=clock)
        self.sealer = sealer
        self.keys = keys
        self.app_id = app_id
        self.clock = clock
        # A token proves the credentials work: the script also makes a revoked account active
        # (the lifecycle's `activate`, vault/lua/lifecycle.lua).
        self._put = Script(client, "put_token")

    def _aad(self, account_id: str, slot: str) -> bytes:
        return token_aad(self.app_id, account_id, slot)

    def get(self, account_id: str, slot: str) -> CachedToken | None:
        with store_errors():
            sealed = cast(bytes | None, self.redis.get(self.keys.key_for(account_id, TOKEN, slot)))
        return self._open(account_id, slot, sealed)

    def peek(self, account_id: str, slot: str) -> tuple[CachedToken | None, Failure | None]:
        """The cached token and the failure marker of a slot, in one round trip."""
        with store_errors():
            sealed, failure = cast(list[bytes | None], self.redis.mget(self._peeked_keys(account_id, slot)))
        return self.peeked(account_id, slot, sealed, failure)

    def queue_peek(self, pipe: Any, account_id: str, slot: str) -> None:
        """`peek` as two GETs on a pipeline (a cluster pipeline refuses MGET); their replies go to `peeked`."""
        for key in self._peeked_keys(account_id, slot):
            pipe.get(key)

    def peeked(
        self, account_id: str, slot: str, sealed: bytes | None, failure: bytes | None
    ) -> tuple[CachedToken | None, Failure | None]:
        return self._open(account_id, slot, sealed), _failure(failure)

    def _peeked_keys(self, account_id: str, slot: str) -> list[str]:
        return [self.keys.key_for(account_id, TOKEN, slot), self.keys.key_for(account_id, FAILURE, slot)]

    def put(self, account_id: str, generation: str, slot: str, token: CachedToken) -> bool:
        """Cache a token until `token.cached_until`; False if the account changed meanwhile."""
        ttl_ms = int((token.cached_until - self.clock()) * 1000)
        if ttl_ms <= 0:
            return True
        value = json.dumps(
            {
                "t": token.access_token,
                "y": token.token_type,
                "s": token.scope,
                "u": token.cached_until,
                "r": token.refresh_from,
                **({"f": token.forced_at} if token.forced_at is not None else {}),
            }
        ).encode()
        sealed = self.sealer.seal(value, aad=self._aad(account_id, slot))
        return self._write(account_id, generation, TOKEN, slot, sealed, ttl_ms, activate=True, scope=token.scope)

    def put_failure(self, account_id: str, generation: str, slot: str, failure: Failure, ttl: int) -> bool:
        value = json.dumps({"code": failure.code, "retry_after": failure.retry_after})
        return self._write(account_id, generation, FAILURE, slot, value, ttl * 1000, activate=False, scope="")

    def lock(self, account_id: str, slot: str, *, blocking_timeout: float | None = None) -> Lock:
        """The slot's single-flight lock; it frees itself after LOCK_TIMEOUT if its holder dies."""
        lock: Lock = self.redis.lock(
            self.keys.key_for(account_id, LOCK, slot),
            timeout=tunables.LOCK_TIMEOUT,
            sleep=tunables.LOCK_POLL_INTERVAL,
            blocking_timeout=blocking_timeout,
            thread_local=False,  # a refresh-ahead lock is taken in the request, released by a thread
        )
        return lock

    def _write(
        self,
        account_id: str,
        generation: str,
        kind: str,
        slot: str,
        value: bytes | str,
        ttl_ms: int,
        *,
        activate: bool,
        scope: str,
    ) -> bool:
        with store_errors():
            done = self._put(
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                slot_key=self.keys.key_for(account_id, kind, slot),
                revoked=self.keys.revoked(self.keys.group_of(account_id)),
                generation=generation,
                value=value,
                ttl_ms=max(1, ttl_ms),
                is_token="1" if activate else "0",
                now=int(self.clock()),
                account_id=account_id,
                channel=self.keys.channel,
                scope=scope,  # the granted scope, for account.verified
                **self.outbox.script_args(account_id),
            )
        return bool(done)

    def _open(self, account_id: str, slot: str, sealed: bytes | None) -> CachedToken | None:
        if sealed is None:
            return None
        try:
            data = json.loads(self.sealer.open(sealed, aad=self._aad(account_id, slot)))
            return CachedToken(
                access_token=data["t"],
                token_type=data["y"],
                scope=data["s"],
                cached_until=float(data["u"]),
                refresh_from=float(data["r"]),
                forced_at=float(data["f"]) if data.get("f") is not None else None,
            )
        except (SealError, ValueError, KeyError, TypeError) as exc:
            # A cache entry that does not open is treated as a miss: the token is simply fetched again.
            log.warning("cached token of account %s does not open (%s); fetching a new one", account_id, exc)
            return None


def _failure(raw: bytes | None) -> Failure | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Failure(code=str(data["code"]), retry_after=int(data["retry_after"]))
    except (ValueError, KeyError, TypeError):
        return None
