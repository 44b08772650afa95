"""Replica acknowledgement (vault.replicas) on real servers: a master with a replica, a single server, a cluster."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from core.errors import StoreUnavailable
from core.permissions import KeyPolicy, parse_permissions
from tests.support.redis_server import RedisServer, info
from vault.layout import KeySpace
from vault.replicas import Replicas
from vault.store import connect

pytestmark = pytest.mark.slow


class WriteScript:
    """A one-key Lua write called as vault.scripts.Script is: keyword arguments, `client` may be a pipeline."""

    def __init__(self, client) -> None:
        self._script = client.register_script("redis.call('SET', KEYS[1], ARGV[1]); return ARGV[1]")

    def __call__(self, *, client=None, key: str, value: str):
        return self._script(keys=[key], args=[value], client=client)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its replica (replicaof), the link up."""
    master = RedisServer()
    master.start()
    replica = RedisServer(args=["--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    deadline = time.monotonic() + 10
    while info(master.port, "replication").get("slave0", {}).get("state") != "online" or (
        info(replica.port, "replication").get("master_link_status") != "up"
    ):
        assert time.monotonic() < deadline, "the replica did not connect"
        time.sleep(0.05)
    yield master, replica
    replica.stop()
    master.stop()


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """SIGSTOP: the server keeps its connections (its master still counts it) but answers nothing."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def test_run_returns_only_once_the_replica_holds_the_write(pair):
    master, replica = pair
    client = connect(master.url)
    replicas = Replicas(client, wanted=1, timeout_ms=1500)
    script = WriteScript(client)
    assert replicas.run(script, "k0", key="k0", value="v0") == b"v0"  # warm: the replica count is cached
    done = threading.Event()
    with paused(replica):
        worker = threading.Thread(target=lambda: (replicas.run(script, "k1", key="k1", value="v1"), done.set()))
        worker.start()
        # Without WAIT the write would be answered at once, before the paused replica could hold it.
        assert not done.wait(0.3), "answered before the replica acknowledged"
    worker.join(5)
    assert done.is_set()
    assert replica.client().get("k1") == b"v1"  # right after run() returned
    assert replicas.shortfalls == 0


def test_a_replica_that_does_not_answer_makes_the_write_unavailable_within_the_bound(pair, caplog):
    master, replica = pair
    client = connect(master.url)
    replicas = Replicas(client, wanted=1, timeout_ms=300)
    script = WriteScript(client)
    with paused(replica), caplog.at_level(logging.WARNING, "vault.replicas"):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            replicas.run(script, "k2", key="k2", value="secret-value-1")
        elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 1.5
    assert replicas.shortfalls == 1
    assert "replica acknowledgement short: 0 of 1" in caplog.text and "secret-value-1" not in caplog.text
    assert master.client().get("k2") == b"secret-value-1"  # written, but not claimed safe


def test_without_replicas_nothing_is_waited_for(single_redis):
    client = connect(single_redis.url)
    replicas = Replicas(client, wanted=1, timeout_ms=1500)
    script = WriteScript(client)
    started = time.monotonic()
    for n in range(5):
        assert replicas.run(script, f"solo{n}", key=f"solo{n}", value="v") == b"v"
    assert time.monotonic() - started < 1.0  # one WAIT 1 would block for 1.5 s
    client.delete(*(f"solo{n}" for n in range(5)))


def test_wanted_zero_never_waits(pair):
    master, replica = pair
    client = connect(master.url)
    replicas = Replicas(client, wanted=0, timeout_ms=1500)
    with paused(replica):
        started = time.monotonic()
        replicas.run(WriteScript(client), "k3", key="k3", value="v")
        assert time.monotonic() - started < 1.0


def _replica_of(cluster, master: RedisServer) -> RedisServer:
    replication = info(master.port, "replication")
    port = int(str(replication["slave0"]["port"]))
    return next(s for s in cluster.servers if s.port == port)


def test_on_a_cluster_the_write_waits_for_the_replica_of_its_slots_master(redis_cluster, cluster_client):
    client = connect(redis_cluster.url, topology=_cluster_topology())
    replicas = Replicas(client, wanted=1, timeout_ms=300)
    script = WriteScript(client)
    keys = [f"{{g{n}}}:cred" for n in range(12)]  # spread over the three masters
    for key in keys:
        assert replicas.run(script, key, key=key, value=key) == key.encode()
        replica = _replica_of(redis_cluster, redis_cluster.master_of(key))
        replica_client = replica.client()
        replica_client.execute_command("READONLY")
        assert replica_client.get(key) == key.encode()
        replica_client.close()
    assert len({redis_cluster.master_of(k).port for k in keys}) == 3
    key = keys[0]
    with paused(_replica_of(redis_cluster, redis_cluster.master_of(key))):
        with pytest.raises(StoreUnavailable):
            replicas.run(script, key, key=key, value="again")
    client.close()


def _cluster_topology():
    from core.config import RedisTopology

    return RedisTopology("cluster")


def test_a_redis_error_is_store_unavailable(single_redis):
    client = connect(single_redis.url)
    bad = client.register_script("return redis.error_reply('nope')")
    with pytest.raises(StoreUnavailable) as raised:
        Replicas(client, wanted=1, timeout_ms=100).run(
            lambda *, client=None, key: bad(keys=[key], client=client), "x", key="x"
        )
    assert isinstance(raised.value.__cause__, redis.exceptions.ResponseError)


def test_on_a_sentinel_master_the_write_waits_for_its_replica(sentinel_set):
    from core.config import RedisTopology
    from tests.support.redis_server import SENTINEL_MASTER

    sentinel_set.heal()
    ports = tuple(("127.0.0.1", port) for port in sentinel_set.sentinel_ports)
    client = connect("redis://ignored:1/0", topology=RedisTopology("sentinel", ports, SENTINEL_MASTER))
    replicas = Replicas(client, wanted=1, timeout_ms=300)
    script = WriteScript(client)
    master = sentinel_set.current_master()
    replica = next(s for s in sentinel_set.running() if s is not master)
    assert replicas.run(script, "sk", key="sk", value="v1") == b"v1"
    assert replica.client().get("sk") == b"v1"
    with paused(replica), pytest.raises(StoreUnavailable):
        replicas.run(script, "sk", key="sk", value="v2")
    client.delete("sk")
    client.close()


@pytest.mark.parametrize("wanted", [1, 0])
def test_run_many_pipelines_scripts_per_master_of_a_cluster(redis_cluster, cluster_client, wanted):
    """redis-py refuses scripts in a cluster pipeline: run_many sends one pipeline per master instead."""
    client = connect(redis_cluster.url, topology=_cluster_topology())
    replicas = Replicas(client, wanted=wanted, timeout_ms=300)
    script = WriteScript(client)
    keys = [f"{{b{n}}}:cred" for n in range(15)]
    assert len({redis_cluster.master_of(k).port for k in keys}) == 3
    results = replicas.run_many([(script, key, {"key": key, "value": f"v{n}"}) for n, key in enumerate(keys)])
    assert results == [f"v{n}".encode() for n in range(len(keys))]  # in call order, whichever master ran each
    for n, key in enumerate(keys):
        assert cluster_client.get(key) == f"v{n}".encode()
    if wanted:
        with paused(_replica_of(redis_cluster, redis_cluster.master_of(keys[0]))):
            with pytest.raises(StoreUnavailable):
                replicas.run_many([(script, key, {"key": key, "value": "again"}) for key in keys])
    client.close()


def test_run_many_on_a_single_server(single_redis):
    client = connect(single_redis.url)
    script = WriteScript(client)
    calls = [(script, f"m{n}", {"key": f"m{n}", "value": str(n)}) for n in range(5)]
    assert Replicas(client, wanted=1, timeout_ms=1500).run_many(calls) == [str(n).encode() for n in range(5)]
    client.delete(*(f"m{n}" for n in range(5)))


def test_an_install_is_answered_503_until_a_replica_holds_it(pair, make_app, installer):
    """The service wires it in: with the replica not answering, Trackunit gets 503 + Retry-After, then 200."""
    master, replica = pair
    master.client().flushall()
    app = make_app(REDIS_URL=master.url, REDIS_WAIT_TIMEOUT="200")
    vault = installer.to(app.test_client())
    assert vault.post(vault.message("acct-wait-1")).status_code == 200
    with paused(replica):
        refused = vault.post(vault.message("acct-wait-2"))
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert vault.post(vault.message("acct-wait-2")).status_code == 200  # Trackunit's retry
    keys = KeySpace("test")
    assert replica.client().exists(keys.key_for("acct-wait-1"), keys.key_for("acct-wait-2")) == 2
    master.client().flushall()


def test_a_managed_key_revocation_is_unavailable_until_a_replica_holds_it(pair, make_app):
    """A revocation lost in a failover would make a leaked key work again: it waits like an install."""
    master, replica = pair
    master.client().flushall()
    store = make_app(REDIS_URL=master.url, REDIS_WAIT_TIMEOUT="200").extensions["vault"].managed_keys
    assert store.create("sync", KeyPolicy(permissions=parse_permissions("token:read"))) is not None
    with paused(replica):
        with pytest.raises(StoreUnavailable):
            store.revoke("sync")
    # The master ran it (the operator's second run finds nothing left to revoke); the replica catches up.
    assert store.revoke("sync") is False
    deadline = time.monotonic() + 5
    while replica.client().hget(KeySpace("test").apikey_index, "sync") is not None:
        assert time.monotonic() < deadline, "the replica never got the revocation"
        time.sleep(0.05)
    master.client().flushall()


def test_a_store_without_info_has_no_replicas_to_wait_for():
    """A Redis-compatible store that refuses INFO (fakeredis, the dev server's): writes are not refused."""
    import fakeredis

    client = fakeredis.FakeRedis()
    assert Replicas(client, wanted=1, timeout_ms=100).run(WriteScript(client), "f", key="f", value="v") == b"v"
