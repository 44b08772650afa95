"""Fixtures: a real redis-server on a free port, the simulator over real HTTP, the app wired to both."""
from __future__ import annotations

import base64
import threading

import pytest
import requests

from app import create_app
from core.config import Config
from simulator import SigningKey, create_simulator, serve_in_thread
from tests.support.redis_server import RedisServer

VAULT_KEY = base64.b64encode(bytes(range(32))).decode()
OLD_KEY = base64.b64encode(bytes(range(100, 132))).decode()
API_KEY = "test-api-key-0123456789"
APP_ID = "@organization/appname"
APP_SCOPES = "asset.view account.view account.alert.view?"


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    _stop_invalidation_listeners()
    server.stop()


@pytest.fixture(autouse=True, scope="module")
def _no_listener_outlives_its_module(request):
    """Apps that a module's tests built without closing stop listening when the module ends.

    A stray listener reconnecting in the background (redis-py's jittered backoff uses `random`)
    would otherwise run beside later tests, Hypothesis's among them.
    """
    yield
    if "integration" in str(request.node.path):
        _stop_invalidation_listeners()


def _stop_invalidation_listeners() -> None:
    """Stop the listener threads of apps that tests did not close, before their Redis goes away.

    Otherwise they log "subscription lost" after pytest has closed its streams (a logging error).
    """
    import gc

    from auth.memory import InvalidationListener

    listeners = [obj for obj in gc.get_objects() if isinstance(obj, InvalidationListener)]
    for listener in listeners:
        listener.stop()
    for thread in threading.enumerate():
        if thread.name == "itv-invalidation":
            thread.join(timeout=2)


@pytest.fixture
def redis_client(redis_server):
    """A client of the test Redis, flushed around each test (restarted first if a test stopped it)."""
    if redis_server.process is None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    yield client
    if redis_server.process is None:
        redis_server.start()
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def signing_key():
    """One RSA key for every simulator of the run (making one takes ~0.1 s)."""
    return SigningKey()


@pytest.fixture
def sim_app(signing_key):
    """A fresh simulator (accounts, counters, behaviour) for each test."""
    return create_simulator(signing_key=signing_key)


@pytest.fixture
def sim(sim_app):
    """The simulator's state object (counters, behaviour), for assertions and fault injection."""
    return sim_app.extensions["simulator"]


@pytest.fixture
def sim_server(sim_app):
    server = serve_in_thread(sim_app, log_requests=False)
    yield server
    server.shutdown()


@pytest.fixture
def env(redis_server, redis_client, sim_server) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "VAULT_KEY": VAULT_KEY,
        "API_KEYS": f"ops:{API_KEY}",
        "IRIS_APP_ID": APP_ID,
        "APP_SCOPES": APP_SCOPES,
        "TRACKUNIT_TOKEN_URL": f"{sim_server.url}/apptoken",
        "TRACKUNIT_JWKS_URL": f"{sim_server.url}/api/marketplace/jwks",
        "TRACKUNIT_API_URL": sim_server.url,
        "KEY_PREFIX": "test",
    }


@pytest.fixture
def app(env):
    app = create_app(Config.from_env(env))
    yield app
    app.extensions["vault"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def vault_server(app):
    """The app served over real HTTP (a thread), for the simulator's callbacks."""
    server = serve_in_thread(app, log_requests=False)
    yield server
    server.shutdown()


@pytest.fixture
def install(sim_server, vault_server):
    """Install an account the way Trackunit does: the simulator signs and POSTs the callback."""

    def _install(account_id: str = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3", scopes=("asset.view", "account.view"),
                 **extra) -> dict:
        response = requests.post(
            f"{sim_server.url}/_sim/install",
            json={"callbackUrl": f"{vault_server.url}/appinstall", "accountId": account_id,
                  "irisAppId": APP_ID, "scopes": list(scopes), **extra},
            timeout=15,
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["callbackStatus"] == 200, result
        return result

    return _install


# In CI a skipped test is a test that did not run: fail the session instead of counting it.
_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    import os

    if os.environ.get("CI") and _skipped and exitstatus == 0:
        print(f"\nCI: {len(_skipped)} test(s) were skipped; failing: {_skipped[:5]}")
        session.exitstatus = 1
