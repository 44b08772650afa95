"""Webhook delivery: each event POSTed, signed, to every endpoint, at least once, in order per account.

One `EndpointDeliverer` per endpoint and process, each in its own thread (a greenlet under
gevent), so one endpoint that is down never delays another, nor a request. Of all processes,
the one holding an endpoint's lease delivers to it (`vault.deliveries`); the others look for
the lease every second and take it within WEBHOOK_LEASE_SECONDS when its holder dies, claiming
the entries it had read and not settled. A round: claim stale entries, read new ones from the
endpoint's consumer group on every slot group's stream (one command per stream, pipelined), take
the retries now due; deliver events of different accounts concurrently (WEBHOOK_CONCURRENCY) and
one account's in order (an account's events are all in its group's stream, in id order). An
attempt that fails is scheduled in Redis (the group's retry sorted set, WEBHOOK_RETRY_SCHEDULE with
jitter) and its stream entry acknowledged; a later event of that account waits behind it, for this
endpoint only.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence

import requests
import urllib3

from core import metrics, tunables
from core.deadline import DeadlineAdapter, DeadlinePassed, FetchDeadline
from core.errors import VaultError
from events import shape, signing
from events.watch import StreamWatcher, id_key
from vault.deliveries import Due, EndpointState, Outcome, endpoint_id
from vault.layout import KeySpace
from vault.outbox import Outbox, StoredEvent

log = logging.getLogger("itv.events")

THREAD_NAME = "itv-events-deliver"


def consumer_name() -> str:
    """This process's consumer name in the groups (host and pid: unique across dynos and workers)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def retry_delay(schedule: Sequence[float], failures: int) -> float | None:
    """Seconds until the next attempt after `failures` failed ones (jittered), None when out of retries."""
    if failures > len(schedule):
        return None
    jitter = tunables.WEBHOOK_RETRY_JITTER
    return schedule[failures - 1] * random.uniform(1 - jitter, 1 + jitter)


class EndpointDeliverer:
    def __init__(
        self,
        url: str,
        state: EndpointState,
        outbox: Outbox,
        secret: bytes,
        schedule: Sequence[float],
        watcher: StreamWatcher,
        *,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url  # never logged: it may carry a token
        self.state = state
        self.outbox = outbox
        self.secret = secret
        self.schedule = tuple(schedule)
        self.watcher = watcher
        self.consumer = consumer or consumer_name()
        self.clock = clock
        self.session = requests.Session()
        # The attempt's FetchDeadline cuts its sockets when 10 s are up (connect, headers, body);
        # pool_block=False: more connections than the pool keeps are opened and closed, never waited for.
        self.session.mount(
            "http://", DeadlineAdapter(max_retries=0, pool_maxsize=tunables.WEBHOOK_CONCURRENCY, pool_block=False)
        )
        self.session.mount(
            "https://", DeadlineAdapter(max_retries=0, pool_maxsize=tunables.WEBHOOK_CONCURRENCY, pool_block=False)
        )
        self.session.trust_env = False  # no proxy or .netrc from the environment
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=tunables.WEBHOOK_CONCURRENCY, thread_name_prefix="itv-events-post"
        )
        self._seen: str | None = None  # the newest stream id this deliverer has read
        self._holding = False
        self._lease_lost = threading.Event()  # set when a renewal during a round found another holder

    # The loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        reported = False
        while not stop.is_set():
            try:
                if not self.state.hold_lease(self.consumer, tunables.WEBHOOK_LEASE_SECONDS):
                    self._holding = False
                    stop.wait(tunables.WEBHOOK_IDLE_POLL)
                    continue
                if not self._holding:
                    self._holding = True
                    self.state.ensure_group()
                    self.state.forget_consumers(self.consumer, int(tunables.WEBHOOK_CONSUMER_FORGET * 1000))
                    self._seen = self.outbox.newest_id()
                if not self.round():
                    self._idle()
                reported = False
            except VaultError as exc:
                if stop.is_set():
                    break  # closed while Redis went away with it (tests): nothing to report
                if not reported:
                    log.warning("webhook %s: delivery paused (%s)", self.state.id, exc.code)
                    reported = True
                stop.wait(tunables.WEBHOOK_IDLE_POLL)
            except Exception:  # a delivery thread must never die silently
                log.exception("webhook %s: delivery round crashed", self.state.id)
                stop.wait(tunables.WEBHOOK_IDLE_POLL)
        try:
            self.state.release_lease(self.consumer)
        except VaultError:
            pass
        self._pool.shutdown(wait=False)

    def _idle(self) -> None:
        """Wait for a new event or the next retry, whichever comes first (at most WEBHOOK_IDLE_POLL)."""
        timeout = tunables.WEBHOOK_IDLE_POLL
        next_due = self.state.next_due()
        if next_due is not None:
            timeout = max(0.0, min(timeout, next_due - self.clock()))
        if timeout > 0:
            self.watcher.wait_beyond(self._seen, timeout)

    def round(self) -> bool:
        """One round of work; False if there was none."""
        # This process's own unsettled entries first (a round waits for all its attempts, and only the
        # lease holder reads, so none is in flight: a settle that failed last round), then a dead
        # consumer's, then new ones, each of every group; all in id order per account, so an account's order holds.
        self._lease_lost.clear()
        own = self.state.read_own_pending(self.consumer, tunables.WEBHOOK_BATCH)
        stale = self.state.claim_stale(
            self.consumer, int(tunables.WEBHOOK_LEASE_SECONDS * 1000), tunables.WEBHOOK_BATCH
        )
        new = self.state.read_new(self.consumer, tunables.WEBHOOK_BATCH)
        due = self.state.due(tunables.WEBHOOK_BATCH)
        entries = sorted({e.id: e for e in [*own, *stale, *new]}.values(), key=lambda e: id_key(e.id))
        if entries and id_key(entries[-1].id) > id_key(self._seen):
            self._seen = entries[-1].id
        if not entries and not due:
            return False
        by_account: dict[str, list[StoredEvent]] = {}
        for event in entries:
            by_account.setdefault(event.fields.get("account_id", ""), []).append(event)
        tasks = [self._pool.submit(self._deliver_in_order, events) for events in by_account.values()]
        retries: dict[str, list[Due]] = {}  # a replay makes several events of one account due at once
        for item in sorted(due, key=lambda d: id_key(d.event_id)):
            retries.setdefault(item.account_id, []).append(item)
        tasks += [self._pool.submit(self._retry_in_order, items) for items in retries.values()]
        self._wait_renewing(tasks)
        return True

    def _wait_renewing(self, tasks: list[concurrent.futures.Future[None]]) -> None:
        """Wait for a round's attempts (each ends within its deadline), renewing the lease meanwhile."""
        pending = set(tasks)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=tunables.WEBHOOK_LEASE_RENEW)
            if pending:
                try:
                    if not self.state.hold_lease(self.consumer, tunables.WEBHOOK_LEASE_SECONDS):
                        # Another process took over (this one was stalled past the lease): attempts in
                        # flight end, no new one starts; what is left pending, the new holder claims.
                        self._lease_lost.set()
                except VaultError:
                    pass  # the attempts still end; settling them reports the Redis trouble
        for task in tasks:
            task.result()  # an attempt's crash is logged by the loop

    # One account's events, a retry, one attempt ------------------------------------------------

    def _deliver_in_order(self, events: list[StoredEvent]) -> None:
        for event in events:
            if self._lease_lost.is_set():
                return
            if self.state.defer_if_held(event):
                continue  # an earlier event of its account is undelivered: it waits behind it
            self._attempt_and_settle(event, failures=0)

    def _retry_in_order(self, items: list[Due]) -> None:
        for item in items:
            if self._lease_lost.is_set():
                return
            self._retry(item)

    def _retry(self, item: Due) -> None:
        # Looked up in its account's group: where its delivery state is, and where its script wrote it.
        event = self.outbox.get([item.event_id], group=self.state.keys.group_of(item.account_id)).get(item.event_id)
        if event is None:
            # Trimmed (older than the retention or past the count cap) before it could be delivered.
            log.warning("webhook %s: event %s is no longer retained; marked failed", self.state.id, item.event_id)
            metrics.EVENTS_FAILED.inc()
            self.state.settle(item.event_id, item.account_id, Outcome.FAILED)
            return
        self._attempt_and_settle(event, failures=item.attempts)

    def _attempt_and_settle(self, event: StoredEvent, *, failures: int) -> None:
        account = event.fields.get("account_id", "")
        try:
            result = self.attempt(event)
        except Exception:  # whatever went wrong, the event is settled (as a retry), never left pending
            log.exception("webhook %s: attempt at event %s crashed", self.state.id, event.id)
            result = "error"
        attempt = failures + 1
        extra = {"endpoint": self.state.id, "event_id": event.id, "type": event.fields.get("type"), "attempt": attempt}
        if result == "delivered":
            lag = max(0.0, self.clock() - event.milliseconds / 1000)
            metrics.DELIVERY_LAG.observe(lag)
            log.info("webhook %s: event %s delivered", self.state.id, event.id, extra=extra)
            self.state.settle(event.id, account, Outcome.DELIVERED)
            return
        delay = retry_delay(self.schedule, attempt)
        if delay is None:
            metrics.EVENTS_FAILED.inc()
            log.warning(
                "webhook %s: event %s failed (%s); no retries left", self.state.id, event.id, result, extra=extra
            )
            self.state.settle(event.id, account, Outcome.FAILED)
            return
        log.info(
            "webhook %s: event %s not delivered (%s); retry in %.1fs",
            self.state.id,
            event.id,
            result,
            delay,
            extra=extra,
        )
        self.state.settle(event.id, account, Outcome.RETRY, due=self.clock() + delay, failures=attempt)

    def attempt(self, event: StoredEvent) -> str:
        """POST the event once; "delivered" on a 2xx within the deadline, else what went wrong."""
        body = shape.body(event)
        headers = signing.headers(self.secret, event.id, int(self.clock()), body)
        outcome = "error"
        try:
            with FetchDeadline(tunables.WEBHOOK_ATTEMPT_DEADLINE):
                response = self.session.post(
                    self.url,
                    data=body,
                    headers=headers,
                    timeout=(tunables.WEBHOOK_CONNECT_TIMEOUT, tunables.WEBHOOK_ATTEMPT_DEADLINE),
                    allow_redirects=False,
                    stream=True,
                )
                status = response.status_code  # the receiver's answer: what its body does after it is moot
                try:
                    response.raw.read(
                        tunables.WEBHOOK_MAX_RESPONSE_BYTES
                    )  # read a little, so the connection can be kept
                except (urllib3.exceptions.HTTPError, OSError):
                    pass  # a body that breaks off or stalls (cut at the deadline) after the status line
                finally:
                    response.close()
            outcome = "delivered" if 200 <= status < 300 else f"status_{status // 100}xx"
        except (requests.Timeout, DeadlinePassed):
            outcome = "timeout"
        except requests.ConnectionError:
            outcome = "unreachable"
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            outcome = "error"
        metrics.DELIVERIES.labels(outcome).inc()
        return outcome


class EventDelivery:
    """Every endpoint's deliverer of this process: started by the web workers or by `events deliver`."""

    def __init__(
        self,
        urls: Sequence[str],
        secret: bytes | None,
        schedule: Sequence[float],
        outbox: Outbox,
        keys: KeySpace,
        watcher: StreamWatcher,
    ) -> None:
        self.deliverers = [
            EndpointDeliverer(
                url, EndpointState(outbox.redis, keys, endpoint_id(url)), outbox, secret or b"", schedule, watcher
            )
            for url in urls
        ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pid = 0

    @property
    def endpoints(self) -> list[EndpointState]:
        return [d.state for d in self.deliverers]

    def ensure_groups(self) -> None:
        """Make every endpoint's consumer group now, so that events from this moment on are delivered."""
        for deliverer in self.deliverers:
            try:
                deliverer.state.ensure_group()
            except VaultError:
                pass  # Redis is down: the delivery loop makes the group when it is back

    def start(self) -> None:
        """Start one delivery thread per endpoint in this process (again after a fork); never waits."""
        if self._pid == os.getpid() or not self.deliverers:
            return
        self._pid = os.getpid()
        self.ensure_groups()
        for deliverer in self.deliverers:
            deliverer.consumer = consumer_name()
            thread = threading.Thread(target=deliverer.run, args=(self._stop,), name=THREAD_NAME, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
