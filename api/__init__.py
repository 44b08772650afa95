"""HTTP blueprints: parse and validate the request, call one service, shape the JSON.

Nothing here knows Redis key names or cryptography.
"""

from __future__ import annotations

from flask import Flask

from api import (
    accounts,
    admission,
    apikeys,
    callback,
    errors,
    events,
    health,
    hotpath,
    hotproxy,
    metrics,
    openapi,
    proxy,
    requestlog,
    tokens,
)


def init_app(app: Flask, *, max_in_flight: int) -> None:
    hotproxy.init_app(app)  # a proxied call whose key and token are in memory is made before Flask
    hotpath.init_app(app)  # a token hit held in memory is answered before Flask (api.hotpath)
    # Outermost: a request is counted (or refused) before Flask or the hot path does any work on it.
    app.wsgi_app = admission.Admission(app.wsgi_app, max_in_flight)  # type: ignore[method-assign]
    requestlog.init_app(app)
    errors.init_app(app)
    app.before_request(admission.refuse_when_overloaded)  # right after the request id, before the API key
    app.before_request(apikeys.guard_v1)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(callback.bp)
    app.register_blueprint(accounts.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(proxy.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(openapi.bp)
