"""A token fetch ends within TRACKUNIT_FETCH_DEADLINE whatever the endpoint drips, and however
(`auth.deadline`, against raw sockets that send one byte at a time, each well inside the read timeout).
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

import tunables
from auth.trackunit import TrackunitAuth
from errors import AuthError, AuthUnavailable

SCOPES = ("account.view", "asset.view")


class DrippingEndpoint:
    """A token endpoint that sends the start of an answer at once, then one byte at a time.

    Each byte comes well inside the read timeout, so only a deadline on the whole fetch stops it.
    `framing` picks where the drip is:
    - "length": a 200's body with a Content-Length;
    - "chunked": the first chunk-size line (its extension): a reader waits for the whole line;
    - "gzip": the comment field of a gzip header: a decoding reader has no output until it ends;
    - "headers": a header line, before the status is even known;
    - "retried": the body of a 503, which urllib3 reads to the end before it retries.
    """

    FRAMINGS = ("length", "chunked", "gzip", "headers", "retried")

    def __init__(self, framing: str = "length", body_size: int = 200, interval: float = 0.05) -> None:
        self.framing, self.body_size, self.interval = framing, body_size, interval
        self.sent = 0
        self.connections = 0
        self.then_answer = False  # set: answer the next connections at once, with a token
        self.request = b""
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/apptoken"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _head(self) -> bytes:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if self.framing == "chunked":
            return head + b"Transfer-Encoding: chunked\r\n\r\n10;ext="
        if self.framing == "gzip":
            # magic, deflate, FCOMMENT, mtime, xfl, os; then the comment, dripped
            gzip_header = b"\x1f\x8b\x08\x10" + b"\x00" * 4 + b"\x00\x03"
            return head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
                len(gzip_header) + self.body_size, gzip_header)
        if self.framing == "headers":
            return head + b"X-Slow: "
        if self.framing == "retried":
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % self.body_size
        return head + b"Content-Length: %d\r\n\r\n" % self.body_size

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections += 1
            with conn:
                self.request = conn.recv(65536)
                if self.then_answer:
                    body = b'{"access_token": "tok", "token_type": "Bearer", "expires_in": 3600}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                try:
                    conn.sendall(self._head())
                    for _ in range(self.body_size):
                        conn.sendall(b" " if self.framing in ("length", "retried") else b"c")
                        self.sent += 1
                        time.sleep(self.interval)
                except OSError:  # the client hung up
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def short_deadline(monkeypatch):
    monkeypatch.setattr(tunables, "TRACKUNIT_FETCH_DEADLINE", 0.5)


@pytest.mark.parametrize("framing", DrippingEndpoint.FRAMINGS)
def test_a_fetch_that_drips_in_is_given_up_at_the_deadline(short_deadline, framing):
    endpoint = DrippingEndpoint(framing, body_size=200, interval=0.05)  # 10 s in all, a byte every 50 ms
    try:
        started = time.monotonic()
        with pytest.raises(AuthUnavailable, match="too slowly"):
            TrackunitAuth(endpoint.url).fetch_token("client", "secret", SCOPES)
        given_up_after = time.monotonic() - started
        assert 0 < endpoint.sent < 100  # the client hung up long before the end of the drip
        assert endpoint.connections == 1  # and started no new attempt after the deadline
        assert given_up_after < 5  # not a speed threshold: the drip would have taken 10 s
    finally:
        endpoint.close()


def test_the_next_fetch_on_the_same_session_after_a_cut_succeeds(short_deadline):
    endpoint = DrippingEndpoint("length", body_size=200, interval=0.05)
    auth = TrackunitAuth(endpoint.url)
    try:
        with pytest.raises(AuthUnavailable, match="too slowly"):
            auth.fetch_token("client", "secret", SCOPES)
        endpoint.then_answer = True
        grant = auth.fetch_token("client", "secret", SCOPES)
        assert grant.access_token == "tok" and grant.expires_in == 3600
        assert endpoint.connections == 2
    finally:
        endpoint.close()


def test_the_token_request_asks_for_an_uncompressed_answer():
    """The answer is a few hundred bytes: nothing to gain from gzip, and a decoder to keep bounded."""
    endpoint = DrippingEndpoint(body_size=1, interval=0)
    try:
        with pytest.raises(AuthError):  # one space is not a token answer
            TrackunitAuth(endpoint.url).fetch_token("client", "secret", SCOPES)
        assert b"\r\naccept-encoding: identity\r\n" in endpoint.request.lower()
    finally:
        endpoint.close()


def test_a_hanging_endpoint_is_given_up_inside_the_token_request_budget():
    """Three attempts that each time out and the backoff between them (over-estimated) fit in the
    fetch deadline, so it only cuts what drips; and the fetch deadline fits in a token request's budget."""
    attempts = 1 + tunables.TRACKUNIT_RETRIES
    backoff = sum(min(tunables.TRACKUNIT_BACKOFF_MAX, tunables.TRACKUNIT_BACKOFF_FACTOR * 2 ** n)
                  + tunables.TRACKUNIT_BACKOFF_JITTER for n in range(1, attempts))
    assert attempts * tunables.TRACKUNIT_READ_TIMEOUT + backoff < tunables.TRACKUNIT_FETCH_DEADLINE
    assert tunables.TRACKUNIT_FETCH_DEADLINE + tunables.TRACKUNIT_RETRY_AFTER_MAX <= tunables.TOKEN_REQUEST_BUDGET
