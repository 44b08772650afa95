"""A token fetch ends within TRACKUNIT_FETCH_DEADLINE whatever the endpoint drips, and however
(`core.deadline`, against raw sockets that send one byte at a time, each well inside the read timeout).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from auth.trackunit import TrackunitAuth
from core import tunables
from core.errors import AuthError, AuthUnavailable

SCOPES = ("account.view", "asset.view")


class LocalEndpoint:
    """A raw HTTP endpoint on a free port: one connection at a time, each given to `_answer`."""

    def __init__(self) -> None:
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/apptoken"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections += 1
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.close()


class DrippingEndpoint(LocalEndpoint):
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
        self.then_answer = False  # set: answer the next connections at once, with a token
        self.request = b""
        super().__init__()

    def _head(self) -> bytes:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if self.framing == "chunked":
            return head + b"Transfer-Encoding: chunked\r\n\r\n10;ext="
        if self.framing == "gzip":
            # magic, deflate, FCOMMENT, mtime, xfl, os; then the comment, dripped
            gzip_header = b"\x1f\x8b\x08\x10" + b"\x00" * 4 + b"\x00\x03"
            return head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
                len(gzip_header) + self.body_size,
                gzip_header,
            )
        if self.framing == "headers":
            return head + b"X-Slow: "
        if self.framing == "retried":
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % self.body_size
        return head + b"Content-Length: %d\r\n\r\n" % self.body_size

    def _answer(self, conn: socket.socket) -> None:
        self.request = conn.recv(65536)
        if self.then_answer:
            body = b'{"access_token": "tok", "token_type": "Bearer", "expires_in": 3600}'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        try:
            conn.sendall(self._head())
            for _ in range(self.body_size):
                conn.sendall(b" " if self.framing in ("length", "retried") else b"c")
                self.sent += 1
                time.sleep(self.interval)
        except OSError:  # the client hung up
            pass


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


class SilentEndpoint(LocalEndpoint):
    """Accepts each connection, reads the request and never answers (until closed): a hanging Trackunit."""

    def __init__(self) -> None:
        self._closed = threading.Event()
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        conn.recv(65536)
        threading.Thread(target=self._hold, args=(conn.dup(),), daemon=True).start()  # the next attempt may come

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            self._closed.wait()

    def close(self) -> None:
        self._closed.set()
        super().close()


@pytest.mark.slow
def test_a_hanging_endpoint_is_given_up_inside_the_token_request_budget():
    """With the real timeouts, every attempt at an endpoint that never answers ends by its own read
    timeout (all attempts and the backoff between them fit in the fetch deadline, so the deadline
    only cuts what drips), and the whole fetch ends inside the deadline, which a token request's
    budget leaves room for with a Retry-After on top."""
    endpoint = SilentEndpoint()
    try:
        started = time.monotonic()
        with pytest.raises(AuthUnavailable) as raised:
            TrackunitAuth(endpoint.url).fetch_token("client", "secret", SCOPES)
        given_up_after = time.monotonic() - started
        assert "too slowly" not in str(raised.value)  # no attempt was cut by the deadline
        assert endpoint.connections == 1 + tunables.TRACKUNIT_RETRIES  # every attempt was made
        assert given_up_after < tunables.TRACKUNIT_FETCH_DEADLINE  # a bound from the deadline, not a speed test
    finally:
        endpoint.close()
    assert tunables.TRACKUNIT_FETCH_DEADLINE + tunables.TRACKUNIT_RETRY_AFTER_MAX <= tunables.TOKEN_REQUEST_BUDGET


def test_a_hanging_endpoint_whose_read_timeout_outlasts_the_deadline_is_cut_at_it(monkeypatch):
    """The deadline, not the read timeout, ends a hang when the timeout alone would not."""
    monkeypatch.setattr(tunables, "TRACKUNIT_FETCH_DEADLINE", 0.5)
    monkeypatch.setattr(tunables, "TRACKUNIT_READ_TIMEOUT", 5.0)  # 3 attempts: over 15 s without a deadline
    endpoint = SilentEndpoint()
    try:
        with pytest.raises(AuthUnavailable, match="too slowly"):
            TrackunitAuth(endpoint.url).fetch_token("client", "secret", SCOPES)
        assert endpoint.connections == 1  # and no new attempt after the deadline
    finally:
        endpoint.close()


class StatusEndpoint(LocalEndpoint):
    """Answers every request at once with `status` and the given headers; counts the attempts."""

    def __init__(self, status: int = 503, headers: bytes = b"") -> None:
        self.status, self.headers = status, headers
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 %d Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n%s\r\n" % (self.status, self.headers)
        )


def test_a_retry_after_that_would_cross_the_deadline_goes_back_to_the_caller(monkeypatch):
    """No sleeping into the deadline: the 503 and its Retry-After reach the caller, not "too slowly"."""
    monkeypatch.setattr(tunables, "TRACKUNIT_FETCH_DEADLINE", 1.5)  # Retry-After: 2 cannot fit
    endpoint = StatusEndpoint(503, b"Retry-After: 2\r\n")
    try:
        with pytest.raises(AuthUnavailable, match="answered 503") as raised:
            TrackunitAuth(endpoint.url).fetch_token("client", "secret", SCOPES)
        assert raised.value.retry_after == 2
        assert endpoint.connections == 1
    finally:
        endpoint.close()


def test_a_retry_after_that_fits_in_the_deadline_is_waited_for(monkeypatch):
    """The same answer with time to spare is retried as before (the guard above is not "never retry")."""
    monkeypatch.setattr(tunables, "TRACKUNIT_FETCH_DEADLINE", 13.0)
    endpoint = StatusEndpoint(503, b"Retry-After: 1\r\n")  # two waits of 1 s: both fit
    try:
        with pytest.raises(AuthUnavailable, match="answered 503"):
            TrackunitAuth(endpoint.url).fetch_token("client", "secret", SCOPES)
        assert endpoint.connections == 1 + tunables.TRACKUNIT_RETRIES
    finally:
        endpoint.close()


def test_a_backoff_that_could_cross_the_deadline_is_not_slept(monkeypatch):
    """First retry: no backoff; the second's (0.5 s + up to 0.25 s jitter) could end past a 0.5 s deadline."""
    monkeypatch.setattr(tunables, "TRACKUNIT_FETCH_DEADLINE", 0.5)
    endpoint = StatusEndpoint(503)
    try:
        with pytest.raises(AuthUnavailable, match="answered 503"):
            TrackunitAuth(endpoint.url).fetch_token("client", "secret", SCOPES)
        assert endpoint.connections == 2
    finally:
        endpoint.close()


def test_a_tcp_connect_gets_only_the_time_left(monkeypatch):
    """A listener whose accept queue is full drops SYNs: the connect would wait its whole timeout."""
    monkeypatch.setattr(tunables, "TRACKUNIT_FETCH_DEADLINE", 0.5)
    monkeypatch.setattr(tunables, "TRACKUNIT_CONNECT_TIMEOUT", 30.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)  # room for one queued connection, never accepted
    filler = socket.create_connection(server.getsockname(), timeout=2)
    try:
        started = time.monotonic()
        with pytest.raises(AuthUnavailable, match="too slowly"):
            TrackunitAuth(f"http://127.0.0.1:{server.getsockname()[1]}/apptoken").fetch_token(
                "client", "secret", SCOPES
            )
        assert time.monotonic() - started < 10  # not a speed threshold: the connect timeout is 30 s
    finally:
        filler.close()
        server.close()


def test_a_tls_handshake_that_never_ends_is_cut_at_the_deadline(monkeypatch):
    """The socket is watched from the moment it exists, so the deadline cuts the handshake too."""
    monkeypatch.setattr(tunables, "TRACKUNIT_FETCH_DEADLINE", 0.5)
    monkeypatch.setattr(tunables, "TRACKUNIT_CONNECT_TIMEOUT", 30.0)  # the handshake runs under it
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(AuthUnavailable, match="too slowly"):
            TrackunitAuth(f"https://127.0.0.1:{server.getsockname()[1]}/apptoken").fetch_token(
                "client", "secret", SCOPES
            )
        assert time.monotonic() - started < 10  # not a speed threshold: the handshake's timeout is 30 s
        assert len(accepted) == 1  # and no new attempt after the deadline
    finally:
        server.close()
        for conn in accepted:
            conn.close()
