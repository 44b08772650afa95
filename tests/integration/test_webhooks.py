"""Webhook delivery under gunicorn with several workers, a real redis-server and the simulator over HTTP.

Every delivery is checked by a receiver that verifies it with the `standardwebhooks` library
(tests/support/receiver.py). Waits are on events (what arrived, what Redis holds), never on the clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from events.signing import generate_secret
from tests.support.constants import ACCOUNT, API_KEY
from tests.support.flows import wait_for
from tests.support.gunicorn import ROOT, GunicornServer
from tests.support.installer import Installer
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer
from vault.deliveries import EndpointState, endpoint_id
from vault.layout import KeySpace

WORKERS = 3
KEYS = KeySpace("test")
INSTALLED, VERIFIED, DELETED = "account.installed", "account.verified", "account.deleted"
URL_TOKEN = "urltoken-0123456789"  # a token in an endpoint's URL: it must never be logged


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def receivers(secret):
    made: list[Receiver] = []

    def make(answer=None) -> Receiver:
        receiver = Receiver(secret, answer)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def webhook_vault(secret, gunicorn):
    """`webhook_vault(receivers, **env)`: gunicorn delivering to those receivers; stopped after the test."""

    def start(*targets: Receiver, **overrides: str) -> GunicornServer:
        urls = ",".join(f"{r.url}?token={URL_TOKEN}" for r in targets)
        settings = {
            "WEBHOOK_URL": urls,
            "WEBHOOK_SECRET": secret,
            "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2",
            "VERIFY_ON_INSTALL": "true",
            **overrides,
        }
        return gunicorn(workers=WORKERS, **settings)

    return start


def endpoint(client, receiver: Receiver, keys: KeySpace = KEYS) -> EndpointState:
    return EndpointState(client, keys, endpoint_id(f"{receiver.url}?token={URL_TOKEN}"))


def settled(state: EndpointState) -> bool:
    """Every event read and settled: nothing pending, nothing left to retry, nothing unread."""
    stats = state.stats()
    return stats.pending == 0 and stats.retrying == 0 and stats.lag == 0


def test_a_new_account_is_delivered_installed_then_verified_once_each(
    webhook_vault, receivers, sim, sim_server, redis_client, secret
):
    receiver = receivers()
    server = webhook_vault(receiver)
    creds = Installer(sim, server.url, sim_url=sim_server.url).install()
    got = receiver.wait_for_types(ACCOUNT, [INSTALLED, VERIFIED])
    wait_for(lambda: settled(endpoint(redis_client, receiver)))
    assert [d.payload["type"] for d in receiver.of_account(ACCOUNT)] == [INSTALLED, VERIFIED]  # once each
    assert got[1].payload["data"]["scope"] == "account.view asset.view"
    assert receiver.rejected == []
    assert len({d.webhook_id for d in got}) == 2
    feed = requests.get(f"{server.url}/v1/events", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert [e["id"] for e in feed.json()["events"]] == [d.webhook_id for d in got]  # one id, feed and webhook

    # No secret in any event, delivery log line or metric.
    token = requests.get(
        f"{server.url}/v1/accounts/{ACCOUNT}/token", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ).json()["access_token"]
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'itv_webhook_deliveries_total{outcome="delivered"} 2.0' in metrics
    assert 'itv_events_total{type="account.verified"} 1.0' in metrics
    server.stop()
    log = server.log()
    assert "delivered" in log and endpoint(redis_client, receiver).id in log
    bodies = b"".join(d.body for d in receiver.verified).decode()
    for value in (secret, secret.removeprefix("whsec_"), creds["clientSecret"], token, URL_TOKEN, receiver.url):
        assert value not in log and value not in metrics
        if value != receiver.url:
            assert value not in bodies


def test_a_2xx_whose_body_breaks_off_is_a_delivery_made_once(webhook_vault, receivers, sim, sim_server, redis_client):
    receiver = receivers()
    receiver.broken_body = True
    server = webhook_vault(receiver)
    Installer(sim, server.url, sim_url=sim_server.url).install()
    receiver.wait_for_types(ACCOUNT, [INSTALLED, VERIFIED])
    wait_for(lambda: settled(endpoint(redis_client, receiver)))
    assert [d.payload["type"] for d in receiver.of_account(ACCOUNT)] == [INSTALLED, VERIFIED]  # once each


def test_a_failing_receiver_gets_the_same_event_id_on_every_retry(
    webhook_vault, receivers, sim, sim_server, redis_client
):
    receiver = receivers(answer=lambda n, webhook_id: 503 if n <= 3 else 200)
    server = webhook_vault(receiver)
    Installer(sim, server.url, sim_url=sim_server.url).install()
    receiver.wait_for_types(ACCOUNT, [INSTALLED, VERIFIED])
    wait_for(lambda: settled(endpoint(redis_client, receiver)))
    attempts = receiver.verified
    assert [d.status for d in attempts] == [503, 503, 503, 200, 200]
    # The three retries repeat the first attempt's id (and body); `verified` waited behind it, in order.
    assert len({d.webhook_id for d in attempts[:4]}) == 1 and len({d.body for d in attempts[:4]}) == 1
    assert [d.payload["type"] for d in attempts] == [INSTALLED] * 4 + [VERIFIED]


def test_an_endpoint_out_of_retries_marks_the_event_failed_and_lets_the_next_one_go(
    webhook_vault, receivers, sim, sim_server, redis_client
):
    receiver = receivers(answer=lambda n, webhook_id: 500)
    server = webhook_vault(receiver, WEBHOOK_RETRY_SCHEDULE="0.1,0.1")
    Installer(sim, server.url, sim_url=sim_server.url).install()
    state = endpoint(redis_client, receiver)
    wait_for(lambda: state.stats().failed == 2)  # installed, then verified: 3 attempts each
    receiver_ids = [d.webhook_id for d in receiver.verified]
    assert [i for i, _ in state.failed(10)] == list(dict.fromkeys(receiver_ids))
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "itv_webhook_events_failed_total 2.0" in metrics


def test_one_endpoint_that_hangs_does_not_delay_another(webhook_vault, receivers, sim, sim_server):
    stuck, working = receivers(), receivers()
    stuck.hold.clear()  # it never answers (until the test ends)
    server = webhook_vault(stuck, working)
    installer = Installer(sim, server.url, sim_url=sim_server.url)
    installer.install()
    installer.install("acc-2")
    working.wait_for_types(ACCOUNT, [INSTALLED, VERIFIED])
    working.wait_for_types("acc-2", [INSTALLED, VERIFIED])
    assert stuck.held.is_set()  # its first delivery is still waiting for an answer


def test_killing_the_delivering_worker_loses_no_event(webhook_vault, receivers, sim, sim_server, redis_client):
    receiver = receivers()
    receiver.hold.clear()
    server = webhook_vault(receiver, VERIFY_ON_INSTALL="false")
    Installer(sim, server.url, sim_url=sim_server.url).install()
    assert receiver.held.wait(30)  # a worker is delivering account.installed, waiting for the answer
    state = endpoint(redis_client, receiver)
    holder = state.stats().lease_holder
    pid = int(holder.rsplit(":", 1)[1])
    assert pid in server.worker_pids()
    os.kill(pid, signal.SIGKILL)
    receiver.hold.set()  # the answer goes to a dead worker: the delivery was never settled
    # Another worker takes the lease and claims the unsettled entry: the same event again.
    wait_for(lambda: len(receiver.of_account(ACCOUNT)) >= 2, timeout=60)
    wait_for(lambda: settled(state))
    ids = {d.webhook_id for d in receiver.of_account(ACCOUNT)}
    assert len(ids) == 1 and state.stats().lease_holder != holder


@pytest.fixture
def aof_redis():
    server = RedisServer(aof=True)
    server.start()
    yield server
    server.stop()


def test_a_redis_crash_and_restart_with_aof_loses_no_event(webhook_vault, receivers, sim, sim_server, aof_redis):
    down = threading.Event()
    down.set()
    receiver = receivers(answer=lambda n, webhook_id: 503 if down.is_set() else 200)
    server = webhook_vault(
        receiver, REDIS_URL=aof_redis.url, VERIFY_ON_INSTALL="false", WEBHOOK_RETRY_SCHEDULE=",".join(["0.3"] * 20)
    )
    installer = Installer(sim, server.url, sim_url=sim_server.url)
    installer.install()
    wait_for(lambda: receiver.verified)  # a first attempt failed: the event waits in the retry set
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert requests.delete(f"{server.url}/v1/accounts/{ACCOUNT}", headers=headers, timeout=10).status_code == 204

    aof_redis.kill()
    aof_redis.start()  # same port, same dir: the AOF is replayed
    down.clear()
    got = receiver.wait_for_types(ACCOUNT, [INSTALLED, DELETED], timeout=60)
    assert got[1].payload["data"]["via"] == "api"
    wait_for(lambda: settled(endpoint(aof_redis.client(), receiver)), timeout=30)


def test_many_long_polls_do_not_hold_up_other_requests(webhook_vault, receivers, sim, sim_server):
    server = webhook_vault(receivers())
    headers = {"Authorization": f"Bearer {API_KEY}"}
    start = requests.get(f"{server.url}/v1/events", headers=headers, timeout=10).json()["next"]
    answers: list[dict] = []

    def poll():
        response = requests.get(f"{server.url}/v1/events", params={"after": start, "wait": 20}, headers=headers)
        answers.append(response.json())

    polls = [threading.Thread(target=poll) for _ in range(60)]
    for thread in polls:
        thread.start()
    # While they wait (more than REDIS_MAX_CONNECTIONS per worker), requests that need Redis are answered.
    for _ in range(10):
        assert requests.get(f"{server.url}/v1/accounts", headers=headers, timeout=5).status_code == 200
    Installer(sim, server.url, sim_url=sim_server.url).install()
    for thread in polls:
        thread.join(30)
    assert len(answers) == 60 and all(a["events"] and a["events"][0]["type"] == INSTALLED for a in answers)


def test_a_worker_process_can_take_delivery_over(webhook_vault, receivers, sim, sim_server, redis_client, env, secret):
    """EVENT_DELIVERY=worker: the web workers deliver nothing; the Procfile's `worker` command does."""
    receiver = receivers()
    server = webhook_vault(receiver, EVENT_DELIVERY="worker", VERIFY_ON_INSTALL="false")
    Installer(sim, server.url, sim_url=sim_server.url).install()
    state = endpoint(redis_client, receiver)
    time.sleep(1)  # long enough for a web worker to have delivered, were it delivering
    assert state.stats().lease_holder is None and receiver.verified == []  # nobody in the web dyno delivers
    command = (ROOT / "Procfile").read_text().split("worker:", 1)[1].splitlines()[0].split()
    worker = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env={**os.environ, **server.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # The group was made by the first web worker, so the event written before the worker started is kept.
        receiver.wait_for_types(ACCOUNT, [INSTALLED], timeout=30)
        assert state.stats().lease_holder.endswith(f":{worker.pid}")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
