"""`flask --app app events list|replay|stats` and `python -m cli keygen --webhook`, against a real redis-server.

Delivery runs in process here (the app's own deliverer threads), to a receiver that verifies with `standardwebhooks`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from core.config import Config
from events.signing import generate_secret
from tests.support.constants import ACCOUNT
from tests.support.flows import wait_for
from tests.support.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver():
    made = Receiver(generate_secret())
    yield made
    made.close()


@pytest.fixture
def delivering(make_app, receiver):
    """An app delivering to `receiver` in this process (as one web worker would)."""
    app = make_app(WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=receiver.secret, WEBHOOK_RETRY_SCHEDULE="0.1")
    app.extensions["vault"].events.delivery.start()
    return app


def cli(app, *args: str):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def test_list_and_stats(installer, delivering, receiver):
    installer.to(delivering.test_client()).install()
    receiver.wait_for_types(ACCOUNT, ["account.installed"])
    listed = [json.loads(line) for line in cli(delivering, "events", "list", "--json").stdout.splitlines()]
    assert [(e["type"], e["data"]["account_id"]) for e in listed] == [("account.installed", ACCOUNT)]
    assert ACCOUNT in cli(delivering, "events", "list").stdout
    stats = json.loads(cli(delivering, "events", "stats", "--json").stdout)
    assert stats["events"]["length"] == 1 and stats["by_type"] == {"account.installed": 1}
    (endpoint,) = stats["endpoints"]
    wait_for(lambda: json.loads(cli(delivering, "events", "stats", "--json").stdout)["endpoints"][0]["pending"] == 0)
    assert receiver.url not in json.dumps(stats)  # endpoints are named by id, never by URL
    assert "account.installed" in cli(delivering, "events", "stats").stdout


def test_failed_events_are_listed_and_replayed_with_the_same_id(installer, delivering, receiver):
    receiver.answer = lambda n, webhook_id: 500 if n <= 2 else 200  # the first attempt and its one retry fail
    installer.to(delivering.test_client()).install()
    wait_for(lambda: "account.installed" in cli(delivering, "events", "list", "--failed").stdout)
    (failed,) = [
        json.loads(line) for line in cli(delivering, "events", "list", "--failed", "--json").stdout.splitlines()
    ]
    assert failed["type"] == "account.installed" and failed["failed_at"]
    cli(delivering, "events", "replay", failed["id"])
    delivered = receiver.wait_for_types(ACCOUNT, ["account.installed"])
    assert delivered[0].webhook_id == failed["id"]
    wait_for(lambda: "0 failed" in cli(delivering, "events", "list", "--failed").stderr)


def test_replay_since_a_time_delivers_again(installer, delivering, receiver):
    installer.to(delivering.test_client()).install()
    first = receiver.wait_for_types(ACCOUNT, ["account.installed"])[0]
    cli(delivering, "events", "replay", "--since", "2000-01-01T00:00:00Z")
    wait_for(lambda: len(receiver.of_account(ACCOUNT)) == 2)
    assert {d.webhook_id for d in receiver.of_account(ACCOUNT)} == {first.webhook_id}


def test_replay_refuses_unknown_ids_and_needs_ids_or_since(delivering):
    result = delivering.test_cli_runner().invoke(args=["events", "replay", "1-0"])
    assert result.exit_code != 0 and "not retained" in result.output
    assert delivering.test_cli_runner().invoke(args=["events", "replay"]).exit_code != 0


def test_keygen_webhook_makes_a_secret_both_sides_accept(env):
    done = subprocess.run(
        [sys.executable, "-m", "cli", "keygen", "--webhook"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    secret = done.stdout.strip()
    assert done.returncode == 0 and secret.startswith("whsec_")
    assert Config.from_env({**env, "WEBHOOK_SECRET": secret}).webhook_secret
    Webhook(secret)  # the library takes it as it is
