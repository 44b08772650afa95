"""One deadline over everything an HTTP exchange does on the network: every attempt, every byte.

Socket timeouts bound each read, not an exchange: a server that sends its headers, a
retried 503's body or a chunk-size line one byte per read timeout would hold a token
fetch (and the single-flight lock) or a proxied call for as long as it likes. So the
connections of the token endpoint's and the proxy's pools and of the webhook session register their
sockets with the calling thread's active `FetchDeadline`; when it expires a timer shuts
them all down, which ends any read in progress (also on TLS sockets, and a handshake, and
a proxied body still streaming to the caller), and no new attempt may start. A TCP
connect gets at most the time left, and a retry whose wait could end past the deadline is
not made: the last answer (a 503 and its Retry-After) goes back as it is. Under the gevent
worker the timer is a greenlet, so a deadline per proxied call is cheap.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, cast

from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError

from core.httpretry import BudgetRetry

log = logging.getLogger(__name__)
_current = threading.local()  # the FetchDeadline of this thread's fetch, if any


class DeadlinePassed(Exception):
    """Raised instead of starting an attempt after the deadline (not an OSError: urllib3 must not retry it)."""


class FetchDeadline:
    """`with FetchDeadline(seconds) as deadline:` around one fetch on a `DeadlineAdapter` session.

    For an exchange that outlives one block (a proxied answer streamed after the view returned):
    `start()`, then `with deadline.active():` around each request, and `close()` when it is over.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = float("inf")  # set on entry
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = False
        self._fired = False
        self._outer: FetchDeadline | None = None
        self._cancel: Callable[[], None] = _nothing

    def __enter__(self) -> FetchDeadline:
        self.start()
        self._outer = _deadline()
        _current.deadline = self
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        _current.deadline = self._outer
        self.close()

    def start(self) -> None:
        """The clock starts now."""
        self._ends = time.monotonic() + self.seconds
        self._cancel = _alarm(self.seconds, self._expire)

    @contextlib.contextmanager
    def active(self) -> Iterator[FetchDeadline]:
        """Connections used inside the block register with this deadline (another one's resumes after it)."""
        outer = _deadline()
        _current.deadline = self
        try:
            yield self
        finally:
            _current.deadline = outer

    def close(self) -> None:
        """The exchange is over: from now on no socket of it (maybe back in the pool) is touched."""
        with self._lock:
            self._done = True
            self._sockets.clear()
        self._cancel()

    @property
    def expired(self) -> bool:
        # The alarm's own flag too: gevent's loop timer counts from the loop's cached time, so it
        # may fire a hair before the monotonic clock reaches `_ends`.
        return self._fired or time.monotonic() >= self._ends

    def time_left(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self.expired:
                raise DeadlinePassed()
            if sock is not None and sock not in self._sockets:
                self._sockets.append(sock)

    def forget(self, sock: socket.socket) -> None:
        """Stop watching `sock` (its connection went back to the pool)."""
        with self._lock:
            if sock in self._sockets:
                self._sockets.remove(sock)

    def _expire(self) -> None:
        with self._lock:
            self._fired = True
            if self._done:
                return
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)


def _alarm(seconds: float, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` in `seconds` unless the returned function is called first.

    Under gevent's monkey-patching (the production worker) a timer on gevent's own loop: no
    greenlet per deadline (a proxied call has one). The callback then runs in the loop, where
    it must not block: `_expire` only takes a lock no greenlet holds across a switch, and
    shuts sockets down. Otherwise the process's one watchdog thread.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        timer = gevent.get_hub().loop.timer(seconds)
        timer.start(callback)
        return cast(Callable[[], None], timer.close)
    return _WATCHDOG.schedule(seconds, callback)


class _Watchdog:
    """One thread per process that fires alarms in time order (a timer thread per alarm would cost
    a thread start on every proxied call). A cancelled alarm stays queued, inert, until its time
    or until the cancelled ones are the majority: then the queue is rebuilt without them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[list[Any]] = []  # [when, sequence, callback or None], a heap
        self._cancelled = 0
        self._sequence = itertools.count()
        self._pid = 0

    def schedule(self, seconds: float, callback: Callable[[], None]) -> Callable[[], None]:
        entry: list[Any] = [time.monotonic() + seconds, next(self._sequence), callback]
        with self._cond:
            if self._pid != os.getpid():  # threads do not survive a fork
                self._pid, self._queue, self._cancelled = os.getpid(), [], 0
                threading.Thread(target=self._run, name="itv-deadlines", daemon=True).start()
            heapq.heappush(self._queue, entry)
            if self._queue[0] is entry:
                self._cond.notify()

        def cancel() -> None:
            with self._cond:
                if entry[2] is not None:
                    entry[2] = None
                    self._cancelled += 1
                    if self._cancelled > COMPACT_AT and self._cancelled * 2 > len(self._queue):
                        self._queue = [e for e in self._queue if e[2] is not None]
                        heapq.heapify(self._queue)
                        self._cancelled = 0

        return cancel

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        entry = heapq.heappop(self._queue)
                        break
                    self._cond.wait(self._queue[0][0] - now if self._queue else None)
                callback, entry[2] = entry[2], None
                if callback is None:
                    self._cancelled -= 1
            if callback is not None:
                try:
                    callback()
                except Exception:  # one alarm's failure must not stop the others
                    log.exception("a deadline's alarm failed")


COMPACT_AT = 1024  # cancelled alarms tolerated before the queue is rebuilt
_WATCHDOG = _Watchdog()


def _nothing() -> None:
    pass


def _deadline() -> FetchDeadline | None:
    return getattr(_current, "deadline", None)


class _Watched:
    """Registers the connection's socket as soon as it exists (so a TLS handshake can be cut too)
    and at every request on it (a reused one); a TCP connect gets at most the time left. Back in
    its pool, the connection is forgotten by that deadline (`_Pooled`): another call may take it."""

    sock: socket.socket | None
    timeout: float | None
    watched_by: FetchDeadline | None = None

    def _watch(self, sock: socket.socket | None) -> None:
        deadline = _deadline()
        if deadline is not None:
            deadline.watch(sock)
            self.watched_by = deadline

    def forget(self) -> None:
        """Leave the deadline that watched this connection (it is going back to the pool)."""
        deadline, self.watched_by = self.watched_by, None
        if deadline is not None and self.sock is not None:
            deadline.forget(self.sock)

    def _new_conn(self) -> socket.socket:
        deadline = _deadline()
        if deadline is not None:
            deadline.watch(None)  # refuse to connect after the deadline
            left = deadline.time_left()
            if not isinstance(self.timeout, (int, float)) or self.timeout > left:  # None or urllib3's default sentinel
                self.timeout = left  # urllib3 sets the connect timeout again before each connect
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        try:
            self._watch(sock)
        except DeadlinePassed:  # expired while connecting: urllib3 never sees this socket
            sock.close()
            raise
        return sock

    def request(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]
        self._watch(self.sock)  # http.client connects lazily, inside request


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _Pooled:
    """A pool whose connections leave their deadline when they come back: a call's deadline must never
    cut a connection another call took from the pool meanwhile (during a retry's wait, say)."""

    def _put_conn(self, conn) -> None:  # type: ignore[no-untyped-def]
        if isinstance(conn, _Watched):
            conn.forget()
        super()._put_conn(conn)  # type: ignore[misc]


class _WatchedHTTPPool(_Pooled, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_Pooled, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineRetry(BudgetRetry):
    """BudgetRetry that gives up instead of waiting into the deadline: a 503 with `Retry-After: 2`
    a second before the deadline goes back as it is (its Retry-After reaches the caller), rather
    than sleeping and being cut as "too slow"."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):  # type: ignore[no-untyped-def]
        new = super().increment(method, url, response, error, _pool, _stacktrace)  # type: ignore[no-untyped-call]
        deadline = _deadline()
        if deadline is not None and _longest_wait(new, response) >= deadline.time_left():
            raise MaxRetryError(
                _pool, url, error or ResponseError("the next attempt would start after the fetch deadline")
            )
        return new


def _longest_wait(retry: BudgetRetry, response) -> float:  # type: ignore[no-untyped-def]
    """The longest `retry.sleep(response)` can sleep (as urllib3 decides: a non-zero Retry-After, else backoff)."""
    if retry.respect_retry_after_header and response is not None:
        after = retry.get_retry_after(response)
        if after:
            return after
    backoff = retry.new(backoff_jitter=0.0).get_backoff_time()
    return min(retry.backoff_max, backoff + retry.backoff_jitter) if backoff else 0.0


def watched(pool: PoolManager) -> PoolManager:
    """`pool`, its connections made cuttable by a `FetchDeadline` (for those it opens from now on)."""
    pool.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return pool


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections a `FetchDeadline` can cut."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        watched(self.poolmanager)
