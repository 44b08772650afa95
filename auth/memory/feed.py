"""Hearing about account changes made by other processes: a Redis pub/sub subscription.

Every script that changes an account (install, delete, revoke, a new cached
token) publishes the account id on the deployment's channel, atomically with
the change. Each worker listens in a thread and tells its in-memory cache.
Liveness is proven, not assumed: the listener PINGs on the subscribed
connection, and Redis answers in order, so once the answer to a PING sent at
time T arrives, every invalidation published before T has been handled.
`fresh()` says whether that happened recently enough to trust memory.

The same holds on every topology. On a Sentinel master the subscription is a connection to the
master the sentinels name; on a Redis Cluster it is classic pub/sub on one node (redis-py picks
the master of the channel's slot), because a classic PUBLISH, from a script on any node, reaches
the subscribers of every node. Classic rather than sharded pub/sub (SSUBSCRIBE) because a worker
then keeps one connection to any one node instead of one per master holding a group's slots,
invalidations are rare (one per account change), and after a failover there are no per-slot
subscriptions to move: a lost subscription (its node died) is made again on the next attempt,
after the cluster client re-read the slot map, and memory stays off until it is confirmed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis

from core import tunables
from vault.store import is_cluster

log = logging.getLogger(__name__)


class InvalidationListener:
    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        on_change: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.client = client
        self.channel = channel
        self.on_change = on_change
        self.on_lost = on_lost
        self._confirmed = float("-inf")  # monotonic send time of the last answered PING
        self._used = 0.0  # monotonic time of the last fresh() call
        self._pid = 0
        self._start_lock = threading.Lock()
        self._stop = threading.Event()

    def fresh(self) -> bool:
        """True while memory may be trusted; starts the listener in this process if needed."""
        self._used = time.monotonic()
        if self._pid != os.getpid():
            self._start()
            return False
        return time.monotonic() - self._confirmed < tunables.INVALIDATION_MAX_STALENESS

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # threads do not survive fork: one listener per process
            self._confirmed = float("-inf")
            threading.Thread(target=self._run, name="itv-invalidation", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        reported = False
        while not self._stop.is_set() and not self._idle():
            pubsub = self.client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                reported = False
                self._listen(pubsub)
            except Exception as exc:  # noqa: BLE001 - any failure: memory off, reconnect; never a dead listener
                self._confirmed = float("-inf")
                self.on_lost()
                if not reported:  # once per outage, not every reconnect attempt
                    log.warning(
                        "invalidation subscription lost (%s); memory cache off until it is back", type(exc).__name__
                    )
                    reported = True
                self._stop.wait(tunables.INVALIDATION_RECONNECT_DELAY)
                self._relocate()
            finally:
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection may fail too
                    pass
        # Idle or stopped: forget, so the next fresh() starts a new listener (memory untrusted until then).
        self._confirmed = float("-inf")
        self.on_lost()
        with self._start_lock:
            self._pid = 0

    def _relocate(self) -> None:
        """On a cluster, re-read the slot map before subscribing again: the node may have failed over."""
        if not is_cluster(self.client):
            return
        try:
            self.client.nodes_manager.initialize()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - no node answers yet; the next attempt asks again
            pass

    def _idle(self) -> bool:
        return time.monotonic() - self._used > tunables.INVALIDATION_IDLE_STOP

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        next_ping = 0.0
        while not self._stop.is_set() and not self._idle():
            now = time.monotonic()
            if now >= next_ping:
                pubsub.ping(message=repr(now))
                next_ping = now + tunables.INVALIDATION_PING_INTERVAL
            message = pubsub.get_message(timeout=tunables.INVALIDATION_PING_INTERVAL)
            if message is None:
                continue
            data = message.get("data")
            if isinstance(data, bytes):
                data = data.decode()
            if message["type"] == "message":
                self.on_change(data)
            elif message["type"] == "subscribe":
                # The first subscription, or redis-py's own after it reconnected: changes published
                # before it were not heard, and memory may have learnt from Redis meanwhile (a key
                # revoked in that gap would stay known): forget everything learnt until now.
                self.on_lost()
            elif message["type"] == "pong" and data:
                self._confirmed = max(self._confirmed, float(data))
