"""Per-key rate limits, shared by every worker and dyno: the `limits` library's moving window on Redis.

A request of a rate-limited key costs one Redis round trip (the library's acquire script). A
refused one costs a second, to read when the window frees (`Retry-After`); from then until that
moment this process refuses the key's requests without asking Redis, which is exact for a moving
window: no entry leaves it before its oldest does. Redis unreachable: StoreUnavailable (503 with
`Retry-After`), never a request let through unlimited.

The library works on the service's own client (`_ServiceClientStorage`), whatever the topology: a
window is one key, so on a Redis Cluster each acquire script runs on its slot's master, and on
Sentinel on the master the sentinels name. Its own `redis+cluster://` and `redis+sentinel://`
storages would build a second client per worker, with other timeouts and retries.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from core.errors import RateLimited
from core.permissions import RateLimit
from vault.store import store_errors

_ITEMS: dict[str, type[RateLimitItem]] = {
    "second": RateLimitItemPerSecond,
    "minute": RateLimitItemPerMinute,
    "hour": RateLimitItemPerHour,
    "day": RateLimitItemPerDay,
}


@functools.cache
def _item(rate: RateLimit) -> RateLimitItem:
    return _ITEMS[rate.period](rate.amount)


class _ServiceClientStorage(RedisStorage):
    """`limits`' Redis storage on the service's client (single, cluster or Sentinel master): its pools,
    timeouts and retry. Every command of the storage goes through `get_connection`, answered here."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self._client = client
        # The pool is never used (get_connection answers the service's client); it only keeps the base
        # class from building a client of its own from a URI. A pool opens no connection until asked.
        super().__init__("redis://", connection_pool=redis.ConnectionPool(), key_prefix=key_prefix)

    def get_connection(self, readonly: bool = False) -> Any:  # the service's client: redis.Redis or RedisCluster
        return self._client


class RateLimiter:
    """`check(name, rate)`: counts one request of the key `name`, or raises RateLimited with Retry-After."""

    def __init__(self, client: redis.Redis, prefix: str, clock: Callable[[], float] = time.time) -> None:
        # The service's own connection pool (its size, timeouts and retry): no second pool per worker.
        storage = _ServiceClientStorage(client, prefix)
        self._limiter = MovingWindowRateLimiter(storage)
        self._clock = clock
        self._refused_until: dict[tuple[str, RateLimit], float] = {}
        self._lock = threading.Lock()

    def check(self, name: str, rate: RateLimit) -> None:
        now = self._clock()
        until = self._refused_until.get((name, rate))
        if until is not None:
            if now < until:
                raise RateLimited(retry_after=math.ceil(until - now))
            with self._lock:
                self._refused_until.pop((name, rate), None)
        item = _item(rate)
        with store_errors():
            if self._limiter.hit(item, name):
                return
            reset = self._limiter.get_window_stats(item, name).reset_time
        with self._lock:
            self._refused_until[(name, rate)] = reset
        raise RateLimited(retry_after=math.ceil(reset - self._clock()))
