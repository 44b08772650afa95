"""`GET /v1/accounts/<id>/token`: a Bearer token for an account, from the cache when possible.

This is the hot path (a hit should cost no more than `/healthz`): a hit this worker holds in
memory is answered before Flask by `api.hotpath`, with this view's answer (`token_body`, the
same headers and counter); this view answers the rest, reading the request once.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from api.apikeys import scope_for
from api.context import services
from api.errors import error_response
from api.requestlog import audit
from auth.tokens import IssuedToken, Source
from core import metrics
from core.errors import InvalidRequest, VaultError

bp = Blueprint("tokens", __name__, url_prefix="/v1/accounts")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")
NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
HITS = metrics.TOKEN_REQUESTS.labels("cache_hit")
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
    (HITS if token.source is Source.CACHE else _FETCHES).inc()
    audit("token_issued", account_id=account_id, scopes=token.scope, source=token.source)
    return Response(token_body(token), headers=NO_STORE, mimetype="application/json")


def token_body(token: IssuedToken) -> bytes:
    """The JSON body that hands out `token`."""
    return json.dumps(
        {
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_in": token.expires_in,
            "scope": token.scope,
            "account_id": token.account_id,
        },
        separators=(",", ":"),
    ).encode()
