"""One watcher of the outbox per worker process, so that any number of waiters cost one Redis connection.

A thread (a greenlet under gevent) loops on `Outbox.wait_after` from the newest id it has seen (of
any slot group) and wakes every waiter when any group's stream grows. On a single Redis or Sentinel
that is one `XREAD BLOCK` of all the groups' streams; on a Redis Cluster, where that is CROSSSLOT,
a poll of every group's newest id every EVENT_WATCH_POLL_MS. A feed long-poll or an idle deliverer
waits on a `threading.Condition`, not on Redis. The watcher borrows one connection of the worker's pool for each
block (EVENT_WATCH_BLOCK_MS, inside the socket timeout), runs only while someone waited on it in
the last EVENT_WATCH_IDLE_STOP seconds, and reconnects after a Redis error.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from core import tunables
from core.errors import VaultError
from vault.outbox import Outbox, order_of

log = logging.getLogger(__name__)

THREAD_NAME = "itv-events-watch"


id_key = order_of  # an id as a comparable pair; None (nothing yet) sorts first


class StreamWatcher:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.waiting = 0  # waiters right now (tests wait for a long-poll to be waiting)
        self._changed = threading.Condition()
        self._last: tuple[int, int] | None = None  # the newest id seen; None until the first read
        self._used = 0.0
        self._pid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_beyond(self, after: str | None, timeout: float) -> bool:
        """Wait until the stream holds an id after `after` (at most `timeout` s); True if it does."""
        wanted = id_key(after)
        deadline = time.monotonic() + timeout
        with self._changed:
            self.waiting += 1
            try:
                return self._wait(wanted, deadline)
            finally:
                self.waiting -= 1

    def _wait(self, wanted: tuple[int, int], deadline: float) -> bool:
        """The wait of `wait_beyond`, with the condition held."""
        while True:
            self._used = time.monotonic()
            self._ensure_running()
            if self._last is not None and self._last > wanted:
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                return False
            self._changed.wait(min(left, tunables.EVENT_WATCH_BLOCK_MS / 1000))

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the watcher and wait (a little) for it to end: its block ends within EVENT_WATCH_BLOCK_MS."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_running(self) -> None:
        if self._pid != os.getpid() and not self._stop.is_set():
            self._pid = os.getpid()  # threads do not survive fork: one watcher per process
            self._last = None
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        reported = False
        cursor: str | None = None
        while not self._stop.is_set() and time.monotonic() - self._used < tunables.EVENT_WATCH_IDLE_STOP:
            try:
                if cursor is None:
                    cursor = self.outbox.newest_id()
                    self._seen(cursor)
                newest = self.outbox.wait_after(cursor, tunables.EVENT_WATCH_BLOCK_MS)
                reported = False
                if newest is not None:
                    cursor = newest
                    self._seen(cursor)
            except VaultError:
                if self._stop.is_set():
                    break  # closed (its app is gone): nothing to report
                if not reported:
                    log.warning("event stream watch failed (Redis unavailable); retrying")
                    reported = True
                cursor = None  # after a restart, read the newest id again
                self._stop.wait(tunables.EVENT_WATCH_RECONNECT_DELAY)
        with self._changed:
            self._pid = 0  # idle or stopped: the next waiter starts a new watcher

    def _seen(self, event_id: str) -> None:
        with self._changed:
            self._last = id_key(event_id)
            self._changed.notify_all()
