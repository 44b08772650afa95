"""A webhook receiver for tests: a real HTTP server that verifies every delivery with the `standardwebhooks` library.

`answer(n, webhook_id)` decides the status of the n-th request (1-based), so a test makes it fail
its first attempts; `hold` keeps requests waiting until released (a delivery in progress);
`broken_body` makes every answer promise a longer body than it sends, then hang up.
Only requests whose signature the library accepted are recorded in `verified`.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.flows import wait_for


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    payload: dict
    status: int  # what the receiver answered
    at: float  # when it arrived (epoch seconds), for the benchmark's delivery lag


class Receiver:
    def __init__(self, secret: str, answer: Callable[[int, str], int] | None = None) -> None:
        self.secret = secret
        self.webhook = Webhook(secret)
        self.answer = answer or (lambda n, webhook_id: 200)
        self.requests = 0
        self.verified: list[Delivery] = []
        self.rejected: list[str] = []  # why a request's signature did not verify
        self.hold = threading.Event()
        self.hold.set()  # set: answer at once; clear(): requests wait until set() again
        self.held = threading.Event()  # set once a request is waiting on `hold`
        self.broken_body = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._handle(headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "100" if receiver.broken_body else "2")
                self.end_headers()
                if receiver.broken_body:
                    self.close_connection = True  # not one of the 100 bytes: the reader's IncompleteRead
                else:
                    self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # the default listen backlog (5) drops connections under a burst
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, headers: dict[str, str], body: bytes) -> int:
        arrived = time.time()
        try:
            payload = self.webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            with self._lock:
                self.rejected.append(str(exc))
            return 400
        with self._lock:
            self.requests += 1
            n = self.requests
        if not self.hold.is_set():
            self.held.set()
            self.hold.wait(60)
        status = self.answer(n, headers["webhook-id"])
        with self._lock:
            self.verified.append(Delivery(headers["webhook-id"], headers, body, json.loads(body), status, arrived))
            assert payload == json.loads(body)
        return status

    def delivered(self) -> list[Delivery]:
        """The deliveries answered 2xx, in the order they arrived."""
        with self._lock:
            return [d for d in self.verified if 200 <= d.status < 300]

    def of_account(self, account_id: str) -> list[Delivery]:
        return [d for d in self.delivered() if d.payload["data"]["account_id"] == account_id]

    def wait_for_types(self, account_id: str, types: list[str], timeout: float = 30) -> list[Delivery]:
        """Wait until the account's delivered events include `types` (in this order); they are returned."""

        def arrived():
            got = self.of_account(account_id)
            return got if [d.payload["type"] for d in got][: len(types)] == types else None

        return wait_for(arrived, timeout)

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
