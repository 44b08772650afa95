"""The Flask app: Trackunit-like endpoints plus ``/_sim`` control endpoints.

Paths mimic Trackunit's, so the service only swaps base URLs to use it.
"""

from __future__ import annotations

from typing import Any

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .keys import SigningKey
from .state import DEFAULT_APP_ID, DEFAULT_SCOPES, Reply, SimulatorState, assets_for, large_body, wait_delay

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
VIEW_SCOPE = "asset.view"
MANAGE_SCOPE = "account.asset.manage"
MAX_LARGE_BYTES = 256 * 1024 * 1024
LARGE_CHUNK = 64 * 1024
#: Headers on every REST API answer, so a proxy's pass-back and drop lists can be checked.
API_HEADERS = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "Keep-Alive": "timeout=5, max=100"}


def _reply(status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, str):
        response = Response(body, status=status, mimetype="text/html")
    else:
        response = jsonify(body)
        response.status_code = status
    response.headers.update(headers or {})
    return response


def _error(status: int, error: str, message: str) -> Response:
    """Error shape of the area the request went to (REST, OAuth2 or control)."""
    if request.path.startswith("/api/"):
        return _reply(status, {"status": status, "code": error, "message": message})
    if request.path.startswith("/apptoken"):
        return _reply(status, {"error": error, "error_description": message}, _NO_STORE)
    return _reply(status, {"error": error, "message": message})


class _BadRequest(Exception):
    """A control request with unusable JSON; answered 400 invalid_request."""


def _json() -> Any:
    """The request's JSON, or None; a body nested past the parser's recursion limit is a 400 too."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        raise _BadRequest("body is nested too deeply") from None


def _json_body() -> dict[str, Any]:
    body = _json()
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


def _string(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"{name} must be a non-empty string")
    return value


def _flag(body: dict[str, Any], name: str, default: bool = True) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _BadRequest(f"{name} must be true or false")
    return value


def _scopes(body: dict[str, Any]) -> list[str]:
    value = body.get("scopes", list(DEFAULT_SCOPES))
    if not isinstance(value, list) or not all(isinstance(s, str) and s and " " not in s for s in value):
        raise _BadRequest("scopes must be a list of scope names")
    return value


def _is_api() -> bool:
    """The REST API (``/api/...``) as opposed to the JWKS, the token endpoint and ``/_sim``."""
    return request.path.startswith("/api/") and not request.path.startswith("/api/marketplace/")


def _raw_path() -> str:
    """The path as the client sent it (still percent-encoded) when the server tells us."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    return raw.partition("?")[0] if raw else request.path


def _api_request(state: SimulatorState, required_scope: str | None) -> Reply | str:
    """Record the request, then: the injected failure, 401/403, or the token's account id."""
    return state.api_request(
        request.method,
        _raw_path(),
        request.query_string.decode("latin-1"),
        dict(request.headers),
        request.get_data(cache=True),
        required_scope,
    )


def create_simulator(*, expires_in: int = 3600, signing_key: SigningKey | None = None) -> Flask:
    """Build a fresh simulator; its state is ``app.extensions["simulator"]``."""
    app = Flask("simulator")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = SimulatorState(expires_in=expires_in, signing_key=signing_key)
    app.extensions["simulator"] = state

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error(exc.code or 500, code, exc.description or "")

    @app.errorhandler(_BadRequest)
    def bad_request(exc: _BadRequest) -> Response:
        return _error(400, "invalid_request", str(exc))

    @app.get("/")
    def index() -> Response:
        return _reply(
            200,
            {
                "name": "Trackunit simulator",
                "token_url": "/apptoken",
                "jwks_url": "/api/marketplace/jwks",
                "api": [
                    "/api/asset/v1/assets",
                    "/api/asset/v1/assets/<id>",
                    "/api/test/v1/large?bytes=N",
                    "/api/test/v1/redirect?to=URL",
                ],
                "control": [
                    "/_sim/accounts",
                    "/_sim/accounts/<id>/revoke",
                    "/_sim/identity",
                    "/_sim/install",
                    "/_sim/behaviour",
                    "/_sim/api-behaviour",
                    "/_sim/api-log",
                    "/_sim/reset",
                    "/_sim/stats",
                ],
            },
        )

    @app.get("/api/marketplace/jwks")
    def jwks() -> Response:
        return _reply(200, state.signing_key.jwks())

    @app.post("/apptoken")
    def apptoken() -> Response:
        form_encoded = request.mimetype == "application/x-www-form-urlencoded"
        form = {k: v for k, v in request.form.items()} if form_encoded else {}
        delay, release = state.begin_token_request(
            {
                "grant_type": form.get("grant_type"),
                "client_id": form.get("client_id"),
                "scope": form.get("scope"),
                "content_type": request.content_type,
            }
        )
        try:
            wait_delay(delay, release)
            status, body, headers = state.answer_token_request(form, form_encoded)
        finally:
            state.end_token_request()
        return _reply(status, body, {**_NO_STORE, **headers})

    @app.after_request
    def api_headers(response: Response) -> Response:
        """Every REST API answer carries a cookie, rate-limit, pagination and a hop-by-hop header."""
        if _is_api():
            response.headers.update(API_HEADERS)
            response.headers["Link"] = f'<{request.path}?page=1&size=100>; rel="next"'
            response.set_cookie("sim", "1", path="/")
        return response

    @app.get("/api/asset/v1/assets")
    def assets() -> Response:
        outcome = _api_request(state, VIEW_SCOPE)
        if not isinstance(outcome, str):
            return _reply(*outcome)
        content = assets_for(outcome)
        return _reply(200, {"content": content, "page": 0, "size": len(content), "totalElements": len(content)})

    @app.post("/api/asset/v1/assets", endpoint="create_asset")
    @app.route("/api/asset/v1/assets/<asset_id>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def asset(asset_id: str | None = None) -> Response:
        """Echoes what arrived, so a test can check that the method, path, query and body came through as sent."""
        outcome = _api_request(state, VIEW_SCOPE if request.method in ("GET", "HEAD") else MANAGE_SCOPE)
        if not isinstance(outcome, str):
            return _reply(*outcome)
        status = 201 if request.method == "POST" and asset_id is None else 200
        return _reply(
            status,
            {
                "method": request.method,
                "path": _raw_path(),
                "query": request.query_string.decode("latin-1"),
                "body": request.get_data(cache=True).decode("utf-8", errors="replace"),
                "contentType": request.content_type,
                "accountId": outcome,
                "assetId": asset_id,
            },
        )

    @app.get("/api/test/v1/large")
    def large() -> Response:
        """``bytes`` of deterministic content (``simulator.state.large_body``), streamed in chunks."""
        outcome = _api_request(state, None)
        if not isinstance(outcome, str):
            return _reply(*outcome)
        size = request.args.get("bytes", "")
        if not size.isdigit() or int(size) > MAX_LARGE_BYTES:
            return _error(400, "invalid_request", f"bytes must be an integer in [0, {MAX_LARGE_BYTES}]")
        total = int(size)

        def chunks():
            for offset in range(0, total, LARGE_CHUNK):
                yield large_body(min(LARGE_CHUNK, total - offset), offset)

        return Response(chunks(), status=200, mimetype="application/octet-stream")

    @app.get("/api/test/v1/redirect")
    def redirect() -> Response:
        """302 to ``to``, wherever it points (for checking that nobody follows it blindly)."""
        outcome = _api_request(state, None)
        if not isinstance(outcome, str):
            return _reply(*outcome)
        target = request.args.get("to", "")
        if not target:
            return _error(400, "invalid_request", "to is required")
        return _reply(302, {"status": 302, "location": target}, {"Location": target})

    @app.post("/_sim/accounts")
    def add_account() -> Response:
        body = _json_body()
        optional = {k: _string(body, k) for k in ("clientId", "clientSecret") if k in body}
        creds = state.add_account(
            _string(body, "accountId"),
            _scopes(body),
            _string(body, "irisAppId", DEFAULT_APP_ID),
            client_id=optional.get("clientId"),
            client_secret=optional.get("clientSecret"),
        )
        return _reply(201, creds)

    @app.post("/_sim/accounts/<account_id>/revoke")
    def revoke(account_id: str) -> Response:
        body = _json() or {}
        revoke_tokens = bool(body.get("revokeTokens", False)) if isinstance(body, dict) else False
        if not state.revoke(account_id, revoke_tokens=revoke_tokens):
            return _error(404, "not_found", "unknown account")
        return _reply(200, {"accountId": account_id, "revoked": True, "tokensRevoked": revoke_tokens})

    @app.post("/_sim/identity")
    def identity() -> Response:
        body = _json() or {}
        if not isinstance(body, dict):
            raise _BadRequest("body must be a JSON object")
        claims, headers, expires_in = body.get("claims", {}), body.get("headers"), body.get("expires_in", 300)
        if not isinstance(claims, dict) or (headers is not None and not isinstance(headers, dict)):
            raise _BadRequest("claims and headers must be JSON objects")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise _BadRequest("expires_in must be an integer")
        token = state.identity_token(claims, expires_in=expires_in, headers=headers, jti=_flag(body, "jti"))
        return _reply(200, {"token": token})

    @app.post("/_sim/install")
    def install() -> Response:
        body = _json_body()
        callback_url, account_id = _string(body, "callbackUrl"), _string(body, "accountId")
        app_id, kind = _string(body, "irisAppId", DEFAULT_APP_ID), _string(body, "type", "INSTALLED")
        if kind == "INSTALLED":
            added = state.add_account(account_id, _scopes(body), app_id)
            creds = {"clientId": added["clientId"], "clientSecret": added["clientSecret"]}
            message = {"type": kind, "irisAppId": app_id, "accountId": account_id, **creds}
        else:
            # Any other message carries no credentials; after an uninstall the old ones stop working.
            if kind == "UNINSTALLED":
                state.revoke(account_id)
            creds, message = {}, {"type": kind, "irisAppId": app_id, "accountId": account_id}
        token = body.get("identityToken")
        if token is not None and (not isinstance(token, str) or not token):
            raise _BadRequest("identityToken must be a non-empty string")
        if token is None:
            # The identity's shape is up to the caller: Trackunit documents none of its claims.
            with_jti, account_claims = _flag(body, "jti"), _flag(body, "accountClaims")
            claims = {"irisAppId": app_id, "accountId": account_id} if account_claims else {}
            token = state.identity_token(claims, expires_in=300, jti=with_jti)
        try:
            answer = requests.post(
                callback_url,
                json=message,
                headers={"Trackunit-Identity": token},
                timeout=state.callback_timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return _error(502, "callback_unreachable", f"{type(exc).__name__}: {exc}")
        try:
            parsed: Any = answer.json()
        except ValueError:
            parsed = answer.text
        return _reply(
            200,
            {
                "callbackStatus": answer.status_code,
                "callbackResponse": parsed,
                "accountId": account_id,
                **creds,
                "identityToken": token,
            },
        )

    @app.post("/_sim/behaviour")
    def behaviour() -> Response:
        try:
            return _reply(200, state.configure(**_json_body()))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc

    @app.post("/_sim/api-behaviour")
    def api_behaviour() -> Response:
        try:
            return _reply(200, state.configure_api(**_json_body()))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc

    @app.get("/_sim/api-log")
    def api_log() -> Response:
        return _reply(
            200,
            {
                "requests": [
                    {
                        "method": r.method,
                        "path": r.path,
                        "query": r.query,
                        "headers": r.headers,
                        "body": r.body.decode("utf-8", errors="replace"),
                    }
                    for r in state.api_log
                ]
            },
        )

    @app.post("/_sim/reset")
    def reset() -> Response:
        state.reset()
        return _reply(200, {"behaviour": state.behaviour})

    @app.get("/_sim/stats")
    def stats() -> Response:
        return _reply(200, state.stats())

    return app
