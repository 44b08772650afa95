"""Account lifecycle events: `EventStream` follows the vault's feed, `verify_webhook` checks a webhook request.

    stream = EventStream(VAULT_URL, VAULT_API_KEY, after=saved_id)
    for event in stream:          # blocks (long-polls) while there is nothing new
        handle(event)
        saved_id = stream.last_id  # persist it: a new EventStream resumes from there

`verify_webhook` needs only the standard library: HMAC-SHA256 over "id.timestamp.body"
with the key of the `whsec_` secret, compared in constant time, and a timestamp
within the tolerance (a captured request cannot be replayed later).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from .auth import _vault_error

FEED_WAIT = 25  # seconds the vault may hold a request open (under Heroku's 30 s router timeout)
DEFAULT_TOLERANCE = 300  # seconds a webhook's timestamp may differ from now (Standard Webhooks' default)


class WebhookVerificationError(ValueError):
    """The request is not a webhook signed with this secret, or its timestamp is too old or too new."""


class EventStream:
    """Every event after `after` (from the oldest retained when None), in order, then each new one as it comes.

    `last_id` is the id of the last event handed out: keep it, and pass it as `after` to resume.
    Iteration ends only when `stop()` is called (or, with `follow=False`, once it has caught up).
    A vault error (e.g. `events_expired`, 410, when `after` is older than the retention) is raised
    as `VaultError`; its `oldest` attribute then says where to start again.
    """

    def __init__(
        self,
        vault_url: str,
        api_key: str,
        *,
        after: str | None = None,
        limit: int = 100,
        wait: int = FEED_WAIT,
        follow: bool = True,
        session: requests.Session | None = None,
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        self._api_key = api_key
        self.last_id = after
        self.limit = limit
        self.wait = wait
        self.follow = follow
        self._session = session or requests.Session()
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def page(self, wait: int = 0) -> list[dict[str, Any]]:
        """One page after `last_id` (waiting up to `wait` s for the first event); `last_id` moves on."""
        params: dict[str, Any] = {"limit": self.limit, "wait": wait}
        if self.last_id is not None:
            params["after"] = self.last_id
        response = self._session.get(
            f"{self.vault_url}/v1/events",
            params=params,
            headers={"Authorization": f"Bearer {self._api_key}"},
            timeout=(5.0, wait + 20.0),
        )
        if response.status_code != 200:
            error = _vault_error(response)
            try:
                error.oldest = response.json()["error"].get("oldest")  # type: ignore[attr-defined]
            except (ValueError, KeyError, AttributeError):
                pass
            raise error
        body = response.json()
        events: list[dict[str, Any]] = body["events"]
        if events:
            self.last_id = events[-1]["id"]
        return events

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self._stopped:
            events = self.page(self.wait if self.follow else 0)
            for event in events:
                self.last_id = event["id"]  # handed out: a resumed stream starts after it
                yield event
                if self._stopped:
                    return
            if not events and not self.follow:
                return


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The event of a verified webhook request (`{"type", "timestamp", "data"}` plus its `id`).

    `headers` may be any mapping (names are matched case-insensitively); `body` the raw bytes.
    Raises WebhookVerificationError otherwise.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        sent_at = int(stamp)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("malformed secret or timestamp") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        raise WebhookVerificationError("timestamp outside the tolerance")
    expected = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    for candidate in signatures.split():  # several while a secret is being rotated
        version, _, value = candidate.partition(",")
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if version == "v1" and hmac.compare_digest(given, expected):
            event: dict[str, Any] = json.loads(body)
            return {"id": msg_id, **event}
    raise WebhookVerificationError("no matching signature")
