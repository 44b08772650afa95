"""Requests of one worker that miss memory together read Redis once (auth.memory.shared), on a real redis-server.

Redis is paused (CLIENT PAUSE) while the requests arrive, so that all of them are in flight at once
whatever the machine's speed; without sharing, each sends its own read and queues for a pooled
connection.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from tests.integration.test_managed_keys import bearer, create
from tests.support.constants import ACCOUNT

pytestmark = pytest.mark.topologies("single")  # CLIENT PAUSE of the one server

TOKEN = f"/v1/accounts/{ACCOUNT}/token"
AT_ONCE = 20
PAUSE_MS = 700  # shorter than the window a read is joined within (SHARED_READ_WINDOW)
# For a request that must not join: paused longer, so it surely arrives while the first still reads.
LONG_PAUSE_MS = 1500


def calls(redis_client, command: str) -> int:
    return int(redis_client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def all_at_once(app, headers: dict[str, str], redis_client) -> list[tuple[int, str]]:
    """AT_ONCE token requests to `app`, sent while Redis is paused; (status, token) of each."""

    def one(_: int) -> tuple[int, str]:
        response = app.test_client().get(TOKEN, headers=headers)
        return response.status_code, (response.get_json() or {}).get("access_token", "")

    with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
        redis_client.client_pause(PAUSE_MS, all=True)
        return list(pool.map(one, range(AT_ONCE)))


def test_a_new_worker_reads_a_token_once_for_all_its_first_requests(
    app, make_app, installer, auth_headers, redis_client, sim
):
    installer.install()
    token = app.test_client().get(TOKEN, headers=auth_headers).get_json()["access_token"]
    fresh = make_app()  # another worker: its memory holds nothing yet
    before, summaries = calls(redis_client, "get"), calls(redis_client, "hmget")
    answers = all_at_once(fresh, auth_headers, redis_client)
    assert answers == [(200, token)] * AT_ONCE
    # One look at the slot for all of them: its token and failure marker (GET, GET), the account's summary.
    assert (calls(redis_client, "get") - before, calls(redis_client, "hmget") - summaries) == (2, 1)
    assert sim.token_requests == 1


def test_a_new_worker_looks_a_managed_key_up_once_for_all_its_first_requests(
    app, make_app, installer, redis_client, sim
):
    installer.install()
    key = create(app, "sync", "--allow", "token:read")
    token = app.test_client().get(TOKEN, headers=bearer(key)).get_json()["access_token"]
    fresh = make_app()
    before = calls(redis_client, "hgetall")
    answers = all_at_once(fresh, bearer(key), redis_client)
    assert answers == [(200, token)] * AT_ONCE
    assert calls(redis_client, "hgetall") - before == 1


def in_a_read(reads) -> None:
    """Wait until a request is inside a shared read (held there by the paused Redis)."""
    for _ in range(400):
        if len(reads):
            return
        time.sleep(0.001)
    raise AssertionError("no read began")


def test_a_read_begun_before_this_worker_heard_of_a_change_is_not_joined(
    app, make_app, installer, auth_headers, redis_client
):
    installer.install()
    app.test_client().get(TOKEN, headers=auth_headers)
    fresh = make_app()
    services = fresh.extensions["vault"]
    before, summaries = calls(redis_client, "get"), calls(redis_client, "hmget")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        redis_client.client_pause(LONG_PAUSE_MS, all=True)
        first = pool.submit(lambda: fresh.test_client().get(TOKEN, headers=auth_headers).status_code)
        in_a_read(services.tokens.reads)
        services.tokens.local.invalidate(ACCOUNT)  # what hearing of a change to the account does
        second = pool.submit(lambda: fresh.test_client().get(TOKEN, headers=auth_headers).status_code)
        assert (first.result(), second.result()) == (200, 200)
    assert (calls(redis_client, "get") - before, calls(redis_client, "hmget") - summaries) == (4, 2)  # two looks


def test_a_forced_refresh_never_joins_a_read(app, make_app, installer, auth_headers, redis_client, sim):
    installer.install()
    old = app.test_client().get(TOKEN, headers=auth_headers).get_json()["access_token"]
    fresh = make_app()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        redis_client.client_pause(LONG_PAUSE_MS, all=True)
        plain = pool.submit(lambda: fresh.test_client().get(TOKEN, headers=auth_headers).get_json())
        in_a_read(fresh.extensions["vault"].tokens.reads)
        forced = pool.submit(
            lambda: fresh.test_client().get(TOKEN + "?force_refresh=true", headers=auth_headers).get_json()
        )
        assert plain.result()["access_token"] == old
        assert forced.result()["access_token"] != old
    assert sim.token_requests == 2


def test_a_key_lookup_begun_before_the_keys_changed_is_not_joined(app, make_app, installer, redis_client):
    installer.install()
    key = create(app, "sync", "--allow", "token:read")
    app.test_client().get(TOKEN, headers=bearer(key))
    fresh = make_app()
    callers = fresh.extensions["vault"].api_keys
    before = calls(redis_client, "hgetall")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        redis_client.client_pause(LONG_PAUSE_MS, all=True)
        first = pool.submit(lambda: fresh.test_client().get(TOKEN, headers=bearer(key)).status_code)
        in_a_read(callers._reads)
        callers.memory.clear()  # what hearing that the managed keys changed does
        second = pool.submit(lambda: fresh.test_client().get(TOKEN, headers=bearer(key)).status_code)
        assert (first.result(), second.result()) == (200, 200)
    assert calls(redis_client, "hgetall") - before == 2
