"""The Redis connection and its errors: every Redis failure leaves this layer as `StoreUnavailable`.

`connect` reaches one of three topologies (core.config.RedisTopology): a single server, a Redis
Cluster (redis-py's `RedisCluster`), or the master that Sentinel names (`Sentinel.master_for`).
Each keeps the same promises: bounded socket and connect timeouts, a bounded pool of connections
per server that a command waits for (REDIS_POOL_TIMEOUT) and never beyond, and a command sent again
only after a connection error, never after a timeout (a timed-out script may have run). After a
failover each finds the new master by itself: the cluster client re-reads the slot map after a
connection error or a MOVED, and the Sentinel pool asks the sentinels again on every reconnect
(and drops a connection whose server answers as a replica). Meanwhile commands fail with
StoreUnavailable, which the API answers 503 with Retry-After.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from core import tunables
from core.config import SINGLE, RedisTopology
from core.errors import StoreUnavailable

log = logging.getLogger(__name__)

# Errors no Redis topology raises as a RedisError: redis-py's cluster client raises these (a slot no
# node serves during a failover, a cluster it cannot reach at all) as plain Exceptions.
STORE_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.RedisError, RedisClusterException)


def _retry() -> Retry:
    # A command is sent again only after a connection error (reconnecting), never after a timeout:
    # a timed-out script may have run, and running it again would append its event twice.
    return Retry(
        ExponentialWithJitterBackoff(cap=0.2, base=0.02),
        tunables.REDIS_RETRIES,
        supported_errors=(redis.exceptions.ConnectionError,),
    )


def _socket_options() -> dict[str, Any]:
    return {
        "socket_timeout": tunables.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": tunables.REDIS_CONNECT_TIMEOUT,
        "health_check_interval": tunables.REDIS_HEALTH_CHECK_INTERVAL,
    }


def _tls_options(tls_verify: bool) -> dict[str, Any]:
    """`tls_verify=False` accepts a self-signed certificate (Heroku Redis)."""
    return {} if tls_verify else {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


def connect(
    url: str, *, tls_verify: bool = True, max_connections: int = 8, topology: RedisTopology = SINGLE
) -> redis.Redis:
    """A client with timeouts, for `topology`; `tls_verify=False` accepts a self-signed certificate.

    At most `max_connections` are opened to each server (a Redis plan limits its clients, and many
    requests in flight would otherwise open one each); a command waits up to REDIS_POOL_TIMEOUT
    for a free one, then fails with a ConnectionError, i.e. StoreUnavailable.

    A cluster client is returned typed as `redis.Redis`: it answers every command the service sends
    (each touches one slot) the same way, and `is_cluster` tells the few places that differ.
    """
    if topology.kind == "cluster":
        return cast(redis.Redis, _cluster(url, tls_verify=tls_verify, max_connections=max_connections))
    if topology.kind == "sentinel":
        return _sentinel_master(url, topology, tls_verify=tls_verify, max_connections=max_connections)
    options: dict[str, Any] = {**_socket_options(), "retry": _retry()}
    if url.startswith("rediss://"):
        options.update(_tls_options(tls_verify))
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=tunables.REDIS_POOL_TIMEOUT, **options
    )
    return redis.Redis.from_pool(pool)


def is_cluster(client: Any) -> bool:
    """Whether `client` is a Redis Cluster client (its pipelines, SCAN and pub/sub are per node)."""
    return isinstance(client, RedisCluster)


class ServiceCluster(RedisCluster):
    """redis-py's cluster client, retrying a command after a connection error or a cluster that is
    down (both re-read the slot map first) but never after a timeout (the stock client does)."""

    ERRORS_ALLOW_RETRY = (redis.exceptions.ConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]


def _cluster(url: str, *, tls_verify: bool, max_connections: int) -> ServiceCluster:
    """The cluster that the node named by `url` belongs to (the others are discovered from it).

    Its nodes are reached with the URL's password and TLS; each node gets its own blocking pool of
    `max_connections`. A node must answer at start-up (redis-py reads the slot map when the client
    is built): tried for a few seconds, then StoreUnavailable.
    """
    options: dict[str, Any] = {
        **_socket_options(),
        "connection_pool_class": redis.BlockingConnectionPool,
        "max_connections": max_connections,
        "timeout": tunables.REDIS_POOL_TIMEOUT,  # the blocking pool's wait for a free connection
        # A slot without a master during a failover fails its commands, not the whole client.
        "require_full_coverage": False,
        "retry": _retry(),
    }
    if url.startswith("rediss://"):
        options.update(_tls_options(tls_verify))
    deadline = time.monotonic() + tunables.REDIS_CONNECT_TIMEOUT * 3
    while True:
        try:
            return ServiceCluster(url=url, **options)
        except STORE_ERRORS as exc:
            if time.monotonic() > deadline:
                log.warning("redis cluster unreachable at start-up: %s", type(exc).__name__)
                raise StoreUnavailable() from exc
            time.sleep(0.2)


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (the master's address asked of the sentinels on every connect) with the blocking
    pool's bound: at most `max_connections`, a command waits `timeout` for one instead of failing at once."""


def _sentinel_master(url: str, topology: RedisTopology, *, tls_verify: bool, max_connections: int) -> redis.Redis:
    """A client of the master the sentinels name `topology.sentinel_master`; `url` gives its username,
    password, database and TLS (its host and port are not used)."""
    parsed: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    tls = parsed.get("connection_class") is SSLConnection
    auth = {k: parsed[k] for k in ("username", "password") if parsed.get(k)}
    common = {**_socket_options(), **(_tls_options(tls_verify) if tls else {}), "ssl": tls}
    sentinel_auth = auth if topology.sentinel_password is None else {}
    if topology.sentinel_password:
        sentinel_auth = {"password": topology.sentinel_password}
    # redis-py gives the sentinels only the socket options unless told: password and TLS explicitly.
    sentinel_kwargs = {**common, **sentinel_auth, "retry": _retry()}
    sentinel = Sentinel(list(topology.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        topology.sentinel_master,
        connection_pool_class=BlockingSentinelConnectionPool,
        max_connections=max_connections,
        timeout=tunables.REDIS_POOL_TIMEOUT,
        db=parsed.get("db", 0),
        retry=_retry(),
        **common,
        **auth,
    )
    return master


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn any Redis error into StoreUnavailable (the message never echoes the URL)."""
    try:
        yield
    except STORE_ERRORS as exc:
        # The type only: a Redis error message can quote the command's arguments.
        log.warning("redis unavailable: %s", type(exc).__name__)
        raise StoreUnavailable() from exc
