"""Whether the store answers, and whether it is configured not to lose credential records."""

from __future__ import annotations

import redis

from vault.store import store_errors


class StoreHealth:
    """Probes for /readyz (the Redis client is passed in)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def ping(self) -> bool:
        with store_errors():
            return bool(self.redis.ping())

    def eviction_policy(self) -> str | None:
        """Redis's maxmemory-policy (from INFO, which managed Redis allows where CONFIG is not).

        None when the server does not say (a Redis-compatible store without INFO): unknown, not down.
        """
        with store_errors():
            try:
                return self.redis.info("memory").get("maxmemory_policy")
            except redis.exceptions.ResponseError:
                return None
