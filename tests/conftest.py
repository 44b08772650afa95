"""Fixtures: a real redis-server on a free port, the simulator over real HTTP, apps wired to both.

Every app a test builds comes from `make_app` (`app` is its default one), which closes it when
the test ends; the session checks that no app's invalidation listener is left running.

Topologies: a test module (`pytestmark = pytest.mark.topologies("single", "cluster")`) or test
marked so runs once per topology named, its `redis_server`, `redis_client` and `env` built for
it (the test id shows it: `test_x[cluster]`). On "cluster" they are a Redis Cluster of 3
masters and 3 replicas (started once per session), a RedisCluster client whose `flushall`
empties every master, and REDIS_CLUSTER=true with the URL of one node. A test of such a module
that only holds on one server (it stops it, say) is marked `topologies("single")` itself. Without
the marker a test runs on the single Redis only. `cluster_client` and `sentinel_set` give the
cluster and a Sentinel set directly.
"""

from __future__ import annotations

import threading

import pytest

from app import create_app
from core.config import Config
from simulator import SigningKey, create_simulator, serve_in_thread
from simulator.tls import make_certificates
from tests.support.constants import API_KEY, service_env
from tests.support.gunicorn import GunicornServer
from tests.support.installer import Installer
from tests.support.redis_server import RedisClusterServers, RedisSentinelSet, RedisServer

LISTENER_THREAD = "itv-invalidation"  # the name auth.memory.feed gives its thread
TOPOLOGIES = ("single", "cluster")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "topologies(*names): run the test's Redis fixtures (redis_server, redis_client, env) on each of"
        " the topologies named (single, cluster); the closest marker wins",
    )


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("topologies")
    if marker is None or "topology" not in metafunc.fixturenames:
        return
    names = marker.args or TOPOLOGIES
    unknown = set(names) - set(TOPOLOGIES)
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown topologies {sorted(unknown)}")
    # Module scope, so that a module-scoped fixture may use `redis_server` (a gunicorn shared by a module).
    metafunc.parametrize("topology", names, indirect=True, ids=list(names), scope="module")


@pytest.fixture(scope="module")
def topology(request) -> str:
    """The Redis topology this test runs on: "single" unless the `topologies` marker parametrised it."""
    return getattr(request, "param", "single")


@pytest.fixture(scope="session")
def single_redis():
    server = RedisServer()
    server.start()
    yield server
    assert_no_listener_is_left()
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster of 3 masters and 3 replicas, started once per session (about 6 s)."""
    cluster = RedisClusterServers()
    cluster.start()
    yield cluster
    assert_no_listener_is_left()
    cluster.stop()


@pytest.fixture(scope="session")
def sentinel_set():
    """A master, its replica and 3 sentinels, started once per session (about 3 s)."""
    servers = RedisSentinelSet()
    servers.start()
    yield servers
    assert_no_listener_is_left()
    servers.stop()


@pytest.fixture(scope="module")
def redis_server(topology, request):
    """The test's Redis: the session's single server, or (topology "cluster") the session's cluster."""
    return request.getfixturevalue("redis_cluster" if topology == "cluster" else "single_redis")


@pytest.fixture
def cluster_client(redis_cluster):
    """A RedisCluster client of the session's cluster (every node running), every master flushed around the test."""
    redis_cluster.heal()
    client = redis_cluster.client()
    redis_cluster.flushall()
    yield client
    redis_cluster.heal()
    redis_cluster.flushall()
    client.close()


def assert_no_listener_is_left(timeout: float = 5.0) -> None:
    """Every app was closed by `make_app`, so every invalidation listener ends (within its ping interval).

    One still running would outlive the test Redis, reconnect in the background beside later tests
    (Hypothesis's among them) and log after pytest has closed its streams.
    """
    running = [thread for thread in threading.enumerate() if thread.name == LISTENER_THREAD]
    for thread in running:
        thread.join(timeout=timeout)
    left = [thread for thread in running if thread.is_alive()]
    assert not left, f"{len(left)} invalidation listener(s) still running: an app was not closed"


@pytest.fixture
def redis_client(redis_server, topology, request):
    """A client of the test Redis, flushed around each test (restarted first if a test stopped it)."""
    if topology == "cluster":
        yield request.getfixturevalue("cluster_client")
        return
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


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """The simulator's test CA and server certificate (simulator.tls), made once per run."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(sim_app, certificates):
    """The test's simulator (`sim_app`) served over HTTPS with `certificates`."""
    server = serve_in_thread(sim_app, log_requests=False, tls=certificates)
    yield server
    server.shutdown()


@pytest.fixture
def sim_server(sim_app):
    server = serve_in_thread(sim_app, log_requests=False)
    yield server
    server.shutdown()


@pytest.fixture
def env(redis_server, redis_client, sim_server, topology) -> dict[str, str]:
    variables = service_env(redis_server.url, sim_server.url)
    if topology == "cluster":
        variables["REDIS_CLUSTER"] = "true"
    return variables


@pytest.fixture
def make_app(env):
    """`make_app(**overrides)`: an app built from `env` with some variables changed; closed when the test ends."""
    built = []

    def _make_app(**overrides: str):
        app = create_app(Config.from_env({**env, **overrides}))
        built.append(app)
        return app

    yield _make_app
    for app in built:
        app.extensions["vault"].close()


@pytest.fixture
def app(make_app):
    return make_app()


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
def installer(sim, client, sim_server):
    """Install accounts as Trackunit does, through the test client (`installer.to(...)`: another vault)."""
    return Installer(sim, client, sim_url=sim_server.url)


@pytest.fixture
def install(sim, sim_server, vault_server):
    """`install(account_id, scopes, **options)`: the simulator signs and POSTs the callback over real HTTP."""
    return Installer(sim, vault_server.url, sim_url=sim_server.url).through_simulator


@pytest.fixture
def gunicorn(env):
    """`gunicorn(workers=4, **overrides)`: the service under gunicorn as the Procfile runs it, with the
    test environment (plus `overrides`); stopped when the test ends."""
    servers: list[GunicornServer] = []

    def start(*, workers: int = 4, **overrides: str) -> GunicornServer:
        server = GunicornServer({**env, **overrides}, workers=workers)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


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
