"""The guards of `/v1/*`: the API key (`Authorization: Bearer <key>`, compared in constant time) and the account id."""

from __future__ import annotations

import hashlib
import hmac

from flask import g, request

from api.context import services
from core.config import ApiKey
from core.errors import AccountNotFound, Unauthorized
from vault.accounts import valid_account_id


class ApiKeyChecker:
    """Holds SHA-256 digests of the accepted keys, computed once at start-up."""

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
    """An app-wide `before_request` hook: every `/v1` path, even an unknown one, needs a key.

    It runs before every request, the token hit included, so it looks the request up once.
    """
    req = request._get_current_object()  # type: ignore[attr-defined]
    path = req.path
    if path == "/v1" or path.startswith("/v1/"):
        require_api_key(req.environ.get("HTTP_AUTHORIZATION", ""))
        check_account_id((req.view_args or {}).get("account_id"))


def require_api_key(authorization: str) -> None:
    """Set `g.api_key_name` from the `Authorization` header's value, or refuse with 401."""
    scheme, _, presented = authorization.partition(" ")
    name = None
    if scheme.lower() == "bearer" and presented.strip():
        name = services().api_keys.name_for(presented.strip())
    if name is None:
        raise Unauthorized()
    g.api_key_name = name


def check_account_id(account_id: str | None) -> None:
    """An id that cannot have been installed is not found (and never reaches a Redis key name)."""
    if account_id is not None and not valid_account_id(account_id):
        raise AccountNotFound()
