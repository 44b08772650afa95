"""`/v1/accounts/<id>/proxy/<path>`: call Trackunit's API for an account without handling a token.

Errors of the vault itself carry `Token-Vault-Error: <code>`; an upstream
answer never does, so a caller can always tell the two apart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from flask import Blueprint, Response, g, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

from api.apikeys import scope_for
from api.bodies import read_body
from api.context import services
from api.errors import error_response
from api.requestlog import audit
from core import metrics, tunables
from core.deadline import FetchDeadline
from core.errors import VaultError
from proxy.call import close_call, exchange, raw_target
from proxy.paths import upstream_url
from proxy.upstream import UpstreamResponse

bp = Blueprint("proxy", __name__, url_prefix="/v1/accounts")


class AnyPath(PathConverter):
    """Like `path`, but also matches '' and a leading '/', so '//host' reaches our own refusal."""

    regex = r"[\s\S]*"  # also a decoded CR/LF ('.' stops at a newline): '%0a' reaches the refusal, not a 404
    part_isolating = False


def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("anypath", AnyPath)


bp.record_once(_register_converter)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
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


@bp.route("/<account_id>/proxy/<anypath:path>", methods=METHODS)
def proxy(account_id: str, path: str):
    svc = services()
    raw_path, raw_query = raw_target(request.environ, request.full_path)
    url = upstream_url(svc.config.api_url, raw_path, raw_query)
    scope = scope_for(request.headers.get("Trackunit-Scope"))  # the API key's scope ceiling
    body = read_body(tunables.PROXY_MAX_BODY_BYTES) or None
    started = time.monotonic()

    token = svc.tokens.get_token(account_id, scope)
    upstream, deadline = exchange(
        svc.tokens, svc.trackunit_api, request.method, url, request.headers, body, token, account_id, scope
    )
    try:
        metrics.PROXY_REQUESTS.labels(f"{upstream.status // 100}xx").inc()
        audit("proxy_call", **call_fields(account_id, request.method, raw_path, upstream.status, started))
        response = answer(upstream, deadline)
    except BaseException:
        close_call(upstream, deadline)
        raise
    g.proxy_answer = response  # closed at teardown if the server never gets it (_close_unsent)
    return response


@bp.teardown_request
def _close_unsent(exc: BaseException | None) -> None:
    """Close the call of an answer Flask never handed to the server: an after_request hook raised or
    replaced it, or the server refused to start it. A started answer is closed by the server."""
    response = g.pop("proxy_answer", None)
    if isinstance(response, _Answer) and not response.handed:
        response.close()


def call_fields(account_id: str, method: str, raw_path: str, status: int, started: float) -> dict[str, object]:
    """The `proxy_call` audit event's fields (the view and `api.hotproxy` log the same)."""
    return {
        "account_id": account_id,
        "method": method,
        "path": raw_path[:200],
        "upstream_status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }


class _Answer(Response):
    """A streamed upstream answer that closes its call if the server refuses to start it.

    The server closes an answer it has started; one whose status or headers it refuses (its
    `start_response` raises) is never handed back, so nothing else would close the upstream
    connection and the deadline. `handed`: the server has it (and will close it).
    """

    handed = False

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            body = super().__call__(environ, start_response)
        except BaseException:
            self.close()
            raise
        self.handed = True
        return body


def answer(upstream: UpstreamResponse, deadline: FetchDeadline) -> Response:
    """The upstream answer as ours: its status, the headers let through, the body streamed.

    The body streams after the view has returned; it needs no request context (upstream.body is
    the pool's stream), so none is pushed again around it (that was a few per cent of a proxied call).
    """
    response = _Answer(upstream.body, status=upstream.status)
    response.headers.clear()
    for name, value in upstream.headers:
        response.headers.add(name, value)
    response.call_on_close(lambda: close_call(upstream, deadline))
    return response
