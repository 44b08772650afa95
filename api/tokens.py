"""`GET /v1/accounts/<id>/token`: a Bearer token for an account, from the cache when possible."""
from __future__ import annotations


from flask import Blueprint, current_app, request

import metrics
from api.errors import error_response
from api.requestlog import audit
from errors import InvalidRequest, VaultError

bp = Blueprint("tokens", __name__, url_prefix="/v1/accounts")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


@bp.errorhandler(VaultError)
def _count_error(exc: VaultError):
    metrics.TOKEN_REQUESTS.labels(exc.code).inc()
    return error_response(exc)


@bp.get("/<account_id>/token")
def get_token(account_id: str):
    force = request.args.get("force_refresh", "").lower()
    if force not in _TRUE + _FALSE:
        raise InvalidRequest("force_refresh must be true or false.")
    token = current_app.extensions["vault"].tokens.get_token(
        account_id, request.args.get("scope"), force_refresh=force in _TRUE
    )
    metrics.TOKEN_REQUESTS.labels("cache_hit" if token.source == "cache" else "fetched").inc()
    audit("token_issued", account_id=account_id, scopes=token.scope, source=token.source)
    response = current_app.json.response(
        {
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_in": token.expires_in,
            "scope": token.scope,
            "account_id": token.account_id,
        }
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
