"""Another host: a plain HTTP server that records every request it gets, for tests that the vault
(its proxy, the client package) never sends anything there."""

from __future__ import annotations

import http.server
import threading


class Elsewhere:
    """A plain HTTP server that records every request it gets (and answers `status` with JSON `body`
    and `headers`)."""

    def __init__(self, status: int = 200, body: bytes = b"{}", headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.log: list[tuple[str, str, dict[str, str]]] = []
        log = self.log

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                log.append((self.command, self.path, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers:  # as given: a test may send what HTTP does not allow
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _record

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
