"""What a request must pass before the app works on it: a free in-flight slot, and a body that arrives in time.

In flight: a worker process counts the requests it is working on, from the moment the server
hands one over until its answer is sent (a streamed proxy answer included). Above `limit`
(MAX_IN_FLIGHT) the request is answered 503 `overloaded` with Retry-After at once, instead of
waiting behind the others, possibly past Heroku's 30 s router timeout; the count falls as calls
end, so the worker recovers by itself. The refusal still goes through the app (a few hundred
microseconds), so it has its request id, its log line and the JSON shape of every error.
`/healthz` is never refused and not counted: it says the process serves, which it does; a
liveness probe that failed under load would get a busy dyno restarted.

Slow clients (under gunicorn's gevent worker, where a waiting request costs a greenlet, not a
thread): gunicorn itself drops a client that has not sent its whole header block within
`keepalive` seconds (gunicorn.conf.py). Here, the body gets CLIENT_BODY_DEADLINE in all: a
client that stalls or drips is answered 408 `request_timeout` when it passes, and its
connection is closed. Every send to the client waits at most CLIENT_SEND_TIMEOUT, so a client
that stops reading its answer cannot hold a slot either.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from flask import request

from core import metrics, tunables
from core.errors import Overloaded, RequestTimeout

OVERLOADED = "itv.overloaded"  # set in the WSGI environ of a request refused for lack of a slot
NOT_COUNTED = frozenset({"/healthz"})


class Admission:
    """WSGI middleware around the Flask app (`app.wsgi_app`): in-flight limit and client deadlines."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        # Held for a few instructions, never across a wait (a gevent lock once monkey-patched);
        # reentrant because _ClosingAnswer.__del__ may give a slot back from inside the GC.
        self._lock = threading.RLock()
        self._timeout = _gevent_timeout()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in NOT_COUNTED:
            return self.app(environ, start_response)
        with self._lock:
            admitted = self.in_flight < self.limit
            if admitted:
                self.in_flight += 1
        if not admitted:
            environ[OVERLOADED] = True  # refuse_when_overloaded answers it
            return self.app(environ, start_response)
        try:
            if self._timeout is not None:
                self._bound_client(environ)
            answer = self.app(environ, start_response)
        except BaseException:
            self._leave()
            raise
        return _ClosingAnswer(answer, self._leave)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _bound_client(self, environ: dict) -> None:
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            # Per socket call: a send (gevent bounds a whole sendall) and, below, each body read.
            sock.settimeout(tunables.CLIENT_SEND_TIMEOUT)
        has_body = (
            environ.get("CONTENT_LENGTH") not in (None, "", "0")
            or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        )
        if has_body and self._timeout is not None:
            environ["wsgi.input"] = _DeadlineInput(
                environ["wsgi.input"], time.monotonic() + tunables.CLIENT_BODY_DEADLINE, sock, self._timeout
            )


def refuse_when_overloaded() -> None:
    """First before_request hook after the request id: an unadmitted request goes no further."""
    if request.environ.get(OVERLOADED):
        metrics.OVERLOADED.inc()
        raise Overloaded()


class _ClosingAnswer:
    """The app's answer, passed through; the slot is given back once the server closes it (sent or not).

    Every WSGI server calls close() (PEP 3333; gunicorn in a `finally`). A caller that drops
    the answer without closing it (Flask's test client, unless buffered) gives the slot back
    when the answer is collected, so a forgotten close cannot shrink the limit for good.
    """

    def __init__(self, answer: Iterable[bytes], done: Callable[[], None]) -> None:
        self._answer = answer
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._answer)

    def close(self) -> None:
        try:
            close = getattr(self._answer, "close", None)
            if close is not None:
                close()
        finally:
            self._release()

    def _release(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    def __del__(self) -> None:
        self._release()


class _TooSlow(Exception):
    """Raised by gevent into a body read that ran into the deadline."""


class _DeadlineInput:
    """`wsgi.input` with one deadline over every read of the body.

    A socket timeout would bound each recv, and a client dripping a byte per recv would pass it;
    gevent.Timeout interrupts the read wherever it waits, at the deadline.
    """

    def __init__(self, stream, ends: float, sock: socket.socket | None, timeout: type) -> None:
        self._stream = stream
        self._ends = ends
        self._sock = sock
        self._timeout = timeout

    def read(self, *args):
        return self._bounded(self._stream.read, *args)

    def readline(self, *args):
        return self._bounded(self._stream.readline, *args)

    def readlines(self, *args):
        return self._bounded(self._stream.readlines, *args)

    def __iter__(self):
        while line := self.readline():
            yield line

    def _bounded(self, method: Callable, *args):
        left = self._ends - time.monotonic()
        if left <= 0:
            self._give_up()
        try:
            with self._timeout(left, _TooSlow()):
                return method(*args)
        except _TooSlow:
            self._give_up()

    def _give_up(self) -> None:
        if self._sock is not None:
            # No more reading on this connection: the 408 goes out, then gunicorn finds the end
            # of the input and closes it (instead of reading the rest of a stalled body).
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RD)
        metrics.CLIENT_TIMEOUTS.inc()
        raise RequestTimeout()


def _gevent_timeout() -> type | None:
    """gevent.Timeout when this process runs under gevent's monkey-patching (the gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        return None  # threads (tests' in-process servers, `gthread`): no body deadline here
    from gevent import Timeout

    return Timeout
