"""The invalidation feed and the rate limiter on a Redis Cluster and on a Sentinel master, through failovers."""

from __future__ import annotations

import threading
import time

import pytest

from auth.memory.feed import InvalidationListener
from auth.ratelimit import RateLimiter
from core.config import RedisTopology
from core.errors import RateLimited
from core.permissions import RateLimit
from tests.support.redis_server import SENTINEL_MASTER
from vault.store import connect

pytestmark = pytest.mark.slow

CHANNEL = "test:invalidate"
PUBLISH = "redis.call('SET', KEYS[1], ARGV[2]); return redis.call('PUBLISH', ARGV[1], ARGV[2])"


class Heard:
    """What a listener told its cache: the ids changed, and how often it was lost (or confirmed anew)."""

    def __init__(self) -> None:
        self.changes: list[str] = []
        self.lost = 0
        self.event = threading.Event()

    def on_change(self, account_id: str) -> None:
        self.changes.append(account_id)
        self.event.set()

    def on_lost(self) -> None:
        self.lost += 1


def wait_until(check, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, what
        time.sleep(0.05)
    return time.monotonic() - started


def publish_until_heard(client, heard: Heard, key: str, account_id: str, timeout: float = 20.0) -> None:
    """A script on the key's master publishes; repeated (a failover may drop one) until the listener hears it."""
    script = client.register_script(PUBLISH)
    deadline = time.monotonic() + timeout
    while account_id not in heard.changes:
        assert time.monotonic() < deadline, f"{account_id} not heard"
        try:
            script(keys=[key], args=[CHANNEL, account_id])
        except Exception:  # noqa: BLE001 - during a failover the script's master may be gone
            pass
        heard.event.wait(0.3)
        heard.event.clear()


def sentinel_topology(sentinel_set) -> RedisTopology:
    ports = tuple(("127.0.0.1", port) for port in sentinel_set.sentinel_ports)
    return RedisTopology("sentinel", sentinels=ports, sentinel_master=SENTINEL_MASTER)


def test_cluster_feed_hears_scripts_on_every_master_and_comes_back_after_a_failover(redis_cluster, cluster_client):
    client = connect(redis_cluster.url, topology=RedisTopology("cluster"))
    heard = Heard()
    listener = InvalidationListener(client, CHANNEL, heard.on_change, heard.on_lost)
    try:
        listener.fresh()
        wait_until(listener.fresh, 10, "the subscription is not confirmed")
        keys = [f"{{g{n}}}:account" for n in range(12)]
        assert len({redis_cluster.master_of(k).port for k in keys}) == 3  # published from every master
        for n, key in enumerate(keys):
            publish_until_heard(client, heard, key, f"acct-{n}")
        # Kill the node the subscription is on (redis-py subscribes on the master of the channel's slot).
        subscribed = redis_cluster.master_of(CHANNEL)
        lost_before = heard.lost
        redis_cluster.kill_master(subscribed)
        wait_until(lambda: not listener.fresh(), 5, "memory still trusted with its node dead")
        recovery = wait_until(listener.fresh, 20, "the subscription did not come back after the failover")
        print(f"cluster feed: memory trusted again {recovery:.1f} s after it was lost")
        assert heard.lost > lost_before  # memory was cleared (lost, then the new subscription's confirmation)
        publish_until_heard(client, heard, keys[0], "after-failover")
    finally:
        listener.stop()
        redis_cluster.heal()
        client.close()


def test_sentinel_feed_comes_back_on_the_new_master(sentinel_set):
    sentinel_set.heal()
    client = connect("redis://ignored:1/0", topology=sentinel_topology(sentinel_set))
    heard = Heard()
    listener = InvalidationListener(client, CHANNEL, heard.on_change, heard.on_lost)
    try:
        listener.fresh()
        wait_until(listener.fresh, 10, "the subscription is not confirmed")
        publish_until_heard(client, heard, "k", "before")
        killed = sentinel_set.kill_master()
        wait_until(lambda: not listener.fresh(), 5, "memory still trusted with the master dead")
        recovery = wait_until(listener.fresh, 20, "the subscription did not come back after the failover")
        print(f"sentinel feed: memory trusted again {recovery:.1f} s after it was lost")
        publish_until_heard(client, heard, "k", "after-failover")
        assert sentinel_set.current_master() is not killed
    finally:
        listener.stop()
        sentinel_set.heal()
        client.close()


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_rate_limits_on_cluster_and_sentinel(kind, request):
    if kind == "cluster":
        request.getfixturevalue("cluster_client")
        cluster = request.getfixturevalue("redis_cluster")
        client = connect(cluster.url, topology=RedisTopology("cluster"))
    else:
        sentinel_set = request.getfixturevalue("sentinel_set")
        sentinel_set.heal()
        client = connect("redis://ignored:1/0", topology=sentinel_topology(sentinel_set))
    limiter = RateLimiter(client, f"test-{kind}:ratelimit")
    rate = RateLimit(3, "minute")
    for name in ("k1", "k2", "k3", "k4"):  # several keys: several slots on a cluster
        for _ in range(3):
            limiter.check(name, rate)
        with pytest.raises(RateLimited) as refused:
            limiter.check(name, rate)
        assert 0 < refused.value.retry_after <= 60
    # A second limiter (another worker) on the same Redis sees the same windows.
    with pytest.raises(RateLimited):
        RateLimiter(client, f"test-{kind}:ratelimit").check("k1", rate)
    client.close()
