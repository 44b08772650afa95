"""`GET /v1/accounts/<id>/token`: a Bearer token for an account, from the cache when possible."""
from __future__ import annotations


from flask import Blueprint, current_app, request

from api.requestlog import audit
from errors import InvalidRequest

bp = Blueprint("tokens", __name__, url_prefix="/v1/accounts")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


@bp.get("/<account_id>/token")
def get_token(account_id: str):
    force = request.args.get("force_refresh", "").lower()
    if force not in _TRUE + _FALSE:
        raise InvalidRequest("force_refresh must be true or false.")
    token = current_app.extensions["vault"].tokens.get_token(
        account_id, request.args.get("scope"), force_refresh=force in _TRUE
    )
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
