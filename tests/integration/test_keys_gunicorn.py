"""API keys under gunicorn as production runs it: a rate limit shared by the workers, revocation seen by every one.

`WorkerConnections` holds a keep-alive connection to each worker, so "every worker" is checked
on every worker. The managed keys are made with `ApiKeyStore` on the same Redis, as the CLI
(`flask --app app apikeys ...`, another process) makes them.
"""

from __future__ import annotations

import time

import pytest

from core import tunables
from core.config import Config
from core.permissions import KeyPolicy, parse_permissions, parse_rate
from tests.support.gunicorn import WorkerConnections
from vault.apikeys import ApiKeyStore
from vault.layout import KeySpace

RATE = 4  # per second


@pytest.fixture
def store(env, redis_client):
    config = Config.from_env(env)
    return ApiKeyStore(redis_client, config.keyring, KeySpace(config.key_prefix))


def test_a_rate_limit_is_shared_by_two_workers_429_with_retry_after_then_served_again(gunicorn, store):
    key = store.create("sync", KeyPolicy(parse_permissions("accounts:read"), rate=parse_rate(f"{RATE}/second")))
    server = gunicorn(workers=2)
    workers = WorkerConnections(server, {"Authorization": f"Bearer {key}"})
    try:
        first, second = sorted(workers.by_worker)
        for _attempt in range(3):  # a window is a second: on a busy machine a round may not fit in one
            time.sleep(1.1)  # an empty window
            started = time.monotonic()
            served_ = [workers.get(pid, "/v1/accounts")[0] for pid in (first, second) * (RATE // 2)]
            refused = [workers.get(pid, "/v1/accounts") for pid in (first, second)]
            if time.monotonic() - started < 0.8:
                break
        assert served_ == [200] * RATE  # the limit is the key's, not each worker's
        assert [status for status, _ in refused] == [429, 429]
        assert {body["error"]["code"] for _, body in refused} == {"rate_limited"}
        # Retry-After, as each worker computed it: read it from a fresh request to each.
        for pid in (first, second):
            conn = workers.by_worker[pid]
            conn.request("GET", "/v1/accounts", headers=workers.headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 429 and int(response.getheader("Retry-After")) == 1
        time.sleep(1.1)
        assert [workers.get(pid, "/v1/accounts")[0] for pid in (first, second)] == [200, 200]
    finally:
        workers.close()


def test_a_revoked_key_is_refused_by_every_worker_within_the_bound_and_never_logged(gunicorn, store):
    key = store.create("reporting", KeyPolicy(parse_permissions("accounts:read")))
    digest = store.digests.current(key)[1]
    server = gunicorn(workers=4)
    workers = WorkerConnections(server, {"Authorization": f"Bearer {key}"})
    try:
        # Every worker has the key in memory and trusts it (its feed is fresh after the first request).
        for _ in range(3):
            assert {workers.get(pid, "/v1/accounts")[0] for pid in workers.by_worker} == {200}
            time.sleep(0.1)
        assert store.revoke("reporting")
        revoked_at = time.monotonic()
        refused_after: dict[int, float] = {}
        while len(refused_after) < len(workers.by_worker) and time.monotonic() - revoked_at < 5:
            for pid in set(workers.by_worker) - set(refused_after):
                if workers.get(pid, "/v1/accounts")[0] == 401:
                    refused_after[pid] = time.monotonic() - revoked_at
        assert set(refused_after) == set(workers.by_worker)
        bound = tunables.INVALIDATION_MAX_STALENESS + 0.2  # the feed's bound plus a round trip
        assert max(refused_after.values()) < bound, refused_after
        # A key made now is served by every worker within the same bound.
        new = store.create("reporting", KeyPolicy(parse_permissions("accounts:read")))
        workers.headers = {"Authorization": f"Bearer {new}"}
        assert {workers.get(pid, "/v1/accounts")[0] for pid in workers.by_worker} == {200}
    finally:
        workers.close()
    server.stop()
    log = server.log()
    assert '"key_name": "reporting"' in log  # the request lines name the key
    for secret in (key, new, digest, store.digests.current(new)[1]):
        assert secret not in log
