"""`POST /appinstall`: Trackunit's tokenCallback, where an account's credentials arrive.

Order of checks: transport (size, content type), identity (the signed
`Trackunit-Identity` JWT), the body, the claims against the body, the app, the
replay rule (a token with a `jti` carries one message). Nothing is written
unless every check passed. An INSTALLED whose identity was issued before the
stored credentials' does not replace them; an UNINSTALLED deletes nothing (it
cannot be told from a replay): it makes the vault check the stored credentials.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from flask import Blueprint, request

from api.bodies import parse_json, read_body
from api.context import services
from api.errors import error_response
from api.requestlog import audit
from auth.identity import issued_at, message_digest, replay_rule
from core import metrics, tunables
from core.errors import InvalidIdentity, InvalidRequest, UnknownApp, UnsupportedMediaType, VaultError
from vault.accounts import Credentials, Dropped, Installed, valid_account_id

if TYPE_CHECKING:
    from app import Services

bp = Blueprint("callback", __name__)
log = logging.getLogger("itv.identity")

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


def _check_replay(svc: Services, claims: dict, message: CallbackMessage, body: Any) -> None:
    """A token with a `jti` may carry one message (its retries included); one without is taken on its claims."""
    rule = replay_rule(claims, time.time())
    if rule is None:
        metrics.IDENTITY_WITHOUT_JTI.inc()
        log.info(
            "identity token has no jti: replay protection did not apply",
            extra={"account_id": message.account_id, "type": message.type[:32]},
        )
        return
    if not svc.bindings.bind(
        issuer=rule.issuer, app_id=message.iris_app_id, jti=rule.jti, message_digest=message_digest(body), ttl=rule.ttl
    ):
        raise InvalidIdentity("This Trackunit-Identity token (jti) was already used with another message.")


@bp.post("/appinstall")
def appinstall():
    svc = services()
    if not request.is_json:
        raise UnsupportedMediaType()
    raw = read_body(tunables.MAX_BODY_BYTES)
    claims = svc.identity.verify(request.headers.get("Trackunit-Identity"))
    body = parse_json(raw)
    message = parse_message(body)
    for claim, value in (("accountId", message.account_id), ("irisAppId", message.iris_app_id)):
        if claim in claims and claims[claim] != value:
            raise InvalidIdentity(f"The identity's {claim} does not match the body.")
    if message.iris_app_id != svc.config.iris_app_id:
        raise UnknownApp()
    if message.type in (INSTALLED, UNINSTALLED):
        _check_replay(svc, claims, message, body)
    if message.type == INSTALLED:
        return _installed(svc, message, issued_at(claims))
    if message.type == UNINSTALLED:
        return _uninstalled(svc, message)
    metrics.CALLBACKS.labels("ignored").inc()
    audit("callback_ignored", account_id=message.account_id, type=message.type[:32], via="callback")
    return {"status": "ignored"}, 202


def _installed(svc: Services, message: CallbackMessage, iat: int | None):
    creds = Credentials(client_id=message.client_id or "", client_secret=message.client_secret or "")
    outcome = svc.accounts.install(message.account_id, message.iris_app_id, creds, issued_at=iat)
    if outcome is Installed.STALE:
        metrics.CALLBACKS.labels("stale").inc()
        audit("install_stale", account_id=message.account_id, via="callback")
        return {"status": "stale", "account_id": message.account_id}
    replaced = outcome is Installed.REPLACED
    if svc.config.verify_on_install:
        svc.tokens.verify_soon(message.account_id)  # in the background: account.verified or account.revoked
    metrics.CALLBACKS.labels("stored").inc()
    audit("credentials_stored", account_id=message.account_id, replaced=replaced, via="callback")
    return {"status": "stored", "account_id": message.account_id, "replaced": replaced}


def _uninstalled(svc: Services, message: CallbackMessage):
    """Drop the cached tokens and check the stored credentials with Trackunit; never delete."""
    dropped = svc.accounts.drop_tokens(message.account_id, verify_interval=tunables.UNINSTALL_VERIFY_INTERVAL)
    if dropped is Dropped.NOT_INSTALLED:
        metrics.CALLBACKS.labels("ignored").inc()
        audit(
            "callback_ignored", account_id=message.account_id, type=UNINSTALLED, via="callback", reason="not_installed"
        )
        return {"status": "ignored", "account_id": message.account_id}, 202
    if dropped is Dropped.VERIFY:
        svc.tokens.verify_soon(message.account_id)
    metrics.CALLBACKS.labels("verifying").inc()
    audit("uninstall_verifying", account_id=message.account_id, via="callback")
    return {"status": "verifying", "account_id": message.account_id}, 202
