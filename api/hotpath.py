"""The token hit answered from the worker's memory, before Flask: the request backends send most.

A `GET /v1/accounts/<id>/token` without a query string, whose API key and token this worker
remembers, is answered here with what the Flask view (`api.tokens`) would answer: the same
status, headers, body, audit line and counter, without a request context, routing or hooks
(together about half the cost of a hit). Everything else goes on to the app unchanged: a
missing, unknown, expired or forgotten key, a missing permission, a rate-limited key, a scope
outside the key's ceiling, an invalid account id, a token this worker does not hold, a HEAD, a
query string, an upgrade (WebSocket) request. So every refusal and every error is answered by
the one place that answers them.

Nothing here waits: memory is trusted only while the invalidation feed is fresh (as on the
Flask path), Redis is never read, and the only write is the once-a-minute "last used" of a
managed key, which the Flask path makes too (here also for a request that then goes on to the
app). The in-flight count and the client deadlines of `api.admission` wrap this as they wrap
the app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from api import apikeys, requestlog, tokens
from api.admission import OVERLOADED
from api.early import EarlyAnswers, attempt, remembered_caller
from auth.callers import Caller
from auth.tokens import IssuedToken
from core.errors import VaultError
from core.permissions import Permission
from vault.accounts import valid_account_id

if TYPE_CHECKING:
    from flask import Flask


log = logging.getLogger(__name__)

PREFIX = "/v1/accounts/"
SUFFIX = "/token"
ROUTE = "/v1/accounts/<account_id>/token"  # the Flask rule it stands in for (as the request line names it)
_HEADERS = [("Content-Type", "application/json"), *tokens.NO_STORE]


class TokenHits(EarlyAnswers):
    """The middleware (`api.early.EarlyAnswers`)."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if (
            path.startswith(PREFIX)
            and path.endswith(SUFFIX)
            and environ.get("REQUEST_METHOD") == "GET"
            and not environ.get("QUERY_STRING")
            and not environ.get(OVERLOADED)
            # An upgrade request (a WebSocket one matches no HTTP route in Flask): the app answers it.
            and "HTTP_UPGRADE" not in environ
        ):
            started = time.monotonic()
            hit = attempt(log, "token hit", lambda: self._hit(environ, path[len(PREFIX) : -len(SUFFIX)]))
            if hit is not None:
                return self._send(environ, start_response, started, *hit)
        return self.app(environ, start_response)

    def _hit(self, environ: dict, account_id: str) -> tuple[str, Caller, IssuedToken] | None:
        """(account id, caller, token) if this worker can answer from memory; None: the app answers."""
        if not valid_account_id(account_id):  # also refuses a "/": a path beneath goes to the app
            return None
        services = self.services
        caller = remembered_caller(services, environ)
        if caller is None or caller.policy.rate is not None or not caller.policy.allows(Permission.TOKEN_READ):
            return None
        try:
            scope = apikeys.scope_within(caller.policy, None, services.config.app_scopes)
            token = services.tokens.remembered(account_id, scope)
        except VaultError:
            return None  # the app refuses it, and counts the refusal
        if token is None:
            return None
        return account_id, caller, token

    @staticmethod
    def _send(
        environ: dict, start_response: Callable, started: float, account_id: str, caller: Caller, token: IssuedToken
    ) -> list[bytes]:
        """The view's answer, its counter and its audit line."""
        body = tokens.token_body(token)
        rid = requestlog.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        tokens.HITS.inc()
        requestlog.log_audit(
            "token_issued",
            {"account_id": account_id, "scopes": token.scope, "source": token.source},
            extra=requestlog.line_fields(rid, "GET", ROUTE, account_id, 200, started, caller.name),
        )
        start_response("200 OK", [*_HEADERS, ("Content-Length", str(len(body))), ("X-Request-ID", rid)])
        return [body]


def init_app(app: Flask) -> None:
    app.wsgi_app = TokenHits(app.wsgi_app, app)  # type: ignore[method-assign]
