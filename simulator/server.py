"""Run a WSGI app on a real socket in a background thread.

The vault talks to Trackunit over HTTP with ``requests``, so tests and the
demo need a real listening server, not Flask's test client.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietRequestHandler(WSGIRequestHandler):
    """Request handler that does not write an access log line per request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ServerThread:
    """A threaded werkzeug server bound at construction, served by a daemon thread.

    Binding in ``__init__`` means ``.port``/``.url`` are known (also for
    ``port=0``) before any request can arrive.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_requests: bool = True) -> None:
        handler = None if log_requests else _QuietRequestHandler
        self._server = make_server(host, port, app, threaded=True, request_handler=handler)
        self.host = host
        self.port: int = self._server.server_port
        connect_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)
        if ":" in connect_host and not connect_host.startswith("["):
            connect_host = f"[{connect_host}]"
        self.url: str = f"http://{connect_host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"simulator-server-{self.port}", daemon=True
        )

    def __repr__(self) -> str:
        return f"ServerThread(url={self.url!r})"

    def start(self) -> ServerThread:
        """Start serving (idempotent) and return self."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting requests and close the socket.

        Request threads are daemons, so a deliberately hanging request does
        not block this.
        """
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, *, log_requests: bool = True) -> ServerThread:
    """Serve ``app`` in a background thread; ``port=0`` picks a free port."""
    return ServerThread(app, host, port, log_requests=log_requests).start()
