"""`/v1/accounts/<id>/proxy/<path>`: call Trackunit's API for an account without handling a token.

Errors of the vault itself carry `Token-Vault-Error: <code>`; an upstream
answer never does, so a caller can always tell the two apart.
"""

from __future__ import annotations

import re
import time
from urllib.parse import unquote

from flask import Blueprint, Response, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

from api.apikeys import scope_for
from api.bodies import read_body
from api.context import services
from api.errors import error_response
from api.requestlog import audit
from auth.tokens import Source
from core import metrics, tunables
from core.errors import InvalidPath, VaultError
from proxy.paths import upstream_url
from proxy.upstream import forwarded_headers

bp = Blueprint("proxy", __name__, url_prefix="/v1/accounts")


class AnyPath(PathConverter):
    """Like `path`, but also matches '' and a leading '/', so '//host' reaches our own refusal."""

    regex = r"[\s\S]*"  # also a decoded CR/LF ('.' stops at a newline): '%0a' reaches the refusal, not a 404
    part_isolating = False


def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("anypath", AnyPath)


bp.record_once(_register_converter)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
ROUTE_SEGMENTS = 5  # "", "v1", "accounts", the account id, "proxy"; the upstream path is the rest
_PROXY_PATH = re.compile(r"/v1/accounts/[^/]+/proxy/")


@bp.errorhandler(VaultError)
def _vault_error(exc: VaultError) -> Response:
    metrics.PROXY_REQUESTS.labels(exc.code).inc()
    return error_response(exc)


@bp.after_app_request
def _mark_vault_errors(response: Response) -> Response:
    """`Token-Vault-Error` on every error of the vault itself under a proxy path.

    App-wide, not only in this blueprint: werkzeug's routing refuses a method the proxy
    does not serve (405) before any blueprint is chosen, and that is the vault's answer too.
    """
    code = getattr(response, "vault_error_code", None)
    if code is not None and _PROXY_PATH.match(request.path):
        response.headers["Token-Vault-Error"] = code
    return response


def _raw_path() -> tuple[str, str]:
    """The path below the route's `/proxy/` and the query, exactly as the caller sent them (still encoded).

    Found by position, not by searching for "/proxy/": the route is
    `/v1/accounts/<account_id>/proxy/<path>`, so the upstream path is what follows the fifth '/'
    of the raw path, whatever the account id is (`proxy` included).
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
    if not raw.startswith("/"):  # absolute-form request target: http://host/v1/...
        raw = "/" + raw.partition("//")[2].partition("/")[2]
    path, _, query = raw.partition("?")
    script = request.environ.get("SCRIPT_NAME", "")  # the operator's mount point; never a client header
    if script and path.startswith(script + "/"):
        path = path[len(script) :]
    parts = path.split("/", ROUTE_SEGMENTS)
    if len(parts) <= ROUTE_SEGMENTS or unquote(parts[ROUTE_SEGMENTS - 1]) != "proxy":
        raise InvalidPath("A path below the API is required.")
    return parts[ROUTE_SEGMENTS], query


@bp.route("/<account_id>/proxy/<anypath:path>", methods=METHODS)
def proxy(account_id: str, path: str):
    svc = services()
    raw_path, raw_query = _raw_path()
    url = upstream_url(svc.config.api_url, raw_path, raw_query)
    scope = scope_for(request.headers.get("Trackunit-Scope"))  # the API key's scope ceiling
    body = read_body(tunables.PROXY_MAX_BODY_BYTES) or None
    started = time.monotonic()

    token = svc.tokens.get_token(account_id, scope)
    api = svc.trackunit_api
    deadline = api.deadline()  # over the whole exchange: both sends, and the answer's last byte
    upstream = None
    try:
        upstream = api.send(request.method, url, forwarded_headers(request.headers, token.access_token), body, deadline)
        if upstream.status == 401 and token.source is Source.CACHE:
            # The cached token was refused (revoked early, say): one forced refresh, one retry, unless the
            # refresh hands back this very token (a forced refresh fetched it within FORCE_REFRESH_FLOOR).
            refreshed = svc.tokens.get_token(account_id, scope, force_refresh=True)
            if refreshed.access_token != token.access_token:
                upstream.close()
                token = refreshed
                upstream = api.send(
                    request.method, url, forwarded_headers(request.headers, token.access_token), body, deadline
                )
    except BaseException:
        if upstream is not None:
            upstream.close()  # e.g. the forced refresh after a 401 failed: that answer is never sent
        deadline.close()
        raise
    metrics.PROXY_REQUESTS.labels(f"{upstream.status // 100}xx").inc()
    audit(
        "proxy_call",
        account_id=account_id,
        method=request.method,
        path=raw_path[:200],
        upstream_status=upstream.status,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    # The body streams after the view has returned; it needs no request context (upstream.body is the
    # pool's stream), so none is pushed again around it (that was a few per cent of a proxied call).
    response = Response(upstream.body, status=upstream.status)
    response.headers.clear()
    for name, value in upstream.headers:
        response.headers.add(name, value)
    response.call_on_close(upstream.close)
    response.call_on_close(deadline.close)
    return response
