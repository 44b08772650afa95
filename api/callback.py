"""`POST /appinstall`: Trackunit's tokenCallback, where an account's credentials arrive.

Order of checks: transport (size, content type), identity (the signed
`Trackunit-Identity` JWT), the body, the claims against the body, the app.
Nothing is written unless every check passed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

from flask import Blueprint, current_app, request

from errors import InvalidIdentity, InvalidRequest, UnknownApp, UnsupportedMediaType, VaultError
import metrics
import tunables
from api.errors import error_response
from api.requestlog import audit
from vault.accounts import Credentials, valid_account_id

bp = Blueprint("callback", __name__)

MAX_FIELD = 1024
INSTALLED = "INSTALLED"
UNINSTALLED = "UNINSTALLED"


@dataclasses.dataclass(frozen=True)
class CallbackMessage:
    type: str
    iris_app_id: str
    account_id: str
    client_id: str | None = None
    client_secret: str | None = dataclasses.field(default=None, repr=False)


def parse_message(body: Any) -> CallbackMessage:
    """Validate a callback body; raise InvalidRequest naming the first bad field (never its value)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    kind = _text(body, "type")
    app_id = _text(body, "irisAppId")
    account_id = _text(body, "accountId")
    if not valid_account_id(account_id):
        raise InvalidRequest("accountId must be 1-128 letters, digits, '-' or '_'.")
    if kind != INSTALLED:
        return CallbackMessage(kind, app_id, account_id)
    return CallbackMessage(kind, app_id, account_id, _text(body, "clientId"), _text(body, "clientSecret"))


def _text(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field} must be a non-empty string.")
    if len(value) > MAX_FIELD or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidRequest(f"{field} is too long or contains control characters.")
    return value


@bp.errorhandler(VaultError)
def _count_error(exc: VaultError):
    metrics.CALLBACKS.labels(exc.code).inc()
    return error_response(exc)


def _bind(services, token: str, raw: bytes, claims: dict) -> None:
    """A replay of the same message is fine (Trackunit retries); the same token with another body is not."""
    expires = claims.get("exp")
    ttl = int(expires - time.time()) + tunables.IDENTITY_LEEWAY if isinstance(expires, (int, float)) else 0
    ttl = min(ttl if ttl > 0 else tunables.IDENTITY_REPLAY_WINDOW, tunables.IDENTITY_REPLAY_WINDOW)
    digest = hashlib.sha256(token.encode()).hexdigest()
    if not services.accounts.bind_identity(digest, hashlib.sha256(raw).hexdigest(), ttl):
        raise InvalidIdentity("This Trackunit-Identity token was already used with another message.")


@bp.post("/appinstall")
def appinstall():
    services = current_app.extensions["vault"]
    if not request.is_json:
        raise UnsupportedMediaType()
    raw = request.get_data(cache=False)  # bounded by MAX_CONTENT_LENGTH (413)
    claims = services.identity.verify(request.headers.get("Trackunit-Identity"))
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The body is not valid JSON.") from None
    message = parse_message(body)
    for claim, value in (("accountId", message.account_id), ("irisAppId", message.iris_app_id)):
        if claim in claims and claims[claim] != value:
            raise InvalidIdentity(f"The identity's {claim} does not match the body.")
    if message.iris_app_id != services.config.iris_app_id:
        raise UnknownApp()
    if message.type in (INSTALLED, UNINSTALLED):
        _bind(services, request.headers["Trackunit-Identity"], raw, claims)

    if message.type == INSTALLED:
        creds = Credentials(client_id=message.client_id or "", client_secret=message.client_secret or "")
        replaced = services.accounts.install(message.account_id, message.iris_app_id, creds)
        metrics.CALLBACKS.labels("stored").inc()
        audit("credentials_stored", account_id=message.account_id, replaced=replaced, via="callback")
        return {"status": "stored", "account_id": message.account_id, "replaced": replaced}
    if message.type == UNINSTALLED:
        deleted = services.accounts.delete(message.account_id)
        metrics.CALLBACKS.labels("deleted").inc()
        audit("account_deleted", account_id=message.account_id, existed=deleted, via="callback")
        return {"status": "deleted", "account_id": message.account_id}
    metrics.CALLBACKS.labels("ignored").inc()
    audit("callback_ignored", account_id=message.account_id, type=message.type[:32], via="callback")
    return {"status": "ignored"}, 202
