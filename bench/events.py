"""Section 16: webhook delivery lag (event to 2xx) while accounts install at a steady rate."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import log, ms, percentile
from events.signing import generate_secret
from tests.support.receiver import Receiver

INSTALLED, VERIFIED = "account.installed", "account.verified"
_TYPES = (INSTALLED, VERIFIED)


class EventDelivery:
    """Installs at `events_rate` per second for `events_seconds`, each announced to a webhook receiver.

    One part of bench.run.Bench (a mixin): a gunicorn of its own (its own KEY_PREFIX) delivers to a
    receiver in this process that verifies every request with the `standardwebhooks` library.
    With VERIFY_ON_INSTALL on, every install makes two events: installed, then verified.
    """

    def event_delivery(self) -> None:
        s, r = self.s, self.report
        receiver = Receiver(generate_secret())
        self.stack.callback(receiver.close)
        env = {
            **self.env,
            "KEY_PREFIX": "bench-events",
            "WEBHOOK_URL": receiver.url,
            "WEBHOOK_SECRET": receiver.secret,
            "VERIFY_ON_INSTALL": "true",
        }
        server = self.start_gunicorn("gunicorn-events", env)
        count = s.events_rate * s.events_seconds
        prepared = self._prepare_callbacks(count)
        log(f"events: {count} installs at {s.events_rate}/s through POST /appinstall, each announced by webhook")
        local = threading.local()

        def post(item: tuple[str, dict, str]) -> int:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            _, body, identity = item
            return local.session.post(
                server.url + "/appinstall", json=body, headers={"Trackunit-Identity": identity}, timeout=30
            ).status_code

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            futures = []
            for n, item in enumerate(prepared):
                time.sleep(max(0.0, started + n / s.events_rate - time.monotonic()))  # a steady rate
                futures.append(pool.submit(post, item))
            statuses = [f.result() for f in futures]
        rate = count / (time.monotonic() - started)
        wanted = {(account_id, kind) for account_id, _, _ in prepared for kind in (INSTALLED, VERIFIED)}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {_key(d) for d in receiver.delivered()}
            if wanted <= got:
                break
            time.sleep(0.1)
        delivered = [d for d in receiver.delivered() if _key(d) in wanted]
        lags = [d.at - _epoch(d.payload["timestamp"]) for d in delivered]
        lag = {
            kind: [x for d, x in zip(delivered, lags) if d.payload["type"] == kind] for kind in (INSTALLED, VERIFIED)
        }
        by_account: dict[str, list[str]] = {}
        for d in delivered:
            by_account.setdefault(d.payload["data"]["account_id"], []).append(d.payload["type"])
        ordered = all(by_account.get(account_id) == [INSTALLED, VERIFIED] for account_id, _, _ in prepared)
        r.row(
            "16",
            f"webhook delivery lag, event -> 2xx, {count} installs at {rate:.0f}/s ({len(delivered)} events)",
            f"p50 {ms(percentile(lags, 50))}, p99 {ms(percentile(lags, 99))}",
        )
        for kind, values in lag.items():
            r.row("16", f"  {kind}", f"p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))}")
        r.row(
            "16",
            "installs stored; installed then verified delivered once each, in order, signatures valid",
            f"{statuses.count(200)} stored, {len(delivered)} of {len(wanted)} delivered",
            "all",
            r.count(
                "webhook deliveries",
                statuses.count(200) == count and len(delivered) == len(wanted) and ordered and not receiver.rejected,
            ),
        )


def _key(delivery) -> tuple[str, str]:
    return delivery.payload["data"]["account_id"], delivery.payload["type"]


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
