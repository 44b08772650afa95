"""Replica acknowledgement: a credential write counts as done only once a replica holds it (`WAIT`).

Redis replicates asynchronously, so a master that fails right after answering may lose the write,
and a promoted replica would lack an install that Trackunit was told succeeded. `Replicas.run`
sends the write's script and `WAIT n timeout` in one pipeline on one connection, because WAIT
counts the writes of the connection that issued it: on a single server or a Sentinel master that
is the client's own pipeline; on a Redis Cluster it is a pipeline on the connection to the master
that serves the key's slot (a cluster pipeline would send the keyless WAIT to any node).

It asks for min(REDIS_WAIT_REPLICAS, replicas connected to that master): WAIT with no replica
would block for its whole timeout, so a master without replicas (a single Redis, or a promoted
replica whose old master is gone) is not waited for. The count is of the replicas `INFO replication`
lists as online (one still in its first sync acknowledges nothing yet), cached per master for
REPLICA_COUNT_TTL seconds. Fewer acknowledgements than asked within the
timeout raise StoreUnavailable (the API answers 503 with Retry-After, and Trackunit retries the
install, which is idempotent): the write is on the master, but the service does not claim it safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError

from core.errors import StoreUnavailable
from vault.store import is_cluster, store_errors

log = logging.getLogger(__name__)

# Seconds a master's count of connected replicas is trusted before INFO is asked again.
REPLICA_COUNT_TTL = 3.0
# Seconds since a replica's last acknowledgement (INFO's `lag`) after which it is not waited for.
REPLICA_MAX_LAG = 2


class Replicas:
    """Runs credential writes so that they are answered only once `wanted` replicas (or all connected) hold them."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        wanted: int,
        timeout_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.wanted = wanted
        self.timeout_ms = timeout_ms
        self._clock = clock
        self._counts: dict[str, tuple[float, int]] = {}  # master name -> (read at, connected replicas)
        self._lock = threading.Lock()
        self.shortfalls = 0  # writes whose acknowledgement fell short (for tests and metrics)

    def run(self, script: Any, key: str, /, **named: Any) -> Any:
        """Run `script(**named)` (a vault.scripts.Script whose keys include `key`), then wait for the replicas.

        Returns the script's result; raises StoreUnavailable when Redis fails or too few replicas
        acknowledge the write within the timeout.
        """
        with store_errors():
            if self.wanted == 0:
                return script(**named)
        return self.run_many([(script, key, named)])[0]

    def run_many(self, calls: Sequence[tuple[Any, str | bytes, dict[str, Any]]]) -> list[Any]:
        """Run many scripts, each `(script, key, named)` as for `run`, pipelined: one pipeline per master
        (on a cluster, the masters of the keys' slots), each ended by one WAIT. The results in call order.

        redis-py refuses scripts in a cluster pipeline; this is how a batch of them runs on a cluster.
        A StoreUnavailable leaves some of the scripts run and others not: each must be safe to run again.
        """
        with store_errors():
            if not is_cluster(self.client):
                return self._pipeline_on(self.client, "master", calls)
            return self._on_cluster(calls, retry_moved=True)

    def _on_cluster(self, calls: Sequence[tuple[Any, str | bytes, dict[str, Any]]], *, retry_moved: bool) -> list[Any]:
        cluster: Any = self.client
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for index, (_script, key, _named) in enumerate(calls):
            node = cluster.get_node_from_key(key)
            by_node.setdefault(node.name, (node, []))[1].append(index)
        results: list[Any] = [None] * len(calls)
        for name, (node, indexes) in by_node.items():
            batch = [calls[i] for i in indexes]
            try:
                done = self._pipeline_on(cluster.get_redis_connection(node), name, batch)
            except MovedError:
                # The slots moved (a failover): this node ran none of them; learn the new map, try once more.
                cluster.nodes_manager.initialize()
                if not retry_moved:
                    raise
                done = self._on_cluster(batch, retry_moved=False)
            except RedisConnectionError:
                # The master is gone: learn the new map for the next write, and fail this one.
                self._forget(name)
                _refresh_quietly(cluster)
                raise
            for i, result in zip(indexes, done):
                results[i] = result
        return results

    def _pipeline_on(
        self, server: redis.Redis, name: str, calls: Sequence[tuple[Any, str | bytes, dict[str, Any]]]
    ) -> list[Any]:
        replicas = min(self.wanted, self._connected(server, name)) if self.wanted else 0
        if replicas == 0 and len(calls) == 1:
            script, _key, named = calls[0]
            return [script(client=server, **named)]  # one round trip, no pipeline
        pipe = server.pipeline(transaction=False)
        for script, _key, named in calls:
            script(client=pipe, **named)
        if replicas:
            pipe.execute_command("WAIT", replicas, self.timeout_ms)  # type: ignore[no-untyped-call]
        try:
            results: list[Any] = pipe.execute()
        except RedisConnectionError:
            self._forget(name)
            raise
        if not replicas:
            return results
        acked = int(results.pop())
        if acked < replicas:
            self.shortfalls += 1
            self._forget(name)  # the replica may be gone: count again before the next write
            log.warning(
                "replica acknowledgement short: %d of %d replicas within %d ms; answered unavailable",
                acked,
                replicas,
                self.timeout_ms,
            )
            raise StoreUnavailable()
        return results

    def _connected(self, server: redis.Redis, name: str) -> int:
        now = self._clock()
        cached = self._counts.get(name)
        if cached is not None and now - cached[0] < REPLICA_COUNT_TTL:
            return cached[1]
        try:
            replication = server.info("replication")
        except redis.exceptions.ResponseError:
            replication = {}  # a Redis-compatible store without INFO (the dev server's fakeredis): no replicas known
        # Replicas still in their first sync are connected but acknowledge nothing until it ends, and one
        # silent for longer than REPLICA_MAX_LAG (frozen, cut off: the master keeps it listed until
        # repl-timeout, 60 s by default) would fail every write for that long: neither is counted.
        online = [
            value
            for field, value in replication.items()
            if field.startswith("slave")
            and isinstance(value, dict)
            and value.get("state") == "online"
            and int(value.get("lag", 0)) <= REPLICA_MAX_LAG
        ]
        count = len(online) if replication.get("role") == "master" else 0
        with self._lock:
            self._counts[name] = (now, count)
        return count

    def _forget(self, name: str) -> None:
        with self._lock:
            self._counts.pop(name, None)


def _refresh_quietly(cluster: Any) -> None:
    try:
        cluster.nodes_manager.initialize()
    except Exception:  # noqa: BLE001 - the cluster may be unreachable right now; the next command tries again
        pass
