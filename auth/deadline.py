"""One deadline over everything a token fetch does on the network: every attempt, every byte.

Socket timeouts bound each read, not a request: a server that sends its headers, a
retried 503's body or a chunk-size line one byte per read timeout would hold a fetch
(and the single-flight lock) for as long as it likes. So the connections of the token
endpoint's session register their sockets with the calling thread's `FetchDeadline`;
when it expires a timer shuts them all down, which ends any read in progress (also on
TLS sockets), and no new attempt may start. Token fetches are rare: a timer thread per
fetch costs nothing on the hot path.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # the FetchDeadline of this thread's fetch, if any


class DeadlinePassed(Exception):
    """Raised instead of starting an attempt after the deadline (not an OSError: urllib3 must not retry it)."""


class FetchDeadline:
    """`with FetchDeadline(seconds) as deadline:` around one fetch on a `deadline_adapter` session."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> FetchDeadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        _current.deadline = None
        with self._lock:  # after this, no socket of this fetch (maybe back in the pool) is touched
            self._done = True
            self._sockets.clear()
        self._timer.cancel()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self.expired:
                raise DeadlinePassed()
            if sock is not None and sock not in self._sockets:
                self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _Watched:
    """Registers the connection's socket when it connects and at every request on it (a reused one)."""

    sock: socket.socket | None

    def connect(self) -> None:
        _watch(None)  # refuse to connect after the deadline
        super().connect()  # type: ignore[misc]
        _watch(self.sock)

    def request(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        _watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]
        _watch(self.sock)  # http.client connects lazily, inside request


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections a `FetchDeadline` can cut."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
