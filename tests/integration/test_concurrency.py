"""Many calls in flight, under gunicorn as the Procfile runs it (the gevent worker).

Behaviour, not speed: what the simulator saw in flight at once, which answers came back,
which connections the server closed. Every wait is bounded; the longest test takes ~15 s.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from core import tunables
from tests.support.constants import API_KEY, APP_ID
from tests.support.gunicorn import GunicornServer

# Issue 18: every test here runs on a single Redis and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.topologies("single", "cluster")

ACCOUNT = "acc-concurrency"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROXIED = {**AUTH, "Trackunit-Scope": "asset.view"}
ASSETS = "proxy/api/asset/v1/assets"


# Helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def gunicorn(env, sim_server):
    """Start the service under gunicorn (the Procfile's command), install ACCOUNT, cache its token."""
    servers: list[GunicornServer] = []

    def start(workers: int = 1, **extra_env: str) -> GunicornServer:
        server = GunicornServer({**env, **extra_env}, workers=workers)
        servers.append(server)
        server.start()
        answer = requests.post(
            f"{sim_server.url}/_sim/install",
            json={
                "callbackUrl": f"{server.url}/appinstall",
                "accountId": ACCOUNT,
                "irisAppId": APP_ID,
                "scopes": ["asset.view", "account.view"],
            },
            timeout=20,
        ).json()
        assert answer["callbackStatus"] == 200, answer
        for _ in range(workers * 4):  # every worker caches the token (and starts listening)
            assert token(server).status_code == 200
        return server

    yield start
    for server in servers:
        server.stop()


def token(server: GunicornServer, timeout: float = 10) -> requests.Response:
    return requests.get(f"{server.url}/v1/accounts/{ACCOUNT}/token", headers=AUTH, timeout=timeout)


def proxied(server: GunicornServer, timeout: float = 30) -> requests.Response:
    return requests.get(f"{server.url}/v1/accounts/{ACCOUNT}/{ASSETS}", headers=PROXIED, timeout=timeout)


def wait_for(condition, seconds: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def most_in_flight(arrivals: list[float], delay: float) -> int:
    """The most requests the simulator held at once: each sleeps `delay` from its arrival."""
    arrivals = sorted(arrivals)
    return max(sum(1 for other in arrivals if at <= other < at + delay) for at in arrivals)


def hold_proxied_calls(server: GunicornServer, sim, count: int) -> tuple[ThreadPoolExecutor, list]:
    """`count` proxied calls, started together and held by the simulator's API delay (set by the caller)."""
    pool = ThreadPoolExecutor(max_workers=count)
    futures = [pool.submit(proxied, server) for _ in range(count)]
    wait_for(lambda: len(sim.api_log) >= count, what=f"{count} proxied calls to reach the simulator")
    return pool, futures


# Many calls in flight ----------------------------------------------------------------------------


def test_a_hundred_proxied_calls_are_in_flight_at_once(gunicorn, sim):
    server = gunicorn(workers=2)  # the production default
    delay, calls = 2.0, 100
    sim.configure_api(delay=delay)
    barrier = threading.Barrier(calls)

    def call(_):
        barrier.wait(timeout=30)
        return proxied(server).status_code

    with ThreadPoolExecutor(max_workers=calls) as pool:
        statuses = list(pool.map(call, range(calls)))
    assert statuses == [200] * calls
    log = sim.api_log
    assert len(log) == calls
    # Each was held `delay` at the simulator: all of them were there at the same time
    # (gthread with 4 threads x 2 workers would have held 8).
    assert most_in_flight([r.at for r in log], delay) == calls


def test_token_hits_are_answered_while_every_proxied_call_hangs(gunicorn, sim):
    server = gunicorn(workers=1)
    sim.configure_api(delay=60)  # a stalled upstream; cut short by sim.reset() below
    pool, futures = hold_proxied_calls(server, sim, 40)
    try:
        hits = [token(server) for _ in range(20)]
        assert [r.status_code for r in hits] == [200] * 20
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert not any(f.done() for f in futures)  # the proxied calls were all still hanging
    finally:
        sim.reset()  # ends the delay: the held calls are answered
        pool.shutdown(wait=True)
    assert {f.result().status_code for f in futures} == {200}


# Overload -------------------------------------------------------------------------------------


def test_above_max_in_flight_it_is_503_overloaded_at_once_then_it_recovers(gunicorn, sim):
    limit = 4
    server = gunicorn(workers=1, MAX_IN_FLIGHT=str(limit))
    sim.configure_api(delay=60)
    pool, futures = hold_proxied_calls(server, sim, limit)
    try:
        refused = proxied(server, timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["Token-Vault-Error"] == "overloaded"  # the vault's answer, not Trackunit's
        assert len(sim.api_log) == limit  # refused before any upstream call
        hit = token(server)
        assert hit.status_code == 503 and hit.json()["error"]["code"] == "overloaded"
        assert "Token-Vault-Error" not in hit.headers
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200  # never refused
        assert not any(f.done() for f in futures)
    finally:
        sim.reset()
        pool.shutdown(wait=True)
    assert [f.result().status_code for f in futures] == [200] * limit
    # Recovered by itself: as many calls as the limit at once are served again.
    with ThreadPoolExecutor(max_workers=limit) as again:
        assert [r.status_code for r in again.map(lambda _: token(server), range(limit))] == [200] * limit
    assert proxied(server).status_code == 200
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "itv_overloaded_total 2.0" in metrics


# Slow clients ---------------------------------------------------------------------------------


def open_connection(server: GunicornServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.settimeout(0.5)
    return sock


received: dict[socket.socket, bytes] = {}


def closed_by_server(sock: socket.socket) -> bool | None:
    """True once the server has closed it (what it sent is kept in `received`); None while it is open."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            received[sock] = received.get(sock, b"") + data
    except (TimeoutError, BlockingIOError):
        return None
    except OSError:  # reset
        return True


def test_slow_clients_cannot_hold_the_service_and_stalled_ones_are_dropped(gunicorn):
    server = gunicorn(workers=1)  # every slow client on the one worker
    body = b'{"type": "INSTALLED", "irisAppId": "x", "accountId": "y"}' * 8
    headers_drip = b"GET /healthz HTTP/1.1\r\nHost: vault\r\nX-Slow: " + b"a" * 1000
    body_head = (
        b"POST /appinstall HTTP/1.1\r\nHost: vault\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    dripping = [(open_connection(server), "headers") for _ in range(25)]
    dripping += [(open_connection(server), "body") for _ in range(25)]
    for sock, kind in dripping:
        if kind == "body":
            sock.sendall(body_head)
    # Stalled: a few bytes, then nothing more.
    stalled_headers = open_connection(server)
    stalled_headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: vau")
    stalled_body = open_connection(server)
    stalled_body.sendall(body_head + body[:10])

    answered: list[int] = []
    closed_at: dict[str, float] = {}
    started = time.monotonic()
    sent = 0
    # One byte per connection every 2 s; between drips, the service is used as usual.
    while time.monotonic() - started < tunables.CLIENT_BODY_DEADLINE + 5 and len(closed_at) < 2:
        for sock, kind in dripping:
            source = headers_drip if kind == "headers" else body
            try:
                sock.sendall(source[sent : sent + 1])
            except OSError:
                pass  # closed by the server: checked below
        sent += 1
        for name, sock in (("headers", stalled_headers), ("body", stalled_body)):
            if name not in closed_at and closed_by_server(sock):
                closed_at[name] = time.monotonic() - started
        tick = time.monotonic()
        while time.monotonic() - tick < 2:
            answered.append(token(server, timeout=5).status_code)
            answered.append(requests.get(f"{server.url}/healthz", timeout=5).status_code)
            time.sleep(0.2)
    assert answered and set(answered) == {200}
    # The stalled clients were dropped: headers after gunicorn's keepalive (5 s), the body after
    # CLIENT_BODY_DEADLINE (10 s), not kept for as long as they like.
    assert set(closed_at) == {"headers", "body"}, closed_at
    # The drippers too: none sent a whole request in this time; every one was closed by the server.
    assert all(closed_by_server(sock) for sock, _ in dripping)
    # A late header block is just closed; a late body is answered 408 request_timeout first.
    late_bodies = [sock for sock, kind in dripping if kind == "body"] + [stalled_body]
    for sock in late_bodies:
        assert received.get(sock, b"").startswith(b"HTTP/1.1 408 "), received.get(sock, b"")[:100]
        assert b'"code":"request_timeout"' in received[sock].replace(b" ", b"")
    assert not any(received.get(sock) for sock, kind in dripping if kind == "headers")
    assert not received.get(stalled_headers)
    for sock, _ in dripping + [(stalled_headers, ""), (stalled_body, "")]:
        sock.close()


# SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_lets_calls_in_flight_finish_then_exits_cleanly(gunicorn, sim):
    server = gunicorn(workers=2)
    sim.configure_api(delay=3)
    pool, futures = hold_proxied_calls(server, sim, 10)
    server.process.send_signal(signal.SIGTERM)
    try:
        results = [f.result(timeout=30) for f in futures]
    finally:
        pool.shutdown(wait=True)
    assert [r.status_code for r in results] == [200] * 10  # drained, not cut
    assert server.process.wait(timeout=30) == 0
    with pytest.raises(requests.ConnectionError):
        token(server, timeout=5)  # and it no longer accepts
