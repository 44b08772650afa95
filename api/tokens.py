"""`GET /v1/accounts/<id>/token`: a Bearer token for an account, from the cache when possible.

This is the hot path (a hit should cost about what `/healthz` costs), so
the view reads the request once, skips query parsing when there is no query,
serialises with `json.dumps` directly and builds the response in one step.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from api.apikeys import scope_for
from api.context import services
from api.errors import error_response
from api.requestlog import audit
from auth.tokens import Source
from core import metrics
from core.errors import InvalidRequest, VaultError

bp = Blueprint("tokens", __name__, url_prefix="/v1/accounts")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")
_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_HITS = metrics.TOKEN_REQUESTS.labels("cache_hit")
_FETCHES = metrics.TOKEN_REQUESTS.labels("fetched")


@bp.errorhandler(VaultError)
def _count_error(exc: VaultError):
    metrics.TOKEN_REQUESTS.labels(exc.code).inc()
    return error_response(exc)


@bp.get("/<account_id>/token")
def get_token(account_id: str):
    req = request._get_current_object()  # type: ignore[attr-defined]  # one context lookup, not one per attribute
    force, scope = "", None
    if req.query_string:
        force = req.args.get("force_refresh", "").lower()
        if force not in _TRUE + _FALSE:
            raise InvalidRequest("force_refresh must be true or false.")
        scope = req.args.get("scope")
    token = services().tokens.get_token(account_id, scope_for(scope), force_refresh=force in _TRUE)
    (_HITS if token.source is Source.CACHE else _FETCHES).inc()
    audit("token_issued", account_id=account_id, scopes=token.scope, source=token.source)
    body = json.dumps(
        {
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_in": token.expires_in,
            "scope": token.scope,
            "account_id": token.account_id,
        },
        separators=(",", ":"),
    )
    return Response(body, headers=_NO_STORE, mimetype="application/json")
