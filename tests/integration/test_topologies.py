"""`vault.store.connect` on each topology: real clusters and sentinels, their pools, errors and failover."""

from __future__ import annotations

import time

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, MasterDownError, MovedError, SlotNotCoveredError, TryAgainError
from redis.sentinel import MasterNotFoundError

from core import tunables
from core.config import RedisTopology
from core.errors import StoreUnavailable
from tests.support.redis_server import SENTINEL_MASTER
from vault.store import BlockingSentinelConnectionPool, ServiceCluster, connect, store_errors

CLUSTER = RedisTopology("cluster")


def sentinel_topology(sentinel_set, password: str | None = None) -> RedisTopology:
    ports = tuple(("127.0.0.1", port) for port in sentinel_set.sentinel_ports)
    return RedisTopology("sentinel", sentinels=ports, sentinel_master=SENTINEL_MASTER, sentinel_password=password)


@pytest.mark.parametrize(
    "error",
    [
        ClusterDownError("CLUSTERDOWN"),
        MasterDownError("MASTERDOWN"),
        MovedError("3999 127.0.0.1:6381"),
        TryAgainError("TRYAGAIN"),
        SlotNotCoveredError("slot 5 not covered"),  # not a RedisError: redis-py's own cluster exception
        MasterNotFoundError("no master itv"),
    ],
)
def test_cluster_and_sentinel_errors_are_store_unavailable(error):
    with pytest.raises(StoreUnavailable):
        with store_errors():
            raise error


def test_cluster_client_with_bounded_blocking_pools_per_node(redis_cluster, cluster_client):
    client = connect(redis_cluster.url, max_connections=3, topology=CLUSTER)
    assert isinstance(client, ServiceCluster) and isinstance(client, RedisCluster)
    for n in range(20):
        client.set(f"{{k{n}}}", n)
    assert {int(client.get(f"{{k{n}}}")) for n in range(20)} == set(range(20))
    nodes = client.get_primaries()
    assert len(nodes) == 3
    pool = client.get_redis_connection(nodes[0]).connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool) and pool.max_connections == 3
    held = [pool.get_connection() for _ in range(3)]
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        pool.get_connection()  # a fourth waits for one, then gives up
    assert time.monotonic() - started >= tunables.REDIS_POOL_TIMEOUT - 0.1
    for connection in held:
        pool.release(connection)
    # No resend after a timeout: only connection errors and a cluster that is down are tried again.
    assert redis.exceptions.TimeoutError not in ServiceCluster.ERRORS_ALLOW_RETRY
    assert redis.exceptions.TimeoutError in RedisCluster.ERRORS_ALLOW_RETRY  # what the stock client would do
    client.close()


def test_cluster_unreachable_at_start_is_store_unavailable():
    from tests.support.redis_server import free_port

    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        connect(f"redis://127.0.0.1:{free_port()}", topology=CLUSTER)
    assert time.monotonic() - started < tunables.REDIS_CONNECT_TIMEOUT * 3 + 3


def test_sentinel_master_client_with_a_bounded_blocking_pool(sentinel_set):
    sentinel_set.heal()
    client = connect("redis://ignored:1/0", max_connections=2, topology=sentinel_topology(sentinel_set))
    client.set("sentinel-key", "v")
    assert client.get("sentinel-key") == b"v"
    assert client.info("replication")["role"] == "master"
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool) and pool.max_connections == 2
    assert pool.master_address == ("127.0.0.1", sentinel_set.current_master().port)
    held = [pool.get_connection() for _ in range(2)]
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        pool.get_connection()
    assert time.monotonic() - started >= tunables.REDIS_POOL_TIMEOUT - 0.1
    for connection in held:
        pool.release(connection)
    assert client.get("sentinel-key") == b"v"
    client.delete("sentinel-key")
    client.close()


def test_sentinels_get_the_password_and_tls_explicitly(sentinel_set):
    """redis-py's Sentinel gives its sentinels no password unless told: they get REDIS_URL's, or their own."""
    url = "rediss://user1:master-pass@ignored:1/3"
    same = connect(url, tls_verify=False, topology=sentinel_topology(sentinel_set))
    own = connect(url, topology=sentinel_topology(sentinel_set, password="sentinel-pass"))
    none = connect(url, topology=sentinel_topology(sentinel_set, password=""))

    def sentinel_kwargs(client):
        return client.connection_pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs

    assert sentinel_kwargs(same)["password"] == "master-pass" and sentinel_kwargs(same)["username"] == "user1"
    assert sentinel_kwargs(same)["ssl_cert_reqs"] == "none"
    assert sentinel_kwargs(own)["password"] == "sentinel-pass" and sentinel_kwargs(own).get("username") is None
    assert sentinel_kwargs(none).get("password") is None
    for client in (same, own, none):
        pool = client.connection_pool
        assert pool.connection_kwargs["password"] == "master-pass" and pool.connection_kwargs["db"] == 3
        assert "SSL" in pool.connection_class.__name__  # the master over TLS...
        sentinel_pool = client.connection_pool.sentinel_manager.sentinels[0].connection_pool
        assert "SSL" in sentinel_pool.connection_class.__name__  # ...and the sentinels too


@pytest.mark.slow
def test_sentinel_client_follows_a_failover_without_a_new_client(sentinel_set):
    sentinel_set.heal()
    client = connect("redis://ignored:1/0", topology=sentinel_topology(sentinel_set))
    client.set("before", "1")
    client.execute_command("WAIT", 1, 1000)
    killed = sentinel_set.kill_master()
    started, errors = time.monotonic(), 0
    while True:
        try:
            with store_errors():
                client.set("after", "2")
            break
        except StoreUnavailable:
            errors += 1
            assert time.monotonic() - started < 20, "no new master within 20 s"
            time.sleep(0.1)
    print(f"sentinel failover: {time.monotonic() - started:.1f} s unavailable")
    assert errors >= 1
    assert client.get("before") == b"1"  # acknowledged by the replica before the kill
    assert client.connection_pool.master_address[1] != killed.port
    sentinel_set.restart(killed)
    client.delete("before", "after")
    client.close()
