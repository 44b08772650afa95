"""The proxied call of a key and token the worker remembers, made before Flask.

A `GET`, `POST`, `PUT`, `PATCH` or `DELETE` to `/v1/accounts/<id>/proxy/<path>` without a body,
whose API key and token this worker's memory holds, is sent upstream from here and answered
with what the Flask view (`api.proxy`) would answer: the same upstream call (`proxy.call`), the
same status, headers, streamed body, error shape, audit line and counters, without a request
context, routing or hooks (together about a quarter of a proxied call's CPU).

Everything this path cannot decide without waiting goes on to the app unchanged, before anything
is sent upstream: a missing, unknown, expired or forgotten key, a missing permission, a
rate-limited key, a scope outside the key's ceiling, an invalid account id or path, a token this
worker does not hold, a body (bounded reads live in the view), a HEAD or OPTIONS, an upgrade
request, a mount point (SCRIPT_NAME), a server that keeps no raw request target. So every
refusal before the call is answered by the one place that answers them. Once the call is sent,
this path answers its end itself: the upstream's answer, or the error the view would give (a
timeout, an unreachable API, a refused refresh after a 401), through the same `error_response`.
The in-flight count and the client deadlines of `api.admission` wrap this as they wrap the app.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from werkzeug.datastructures import EnvironHeaders

from api import apikeys, permissions, proxy, requestlog
from api.admission import OVERLOADED
from api.early import EarlyAnswers, attempt, remembered_caller
from api.errors import error_response, log_unexpected
from auth.callers import Caller
from auth.tokens import IssuedToken
from core import metrics
from core.errors import VaultError
from proxy.call import close_call, exchange, raw_target
from proxy.paths import upstream_url
from vault.accounts import valid_account_id

if TYPE_CHECKING:
    from flask import Flask


log = logging.getLogger(__name__)

PREFIX = "/v1/accounts/"
ROUTE = "/v1/accounts/<account_id>/proxy/<anypath:path>"  # the Flask rule it stands in for
ENDPOINT = "proxy.proxy"
METHODS = frozenset(proxy.METHODS)
_SEGMENTS = 6  # "", "v1", "accounts", the account id, "proxy", the upstream path


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """What a call needs once it is known this path can make it."""

    account_id: str
    caller: Caller
    token: IssuedToken
    url: str
    raw_path: str
    scope: str | None


class ProxyCalls(EarlyAnswers):
    """The middleware (`api.early.EarlyAnswers`)."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if (
            path.startswith(PREFIX)
            and environ.get("REQUEST_METHOD") in METHODS
            and not environ.get(OVERLOADED)
            and environ.get("CONTENT_LENGTH") in (None, "", "0")
            and "HTTP_TRANSFER_ENCODING" not in environ
            and "HTTP_UPGRADE" not in environ
            and not environ.get("SCRIPT_NAME")
            and environ.get("RAW_URI")
        ):
            started = time.monotonic()
            call = attempt(log, "proxy call", lambda: self._prepare(environ, path))
            if call is not None:
                return self._send(environ, start_response, started, call)
        return self.app(environ, start_response)

    def _prepare(self, environ: dict, path: str) -> _Call | None:
        """The call, if this worker can make it without waiting and without refusing; None: the app answers."""
        parts = path.split("/", _SEGMENTS - 1)
        if len(parts) != _SEGMENTS or parts[1] != "v1" or parts[2] != "accounts" or parts[4] != "proxy":
            return None
        account_id = parts[3]
        if not valid_account_id(account_id):
            return None
        services = self.services
        caller = remembered_caller(services, environ)
        method = environ["REQUEST_METHOD"]
        if (
            caller is None
            or caller.policy.rate is not None
            or not caller.policy.allows(permissions.required(ENDPOINT, method))
        ):
            return None
        try:
            raw_path, raw_query = raw_target(environ)
            url = upstream_url(services.config.api_url, raw_path, raw_query)
            scope = apikeys.scope_within(caller.policy, environ.get("HTTP_TRACKUNIT_SCOPE"), services.config.app_scopes)
            token = services.tokens.remembered(account_id, scope)
        except VaultError:
            return None  # the app refuses it, and counts the refusal
        if token is None:
            return None
        return _Call(account_id, caller, token, url, raw_path, scope)

    def _send(self, environ: dict, start_response: Callable, started: float, call: _Call) -> Iterable[bytes]:
        """Make the call and answer it: what the view, its hooks and its error handlers would answer."""
        services = self.services
        method = environ["REQUEST_METHOD"]
        rid = requestlog.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            upstream, deadline = exchange(
                services.tokens,
                services.trackunit_api,
                method,
                call.url,
                EnvironHeaders(environ),
                None,
                call.token,
                call.account_id,
                call.scope,
            )
        except Exception as exc:
            return self._error(environ, start_response, started, call, rid, exc)
        try:
            status = upstream.status
            metrics.PROXY_REQUESTS.labels(f"{status // 100}xx").inc()
            requestlog.log_audit(
                "proxy_call",
                proxy.call_fields(call.account_id, method, call.raw_path, status, started),
                extra=requestlog.line_fields(rid, method, ROUTE, call.account_id, status, started, call.caller.name),
            )
            response = proxy.answer(upstream, deadline)
            response.headers["X-Request-ID"] = rid
        except BaseException as exc:
            close_call(upstream, deadline)
            if not isinstance(exc, Exception):
                raise  # a greenlet killed, say: nothing more is answered
            return self._error(environ, start_response, started, call, rid, exc)
        return response(environ, start_response)  # a refused start closes the call (api.proxy.answer)

    def _error(
        self, environ: dict, start_response: Callable, started: float, call: _Call, rid: str, exc: Exception
    ) -> Iterable[bytes]:
        """The view's error answer (api.proxy's and api.errors' handlers), its counter and its line."""
        if isinstance(exc, VaultError):
            metrics.PROXY_REQUESTS.labels(exc.code).inc()
            error = exc
        else:
            log_unexpected(exc)
            error = VaultError()
        with self._flask.app_context():
            response = error_response(error)
        response.headers["Token-Vault-Error"] = error.code
        response.headers["X-Request-ID"] = rid
        method = environ["REQUEST_METHOD"]
        requestlog.log_line(
            requestlog.line_fields(rid, method, ROUTE, call.account_id, response.status_code, started, call.caller.name)
        )
        return response(environ, start_response)


def init_app(app: Flask) -> None:
    app.wsgi_app = ProxyCalls(app.wsgi_app, app)  # type: ignore[method-assign]
