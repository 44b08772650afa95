"""The vault's Standard Webhooks signatures, checked by the reference library; the retry schedule's delays."""

import base64
import datetime as dt
import json

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core import tunables
from events import signing
from events.delivery import retry_delay
from events.shape import body
from vault.outbox import StoredEvent

EVENT = StoredEvent(
    "1796125107954-0",
    {
        "type": "account.installed",
        "account_id": "a1",
        "iris_app_id": "@o/a",
        "installed_at": "1796125107",
        "client_secret": "never-shown",
    },
)


def test_the_library_verifies_what_the_vault_signs():
    secret = signing.generate_secret()
    raw = body(EVENT)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    headers = signing.headers(signing_key(secret), EVENT.id, now, raw)
    assert Webhook(secret).verify(raw, headers) == json.loads(raw)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.generate_secret()).verify(raw, headers)


def signing_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def test_the_body_carries_only_the_allowed_fields():
    payload = json.loads(body(EVENT))
    assert payload == {
        "type": "account.installed",
        "timestamp": "2026-12-01T11:38:27.954Z",
        "data": {"account_id": "a1", "iris_app_id": "@o/a", "installed_at": "2026-12-01T11:38:27Z"},
    }


def test_retry_delays_follow_the_schedule_with_jitter_then_stop():
    schedule = (5.0, 300.0)
    jitter = tunables.WEBHOOK_RETRY_JITTER
    for _ in range(100):
        assert 5 * (1 - jitter) <= retry_delay(schedule, 1) <= 5 * (1 + jitter)
        assert 300 * (1 - jitter) <= retry_delay(schedule, 2) <= 300 * (1 + jitter)
    assert retry_delay(schedule, 3) is None
