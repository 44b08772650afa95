"""Whether the store answers, and whether it is configured not to lose credential records."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster

from vault.store import is_cluster, store_errors


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
        On a cluster, every master is asked: one that may evict is reported.
        """
        with store_errors():
            try:
                if not is_cluster(self.redis):
                    return self.redis.info("memory").get("maxmemory_policy")
                # Every master holds credentials: the first that may evict is the answer.
                found: dict[str, Any] = self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
            except redis.exceptions.ResponseError:
                return None
        # One answer per master, keyed by node; a cluster of one master answers with its INFO itself.
        answers = [found] if "maxmemory_policy" in found else list(found.values())
        policies = [
            str(node["maxmemory_policy"]) for node in answers if isinstance(node, dict) and "maxmemory_policy" in node
        ]
        return next((p for p in policies if p != "noeviction"), "noeviction" if policies else None)
