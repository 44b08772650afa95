"""A proxied call's deadline cuts its own connections only, never one another call took from the pool."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import pytest

from core.errors import UpstreamTimeout
from proxy.upstream import TrackunitApi


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def upstream():
    """/a: a 503 with Retry-After: 1 at first, then an answer that never comes; /b: 30 bytes, 0.1 s apart."""
    calls = {"a": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/a":
                calls["a"] += 1
                if calls["a"] == 1:
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                time.sleep(6)
                return
            self.send_response(200)
            self.send_header("Content-Length", "30")
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_deadline_never_cuts_a_pooled_connection_another_call_took(upstream):
    short = TrackunitApi(deadline=2.0)
    long = TrackunitApi(pool=short.pool, deadline=30.0)  # the same pool, as every proxied call shares
    results: dict[str, object] = {}

    def call_a() -> None:  # its 503's connection goes back to the pool during the Retry-After wait
        deadline = short.deadline()
        try:
            short.send("GET", upstream + "/a", {}, None, deadline)
            results["a"] = "answered"
        except UpstreamTimeout:
            results["a"] = "timeout"
        finally:
            deadline.close()

    def call_b() -> None:  # takes that connection and streams for 3 s, past A's deadline
        deadline = long.deadline()
        answer = long.send("GET", upstream + "/b", {}, None, deadline)
        results["b"] = b"".join(answer.body)
        answer.close()
        deadline.close()

    a = threading.Thread(target=call_a)
    a.start()
    time.sleep(0.5)
    b = threading.Thread(target=call_b)
    b.start()
    a.join(20)
    b.join(20)
    assert results["a"] == "timeout"
    assert results["b"] == b"x" * 30  # whole: A's deadline did not cut B's connection
