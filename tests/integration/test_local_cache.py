"""The in-process token cache: hits skip Redis, and no worker serves a dropped token past the bound."""

import concurrent.futures
import time

import pytest
import requests
from redis.cluster import RedisCluster

from tests.support.gunicorn import GunicornServer, WorkerConnections

# Issue 18: every test here runs on a single Redis and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.topologies("single", "cluster")

ACCOUNT = "acc-local"


def redis_gets(redis_client) -> int:
    """GET commands served so far (on a cluster: by every master)."""
    if isinstance(redis_client, RedisCluster):
        stats = list(redis_client.info("commandstats", target_nodes=RedisCluster.PRIMARIES).values())
    else:
        stats = [redis_client.info("commandstats")]
    return sum(int(s.get("cmdstat_get", {}).get("calls", 0)) for s in stats)


def wait_until_memory_is_trusted(client, auth_headers, redis_client):
    """The listener starts with the first token request; wait for hits that skip Redis."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = redis_gets(redis_client)
        client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers)
        if redis_gets(redis_client) == before:
            return
        time.sleep(0.05)
    raise AssertionError("the in-process cache never took over")


def test_hits_are_served_from_memory(client, install, auth_headers, redis_client, sim):
    install(ACCOUNT)
    first = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).get_json()
    wait_until_memory_is_trusted(client, auth_headers, redis_client)
    before = redis_gets(redis_client)
    for _ in range(50):
        body = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).get_json()
        assert body["access_token"] == first["access_token"]
        assert 0 < body["expires_in"] <= first["expires_in"]
    assert redis_gets(redis_client) - before == 0
    assert sim.token_requests == 1


def test_this_process_forgets_at_once_on_delete_reinstall_and_force_refresh(
    client, install, auth_headers, redis_client
):
    install(ACCOUNT)
    old = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).get_json()["access_token"]
    wait_until_memory_is_trusted(client, auth_headers, redis_client)

    new = client.get(f"/v1/accounts/{ACCOUNT}/token?force_refresh=true", headers=auth_headers).get_json()
    assert new["access_token"] != old
    assert (
        client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).get_json()["access_token"]
        == new["access_token"]
    )

    install(ACCOUNT)  # re-install through the callback (another thread of the same app)
    after = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).get_json()["access_token"]
    assert after not in (old, new["access_token"])

    assert client.delete(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 204
    assert client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).status_code == 404


@pytest.mark.topologies("single")  # stops the one server; the cluster: tests/integration/test_failover.py
def test_memory_is_not_trusted_while_redis_is_down(client, install, auth_headers, redis_client, redis_server):
    install(ACCOUNT)
    client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers)
    wait_until_memory_is_trusted(client, auth_headers, redis_client)
    redis_server.stop()
    time.sleep(1.0)  # the staleness bound
    response = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "store_unavailable"


def wait_until_worker_serves_from_memory(workers: WorkerConnections, pid: int, redis_client) -> str:
    """The same wait on one gunicorn worker; returns the token it then serves from memory."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = redis_gets(redis_client)
        status, body = workers.get(pid, f"/v1/accounts/{ACCOUNT}/token")
        assert status == 200, body
        if redis_gets(redis_client) == before:
            return body["access_token"]
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} never served the token from memory")


@pytest.mark.slow
def test_every_worker_stops_serving_a_dropped_token_within_one_second(env, install, auth_headers, redis_client):
    server = GunicornServer(env, workers=4).start()
    url = f"{server.url}/v1/accounts/{ACCOUNT}/token"
    workers = None
    try:
        install(ACCOUNT)
        old = requests.get(url, headers=auth_headers, timeout=20).json()["access_token"]
        workers = WorkerConnections(server, auth_headers)  # one keep-alive connection per worker
        assert len(workers.by_worker) == 4

        def hit(_):
            r = requests.get(url, headers=auth_headers, timeout=20)  # a new connection each: any worker
            return r.status_code, (r.json().get("access_token") if r.status_code == 200 else None)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            for _ in range(3):  # warm every worker's memory
                assert {s for s, _t in pool.map(hit, range(64))} == {200}
                time.sleep(0.3)
            # Every worker serves the old token from its memory: a request to it costs no Redis GET.
            for pid in workers.by_worker:
                assert wait_until_worker_serves_from_memory(workers, pid, redis_client) == old

            with requests.Session() as session:  # keep-alive: the same worker
                refreshed = session.get(url + "?force_refresh=true", headers=auth_headers, timeout=20).json()
                assert refreshed["access_token"] != old
                for _ in range(20):  # the worker that refreshed never hands out the old token again
                    assert session.get(url, headers=auth_headers, timeout=20).json()["access_token"] != old

            time.sleep(1.0)
            for pid in workers.by_worker:  # each worker that held the old token in memory
                status, body = workers.get(pid, f"/v1/accounts/{ACCOUNT}/token")
                assert (status, body["access_token"]) == (200, refreshed["access_token"]), pid
            tokens = {t for _s, t in pool.map(hit, range(200))}
            assert tokens == {refreshed["access_token"]}

            for pid in workers.by_worker:  # memory warm again, now with the refreshed token
                assert wait_until_worker_serves_from_memory(workers, pid, redis_client) == refreshed["access_token"]
            with requests.Session() as session:
                assert (
                    session.delete(f"{server.url}/v1/accounts/{ACCOUNT}", headers=auth_headers, timeout=20).status_code
                    == 204
                )
                assert session.get(url, headers=auth_headers, timeout=20).status_code == 404
            time.sleep(1.0)
            for pid in workers.by_worker:
                assert workers.get(pid, f"/v1/accounts/{ACCOUNT}/token")[0] == 404, pid
            assert {s for s, _t in pool.map(hit, range(200))} == {404}
    finally:
        if workers is not None:
            workers.close()
        server.stop()


@pytest.mark.topologies("single")  # holds the gap with one server's password; the cluster feed: test_topology_feed.py
def test_what_memory_learnt_while_the_feed_was_down_is_forgotten_when_it_is_back(redis_client):
    """A key revoked (or a token dropped) while this worker heard nothing must not stay remembered.

    The gap is held open: a password makes every reconnection fail until it is removed again.
    """
    from auth.memory import WorkerMemory
    from auth.memory.keycache import MISSING
    from tests.support.flows import wait_for

    memory = WorkerMemory(redis_client, "test:changes:gap")
    losses = []
    lost = memory.listener.on_lost
    memory.listener.on_lost = lambda: (losses.append(1), lost())
    try:
        memory.listener.fresh()  # starts the listener
        wait_for(memory.listener.fresh)
        seen = len(losses)
        redis_client.config_set("requirepass", "gap-0123456789")  # open connections stay authenticated
        for client in redis_client.client_list():
            if int(client.get("sub", 0)):  # the listener's subscribed connection
                redis_client.client_kill_filter(_id=client["id"])
        wait_for(lambda: len(losses) > seen and not memory.listener.fresh())
        # In the gap a lookup in Redis is remembered; a revocation published now is heard by no one.
        record = object()
        memory.keys.remember("digest-1", record, memory.keys.epoch)  # type: ignore[arg-type]
        assert memory.keys._known.get("digest-1") is record
    finally:
        redis_client.config_set("requirepass", "")
    try:
        wait_for(lambda: memory.listener.fresh() and memory.keys.get("digest-1") is MISSING)
    finally:
        memory.stop()
