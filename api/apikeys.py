"""The guard of `/v1/*`: the API key (`Authorization: Bearer <key>`), what it may do, its rate, and the account id.

Who the caller is comes from `auth.callers`; which permission a request needs from `api.permissions`;
the key's scope ceiling is applied by `scope_for`, which the token and proxy views call before
anything reaches Trackunit.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re

from flask import g, request

from api import permissions
from api.context import services
from auth.callers import Caller, Expired
from core import metrics
from core.config import ApiKey, AppScopes
from core.errors import AccountNotFound, Forbidden, ScopeNotAllowed, Unauthorized, VaultError
from core.permissions import KeyPolicy
from vault.accounts import valid_account_id

_SEPARATORS = re.compile(r"[\s,]+")  # as auth.scopes splits a scope parameter
_REFUSED = {reason: metrics.API_KEY_REFUSALS.labels(reason) for reason in ("unauthorized", "expired", "forbidden")}


class ApiKeyChecker:
    """Holds SHA-256 digests of the accepted keys, computed once at start-up (the metrics token's check)."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._digests = [(k.name, hashlib.sha256(k.key.encode()).digest()) for k in keys]

    def name_for(self, presented: str) -> str | None:
        """The key's name, or None. Compares with every key, so timing tells nothing."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = name
        return found


def guard_v1() -> None:
    """An app-wide `before_request` hook: every `/v1` path, even an unknown one, needs a key and its permission.

    It runs before every request, the token hit included, so it looks the request up once.
    """
    req = request._get_current_object()  # type: ignore[attr-defined]
    path = req.path
    if path == "/v1" or path.startswith("/v1/"):
        caller = require_api_key(req.environ.get("HTTP_AUTHORIZATION", ""))
        rule = req.url_rule
        needed = permissions.required(rule.endpoint if rule is not None else None, req.method)
        if not caller.policy.allows(needed):
            _REFUSED["forbidden"].inc()
            raise Forbidden(needed.value)
        if caller.policy.rate is not None:
            try:
                services().rate_limiter.check(caller.name, caller.policy.rate)
            except VaultError as exc:
                metrics.API_KEY_REFUSALS.labels(exc.code).inc()
                raise
        check_account_id((req.view_args or {}).get("account_id"))


def require_api_key(authorization: str) -> Caller:
    """The caller of the `Authorization` header's key (also set as `g.api_key_name`), or refuse with 401."""
    scheme, _, presented = authorization.partition(" ")
    caller = None
    if scheme.lower() == "bearer" and presented.strip():
        try:
            caller = services().api_keys.identify(presented.strip())
        except Expired:
            _REFUSED["expired"].inc()
            raise Unauthorized() from None
    if caller is None:
        _REFUSED["unauthorized"].inc()
        raise Unauthorized()
    g.api_key_name = caller.name
    g.api_key_policy = caller.policy
    return caller


def scope_for(asked: str | None) -> str | None:
    """The scope parameter to use for this request's key (`scope_within`); a refusal is counted."""
    try:
        return scope_within(g.api_key_policy, asked, services().config.app_scopes)
    except ScopeNotAllowed as exc:
        _count(exc)
        raise


def scope_within(policy: KeyPolicy, asked: str | None, app_scopes: AppScopes) -> str | None:
    """The scope parameter for a key with `policy`: `asked` itself when the key has no ceiling.

    With a ceiling, a scope outside it is refused (ScopeNotAllowed, before Trackunit is called), and
    nothing asked means the manifest's required scopes within the ceiling.
    """
    if policy.scopes is None:
        return asked
    return _within_ceiling(policy.scopes, asked, app_scopes)


@functools.lru_cache(maxsize=256)
def _within_ceiling(ceiling: frozenset[str], asked: str | None, app_scopes: AppScopes) -> str:
    scopes = {s for s in _SEPARATORS.split(asked or "") if s}
    if not scopes:
        default = set(app_scopes.required) & ceiling
        if not default:
            # Widening to the ceiling would hand out scopes nobody asked for: name them instead.
            raise ScopeNotAllowed(
                "None of the app's required scopes is within the API key's scope ceiling: name the scopes you need."
            )
        return " ".join(sorted(default))
    outside = sorted(scopes - ceiling)
    if outside:
        raise ScopeNotAllowed(f"Outside the API key's scope ceiling: {', '.join(repr(s[:64]) for s in outside[:5])}.")
    return asked or ""


def _count(exc: VaultError) -> None:
    metrics.API_KEY_REFUSALS.labels(exc.code).inc()


def check_account_id(account_id: str | None) -> None:
    """An id that cannot have been installed is not found (and never reaches a Redis key name)."""
    if account_id is not None and not valid_account_id(account_id):
        raise AccountNotFound()
