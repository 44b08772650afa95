"""Run a WSGI app on a real socket in a background thread: HTTP/1.1 keep-alive, optionally HTTPS.

The vault talks to Trackunit over HTTP with ``requests``, so tests and the
demo need a real listening server, not Flask's test client.

The server is werkzeug's threaded one (a thread per connection) with three changes:

- **Keep-alive.** Werkzeug's development server ends every answer with
  ``Connection: close``, so a client could never reuse a connection, and a
  benchmark of connection reuse would measure nothing. Here a connection stays
  open for the next request (HTTP/1.1, as Trackunit's servers do) until the
  client closes it, asks to with ``Connection: close``, or leaves it idle for
  ``idle_timeout`` seconds. A connection whose request body the app did not
  read to its end is closed after the answer (the rest of the body would be
  taken for the next request). ``keep_alive=False`` gives werkzeug's behaviour back.
- **HTTPS with counted handshakes.** With ``tls=`` (see ``simulator.tls``), the
  TLS handshake runs in the connection's own thread, not in the accept loop, so
  one slow client cannot hold up the others.
- **Counting.** Every accepted connection, open connection and completed (or
  failed) handshake is reported to ``counters`` (by default the simulator's
  ``SimulatorState``, which shows them in ``/_sim/stats``).

The listen backlog is 1024 (werkzeug's is 128), so a thousand clients connecting at
once are queued by the kernel rather than refused or made to retry their SYN.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import sys
import threading
from types import TracebackType
from typing import Any, Protocol

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from .tls import Certificates

#: Seconds an idle keep-alive connection is kept open (nginx's default keepalive_timeout is 75).
IDLE_TIMEOUT = 75.0
#: Seconds a client has to complete the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
LISTEN_BACKLOG = 1024
_log = logging.getLogger("werkzeug")
_DROPPED = OSError  # ConnectionError, TimeoutError, ssl.SSLError: the client went away or stalled


class ConnectionCounters(Protocol):
    def connection_opened(self, *, tls: bool) -> None: ...
    def connection_closed(self) -> None: ...
    def tls_handshake(self, *, ok: bool) -> None: ...


class _Body(io.RawIOBase):
    """The request body as the app reads it, and whether it was read to its end.

    A connection is kept for the next request only when it was: otherwise the
    unread rest of this body would be taken for the next request line.
    """

    def __init__(self, stream: Any, length: int | None) -> None:  # length None: chunked, read to its end
        self._stream = stream
        self._left = length
        self.complete = length == 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.complete:
            return 0
        view = memoryview(buffer)
        if self._left is not None:
            view = view[: self._left]
        count = self._stream.readinto(view) or 0
        if self._left is None:
            self.complete = count == 0
        else:
            self._left -= count
            self.complete = self._left <= 0
        return count


class _Handler(WSGIRequestHandler):
    """Werkzeug's handler with keep-alive answers (see the module docstring)."""

    server: _Server
    quiet = False

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # type: ignore[misc]  # StreamRequestHandler applies it
        super().setup()

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        if not self.quiet:
            super().log_request(*args, **kwargs)

    def log_error(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_error(format, *args)

    def run_wsgi(self) -> None:
        if not self.server.keep_alive:
            super().run_wsgi()
            return
        if self.request_version != "HTTP/1.1":
            self.close_connection = True  # HTTP/1.0: the body of an answer may end with the connection
        environ = self.make_environ()
        if environ.get("wsgi.input_terminated"):  # chunked: werkzeug's DechunkedInput ends at the last chunk
            body = _Body(environ["wsgi.input"], None)
        else:
            try:
                body = _Body(environ["wsgi.input"], max(0, int(environ.get("CONTENT_LENGTH") or 0)))
            except ValueError:
                self.close_connection = True
                self._send_plain(400, b"Bad Request: malformed Content-Length\n")
                return
        environ["wsgi.input"] = body
        state: dict[str, Any] = {"status": None, "headers": None, "sent": False, "chunked": False, "bodyless": False}
        method = environ["REQUEST_METHOD"]

        def write(data: bytes) -> None:
            if not state["sent"]:
                code_text, _, reason = state["status"].partition(" ")
                code = int(code_text)
                state["bodyless"] = method == "HEAD" or code < 200 or code in (204, 304)
                if not body.complete:
                    self.close_connection = True  # the rest of the body is still on the connection
                self.send_response(code, reason)
                names = set()
                for name, value in state["headers"]:
                    self.send_header(name, value)
                    names.add(name.lower())
                if "content-length" not in names and not state["bodyless"]:
                    if self.close_connection:
                        pass  # the body ends where the connection does
                    else:
                        state["chunked"] = True
                        self.send_header("Transfer-Encoding", "chunked")
                if self.close_connection and "connection" not in names:
                    self.send_header("Connection", "close")
                self.end_headers()
                state["sent"] = True
            if data and not state["bodyless"]:
                if state["chunked"]:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info:
                try:
                    if state["sent"]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state["status"] is not None:
                raise AssertionError("start_response called twice")
            state["status"], state["headers"] = status, headers
            return write

        try:
            iterable = self.server.app(environ, start_response)
            try:
                for data in iterable:
                    write(data)
                if not state["sent"]:
                    write(b"")
                if state["chunked"]:
                    self.wfile.write(b"0\r\n\r\n")
                if not body.complete:
                    self.close_connection = True
            finally:
                if hasattr(iterable, "close"):
                    iterable.close()
        except _DROPPED as exc:
            self.close_connection = True
            self.connection_dropped(exc, environ)
        except Exception:
            self.close_connection = True
            if not self.server.passthrough_errors:
                _log.error("Error on request %s %s", method, environ.get("PATH_INFO"), exc_info=True)
            if not state["sent"]:
                self._send_plain(500, b"Internal Server Error\n")
            elif self.server.passthrough_errors:
                raise

    def _send_plain(self, code: int, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except _DROPPED:
            pass


class _QuietHandler(_Handler):
    """No access log line per request, and no line when an idle connection times out."""

    quiet = True


class _Server(ThreadedWSGIServer):
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        host: str,
        port: int,
        app: Any,
        handler: type[_Handler],
        *,
        tls_context: ssl.SSLContext | None,
        keep_alive: bool,
        counters: ConnectionCounters | None,
        idle_timeout: float,
    ) -> None:
        handler.protocol_version = "HTTP/1.1"
        super().__init__(host, port, app, handler)  # no ssl_context here: werkzeug would handshake in accept()
        self.ssl_context = tls_context  # what werkzeug reads to set wsgi.url_scheme to https
        self.keep_alive = keep_alive
        self.counters = counters
        self.idle_timeout = idle_timeout
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        tls = self.ssl_context is not None
        if self.counters is not None:
            self.counters.connection_opened(tls=tls)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body are two writes
            if tls and self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError:
            sock.close()
            if self.counters is not None:
                self.counters.connection_closed()
            raise
        with self._open_lock:
            self._open.add(sock)
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                request.do_handshake()
            except (OSError, ValueError):
                if self.counters is not None:
                    self.counters.tls_handshake(ok=False)
                return
            if self.counters is not None:
                self.counters.tls_handshake(ok=True)
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            known = request in self._open
            self._open.discard(request)
        try:
            super().shutdown_request(request)
        finally:
            if known and self.counters is not None:
                self.counters.connection_closed()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if getattr(self.RequestHandlerClass, "quiet", False) and isinstance(sys.exc_info()[1], _DROPPED):
            return  # a client that went away (or failed its handshake): nothing to report
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """End every open connection (its thread then closes it), idle keep-alive ones included."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass


class ServerThread:
    """A threaded server bound at construction, served by a daemon thread.

    Binding in ``__init__`` means ``.port``/``.url`` are known (also for
    ``port=0``) before any request can arrive. ``tls`` (a
    ``simulator.tls.Certificates`` or a server-side ``ssl.SSLContext``) serves
    HTTPS; ``counters`` defaults to the simulator state of ``app`` when it has one.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_requests: bool = True,
        tls: Certificates | ssl.SSLContext | None = None,
        keep_alive: bool = True,
        counters: ConnectionCounters | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        handler = type("Handler", (_Handler if log_requests else _QuietHandler,), {})  # own protocol_version
        if counters is None:
            state = getattr(app, "extensions", {}).get("simulator")
            counters = state if hasattr(state, "connection_opened") else None
        context = tls.server_context() if isinstance(tls, Certificates) else tls
        self._server = _Server(
            host,
            port,
            app,
            handler,
            tls_context=context,
            keep_alive=keep_alive,
            counters=counters,
            idle_timeout=idle_timeout,
        )
        self.host = host
        self.port: int = self._server.server_port
        self.tls = context is not None
        connect_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)
        if ":" in connect_host and not connect_host.startswith("["):
            connect_host = f"[{connect_host}]"
        self.url: str = f"{'https' if self.tls else 'http'}://{connect_host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"simulator-server-{self.port}",
            daemon=True,
        )

    def __repr__(self) -> str:
        return f"ServerThread(url={self.url!r})"

    def start(self) -> ServerThread:
        """Start serving (idempotent) and return self."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting requests, end open connections and close the socket.

        Request threads are daemons, so a deliberately hanging request does
        not block this.
        """
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


def serve_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_requests: bool = True,
    tls: Certificates | ssl.SSLContext | None = None,
    keep_alive: bool = True,
) -> ServerThread:
    """Serve ``app`` in a background thread; ``port=0`` picks a free port."""
    return ServerThread(app, host, port, log_requests=log_requests, tls=tls, keep_alive=keep_alive).start()
