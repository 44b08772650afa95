"""Connections to Trackunit are reused at the in-flight count: two rounds of N concurrent calls
open N connections, not a new one per call above requests' default pool of 10."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from auth.trackunit import TrackunitAuth
from proxy.upstream import TrackunitApi

CALLS = 30  # above requests' default pool size (10)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _answer(self, body: bytes) -> None:
        time.sleep(0.3)  # long enough for all of a round to be in flight together
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(b'{"assets": []}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(json.dumps({"access_token": "tok", "token_type": "Bearer", "expires_in": 3600}).encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.connections, httpd.lock = 0, threading.Lock()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def rounds(server, call) -> list[int]:
    """Connections the server had accepted after each of two rounds of CALLS concurrent calls."""
    seen = []
    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        for _ in range(2):
            list(pool.map(lambda _: call(), range(CALLS)))
            seen.append(server.connections)
    return seen


def proxy_call(api: TrackunitApi, url: str) -> None:
    deadline = api.deadline()
    answer = api.send("GET", url + "/api/asset/v1/assets", {"Accept": "application/json"}, None, deadline)
    try:
        assert answer.status == 200 and b"".join(answer.body) == b'{"assets": []}'
    finally:
        answer.close()
        deadline.close()


def test_the_proxy_reuses_a_connection_per_call_in_flight(server):
    api = TrackunitApi(pool_size=CALLS)
    first, second = rounds(server, lambda: proxy_call(api, server.url))
    assert first <= CALLS
    assert second == first  # the second round opened none


def test_the_token_endpoint_reuses_a_connection_per_fetch_in_flight(server):
    auth = TrackunitAuth(server.url + "/apptoken", pool_size=CALLS)
    first, second = rounds(server, lambda: auth.fetch_token("client", "secret", ("asset.view",)))
    assert first <= CALLS
    assert second == first


def test_requests_default_pool_would_reopen_connections(server):
    """The failure the sizing prevents (what the proxy did before): calls above 10 reconnect."""
    api = TrackunitApi()  # requests' default, 10 per host
    first, second = rounds(server, lambda: proxy_call(api, server.url))
    assert second > first
