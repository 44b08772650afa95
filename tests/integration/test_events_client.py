"""The Python client's side of events: `EventStream` follows the feed over HTTP, `verify_webhook` checks signatures.

Signatures are made by the `standardwebhooks` reference library, not by the vault's own code.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from standardwebhooks.webhooks import Webhook

from events.signing import generate_secret
from iris_vault_client import EventStream, VaultError, WebhookVerificationError, verify_webhook
from tests.support.constants import API_KEY
from tests.support.flows import wait_for

BODY = json.dumps({"type": "account.installed", "timestamp": "2026-12-01T00:00:00.000Z", "data": {}}).encode()


def signed(secret: str, body: bytes = BODY, *, at: dt.datetime | None = None, msg_id: str = "1-0") -> dict[str, str]:
    at = at or dt.datetime.now(dt.UTC)
    return {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(int(at.timestamp())),
        "Webhook-Signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


def test_verify_webhook_accepts_what_the_library_signs():
    secret = generate_secret()
    event = verify_webhook(secret, signed(secret), BODY)
    assert event["id"] == "1-0" and event["type"] == "account.installed"


@pytest.mark.parametrize(
    "change",
    ["body", "secret", "id", "old", "future", "no-signature"],
)
def test_verify_webhook_refuses_anything_else(change):
    secret = generate_secret()
    headers, body = signed(secret), BODY
    if change == "body":
        body = BODY.replace(b"installed", b"deleted")
    elif change == "secret":
        headers = signed(generate_secret())
    elif change == "id":
        headers["Webhook-Id"] = "2-0"
    elif change == "old":
        headers = signed(secret, at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    elif change == "future":
        headers = signed(secret, at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))
    else:
        del headers["Webhook-Signature"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body)


def test_the_event_stream_resumes_from_the_last_id(installer, vault_server):
    installer = installer.to(vault_server.url)
    for n in range(3):
        installer.install(f"acc-{n}")
    stream = EventStream(vault_server.url, API_KEY, limit=2, follow=False)
    assert [e["data"]["account_id"] for e in stream] == ["acc-0", "acc-1", "acc-2"]
    installer.install("acc-3")
    resumed = EventStream(vault_server.url, API_KEY, after=stream.last_id, follow=False)
    assert [e["data"]["account_id"] for e in resumed] == ["acc-3"]


def test_the_event_stream_follows_new_events(installer, app, vault_server):
    installer = installer.to(vault_server.url)
    stream = EventStream(vault_server.url, API_KEY, wait=10)
    seen: list[str] = []

    def follow():
        for event in stream:
            seen.append(event["data"]["account_id"])
            if len(seen) == 2:
                stream.stop()

    reader = threading.Thread(target=follow)
    reader.start()
    watcher = app.extensions["vault"].events.watcher  # the app vault_server serves
    wait_for(lambda: watcher.waiting == 1)  # the stream long-polls: there is nothing yet
    installer.install("acc-0")
    installer.install("acc-1")
    reader.join(30)
    assert seen == ["acc-0", "acc-1"]


def test_a_refusal_is_raised_as_a_vault_error(vault_server):
    with pytest.raises(VaultError) as caught:
        EventStream(vault_server.url, "wrong-key-0123456789", follow=False).page()
    assert caught.value.status == 401
