"""The simulator's server: keep-alive, HTTPS, and the connection and in-flight counters the bench reads.

Issue 13's connection-reuse target compares the connections the simulator accepted with the calls
that were in flight; these tests fail if a counter misses or double-counts, or if a connection
cannot actually be reused (werkzeug's own server closes every one).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from simulator import create_simulator, serve_in_thread


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def sim_app():
    return create_simulator()


@pytest.fixture
def state(sim_app):
    return sim_app.extensions["simulator"]


@pytest.fixture
def server(sim_app):
    server = serve_in_thread(sim_app, log_requests=False)
    yield server
    server.shutdown()


def test_one_session_reuses_one_connection(server, state):
    with requests.Session() as session:
        answers = [session.get(server.url + "/_sim/stats", timeout=5) for _ in range(5)]
    assert all(a.status_code == 200 for a in answers)
    assert all(a.headers.get("Connection", "").lower() != "close" for a in answers)
    assert state.connection_stats["connections_accepted"] == 1
    # what /_sim/stats shows counts the connection the request itself came on
    assert answers[-1].json()["connections_accepted"] == 1


def test_each_new_connection_is_counted_and_closed_ones_leave_the_open_gauge(server, state):
    for _ in range(3):
        with requests.Session() as session:
            session.get(server.url + "/_sim/stats", timeout=5).raise_for_status()
    assert state.connection_stats["connections_accepted"] == 3
    assert wait_for(lambda: state.connection_stats["connections_open"] == 0)
    assert state.connection_stats["connections_open_peak"] >= 1


def test_open_connections_peak_counts_connections_held_at_once(server, state):
    sessions = [requests.Session() for _ in range(4)]
    try:
        for session in sessions:
            session.get(server.url + "/_sim/stats", timeout=5).raise_for_status()
        stats = state.connection_stats
        assert stats["connections_open"] == 4
        assert stats["connections_open_peak"] == 4
    finally:
        for session in sessions:
            session.close()
    assert wait_for(lambda: state.connection_stats["connections_open"] == 0)


def test_reset_starts_the_counters_again(server, state):
    with requests.Session() as session:
        session.get(server.url + "/_sim/stats", timeout=5)
        assert session.post(server.url + "/_sim/reset", timeout=5).status_code == 200
        after = session.get(server.url + "/_sim/stats", timeout=5).json()
    assert after["connections_accepted"] == 0  # the same connection, accepted before the reset
    assert after["connections_open"] == 1 and after["connections_open_peak"] == 1  # gauges survive a reset
    with requests.Session() as session:
        assert session.get(server.url + "/_sim/stats", timeout=5).json()["connections_accepted"] == 1


def test_request_bodies_never_leak_into_the_next_request_on_the_connection(server, state):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request(
            "POST",
            "/apptoken",
            body=b"grant_type=client_credentials&client_id=x&client_secret=" + b"a" * 5000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        first = conn.getresponse()
        first.read()
        conn.request(
            "POST",
            "/_sim/behaviour",
            body=iter([b'{"expires_in"', b": 60}"]),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        second = conn.getresponse()
        assert second.status == 200
        assert b'"expires_in":60' in second.read().replace(b" ", b"")
        conn.request("GET", "/_sim/stats")
        third = conn.getresponse()
        assert third.status == 200
        third.read()
    finally:
        conn.close()
    assert first.status == 401  # unknown client: the form was read
    assert state.connection_stats["connections_accepted"] == 1


def test_a_body_the_app_did_not_read_closes_the_connection_after_the_answer(server, state):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        # JSON to the token endpoint: answered 400 without reading the body
        conn.request(
            "POST", "/apptoken", body=b'{"x": "' + b"a" * 5000 + b'"}', headers={"Content-Type": "application/json"}
        )
        first = conn.getresponse()
        first.read()
        assert first.status == 400
        assert first.headers.get("Connection") == "close"
        conn.request("GET", "/_sim/stats")  # http.client reconnects
        second = conn.getresponse()
        assert second.status == 200
        second.read()
    finally:
        conn.close()
    assert state.connection_stats["connections_accepted"] == 2


def test_streamed_answers_without_length_are_chunked_and_the_connection_stays_usable(server, state):
    state.add_account("acc-1", ["asset.view"])
    with requests.Session() as session:
        token = session.post(
            server.url + "/apptoken",
            data={
                "grant_type": "client_credentials",
                "client_id": state._clients_by_account["acc-1"].client_id,
                "client_secret": state._clients_by_account["acc-1"].client_secret,
            },
            timeout=5,
        ).json()["access_token"]
        big = session.get(
            server.url + "/api/test/v1/large",
            params={"bytes": 200_000},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert big.headers.get("Transfer-Encoding") == "chunked"
        assert len(big.content) == 200_000
        assert session.get(server.url + "/_sim/stats", timeout=5).status_code == 200
    assert state.connection_stats["connections_accepted"] == 1


def test_http_1_0_clients_get_connection_close(server, state):
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /_sim/stats HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200") and b"connection: close" in head


def test_keep_alive_false_is_werkzeugs_behaviour(sim_app, state):
    server = serve_in_thread(sim_app, log_requests=False, keep_alive=False)
    try:
        with requests.Session() as session:
            answers = [session.get(server.url + "/_sim/stats", timeout=5) for _ in range(3)]
    finally:
        server.shutdown()
    assert all(a.headers.get("Connection") == "close" for a in answers)
    assert state.connection_stats["connections_accepted"] == 3


def test_shutdown_ends_idle_keep_alive_connections(sim_app, state):
    server = serve_in_thread(sim_app, log_requests=False)
    session = requests.Session()
    try:
        session.get(server.url + "/_sim/stats", timeout=5).raise_for_status()
        assert state.connection_stats["connections_open"] == 1
        server.shutdown()
        assert wait_for(lambda: state.connection_stats["connections_open"] == 0)
        with pytest.raises(requests.ConnectionError):
            session.get(server.url + "/_sim/stats", timeout=5)
    finally:
        session.close()
        server.shutdown()


def test_idle_connections_are_closed_after_the_idle_timeout(sim_app, state):
    from simulator.server import ServerThread

    server = ServerThread(sim_app, log_requests=False, idle_timeout=0.3).start()
    try:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"GET /_sim/stats HTTP/1.1\r\nHost: x\r\n\r\n")
            started = time.monotonic()
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert time.monotonic() - started < 3
        assert data.startswith(b"HTTP/1.1 200")
        assert wait_for(lambda: state.connection_stats["connections_open"] == 0)
    finally:
        server.shutdown()


def _get(url: str) -> int:
    return requests.get(url, timeout=10).status_code


def test_api_requests_in_flight_peak(server, state):
    state.configure_api(delay=0.4)
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(_get, [server.url + "/api/asset/v1/assets"] * 6))
    assert codes == [401] * 6  # no token: answered after the delay, and counted all the same
    stats = state.connection_stats
    assert stats["api_in_flight_peak"] == 6
    assert stats["api_in_flight"] == 0
    state.reset()
    assert state.connection_stats["api_in_flight_peak"] == 0


def test_token_requests_in_flight_peak(server, state):
    state.configure(delay=0.4)
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(
            pool.map(
                lambda _: (
                    requests.post(
                        server.url + "/apptoken", data={"grant_type": "client_credentials"}, timeout=10
                    ).status_code
                ),
                range(5),
            )
        )
    stats = state.connection_stats
    assert stats["token_in_flight_peak"] == 5
    assert stats["token_in_flight"] == 0
    assert stats["api_in_flight_peak"] == 0


def test_a_request_cut_short_by_reset_leaves_the_in_flight_gauge_at_zero(server, state):
    state.configure_api(delay=30)
    thread = threading.Thread(target=_get, args=(server.url + "/api/asset/v1/assets",), daemon=True)
    thread.start()
    assert wait_for(lambda: state.connection_stats["api_in_flight"] == 1)
    state.reset()  # ends the pending delay
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert wait_for(lambda: state.connection_stats["api_in_flight"] == 0)


# HTTPS -------------------------------------------------------------------------------------------


def test_https_with_the_ca_bundle_counts_one_handshake_per_connection(tls_server, state, certificates):
    assert tls_server.url.startswith("https://")
    with requests.Session() as session:
        session.trust_env, session.verify = False, str(certificates.ca)  # else REQUESTS_CA_BUNDLE wins
        for _ in range(4):
            assert session.get(tls_server.url + "/_sim/stats", timeout=5).status_code == 200
    with requests.Session() as session:
        session.trust_env, session.verify = False, str(certificates.ca)  # else REQUESTS_CA_BUNDLE wins
        assert (
            session.get(tls_server.url.replace("127.0.0.1", "localhost") + "/_sim/stats", timeout=5).status_code == 200
        )
    stats = state.connection_stats
    assert stats["connections_accepted"] == 2
    assert stats["tls_connections_accepted"] == 2
    assert stats["tls_handshakes"] == 2
    assert stats["tls_handshake_failures"] == 0


def test_a_client_that_does_not_trust_the_ca_fails_its_handshake_and_is_counted(tls_server, state):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_server.url + "/_sim/stats", timeout=5)  # the default (certifi) bundle
    assert wait_for(lambda: state.connection_stats["tls_handshake_failures"] == 1)
    stats = state.connection_stats
    assert stats["tls_handshakes"] == 0
    assert stats["tls_connections_accepted"] == 1


def test_the_ca_verifies_with_a_strict_default_context(tls_server, certificates):
    context = ssl.create_default_context(cafile=str(certificates.ca))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    conn = http.client.HTTPSConnection(tls_server.host, tls_server.port, context=context, timeout=5)
    try:
        conn.request("GET", "/_sim/stats")
        answer = conn.getresponse()
        assert answer.status == 200
        assert answer.read()
    finally:
        conn.close()


def test_a_slow_handshake_does_not_hold_up_other_clients(tls_server, state, certificates):
    with socket.create_connection((tls_server.host, tls_server.port), timeout=5):  # connects, never says hello
        started = time.monotonic()
        with requests.Session() as session:
            session.trust_env, session.verify = False, str(certificates.ca)  # else REQUESTS_CA_BUNDLE wins
            assert session.get(tls_server.url + "/_sim/stats", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
    assert state.connection_stats["tls_handshakes"] == 1


def test_the_cli_serves_https_beside_http_on_one_state(tmp_path):
    import re
    import subprocess
    import sys

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "serve",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--quiet",
            "--cert-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("CA bundle" in line for line in lines):
            lines.append(process.stdout.readline())
        text = "".join(lines)
        http_url = re.search(r"simulator on (http://\S+)", text).group(1)
        https_url = re.search(r"HTTPS: +(https://\S+)", text).group(1)
        ca = re.search(r"CA bundle: (\S+)", text).group(1)
        assert ca == str(tmp_path / "ca.pem")
        with requests.Session() as session:
            session.trust_env, session.verify = False, ca
            session.get(https_url + "/_sim/stats", timeout=5).raise_for_status()
        stats = requests.get(http_url + "/_sim/stats", timeout=5).json()
        assert stats["tls_handshakes"] == 1 and stats["tls_connections_accepted"] == 1
        assert stats["connections_accepted"] == 2
    finally:
        process.terminate()
        process.wait(timeout=10)
