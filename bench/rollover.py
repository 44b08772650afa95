"""Section 4: tokens rolled over under steady load, and whether any request waited for it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import statistics
import threading
import time

import requests

from auth.fetcher import cache_lifetime
from bench.common import log, ms, percentile
from bench.load import LoadResult


class Rollover:
    """Tokens rolled over under steady load, and whether any request waited for it.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def rollover(self) -> None:
        s, r = self.s, self.report
        account = self.callback_ids[2]
        path = [self.token_path(account)]
        ttl, window = cache_lifetime(s.rollover_expires_in, s.margin)
        delay = s.rollover_delay
        lead = 1.0 if not s.smoke else 0.8
        self.sim.behaviour(expires_in=s.rollover_expires_in, delay=delay)
        log(
            f"rollover: expires_in {s.rollover_expires_in} s -> cached {ttl} s, refresh-ahead window {window:.1f} s, "
            f"simulator delay {delay} s, {s.rollovers} rollover(s) under load"
        )
        before = self.sim.token_requests()
        self.get_token(account)
        cached_at = time.time()  # the service computed cached_until a moment before this
        log_offset = self._log_size()
        waits_before = self._single_flight_waits()  # the stampede made the metric appear, if it is wired up
        refresh_at = cached_at + ttl - window
        steady: list[tuple[float, float, LoadResult]] = []  # (start, end, result)
        rolling: list[tuple[float, float, LoadResult]] = []
        starts: list[float] = []
        for k in range(s.rollovers):
            self.budget.check("rollover")
            gap = refresh_at - lead - time.time()
            if gap >= 1:
                began = time.time()
                result = self.load.run(self.base, path, int(gap), s.connections)
                self.check_load("rollover steady load", result)
                steady.append((began, time.time(), result))
            time.sleep(max(0.0, refresh_at - lead - time.time()))
            seen: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(target=self._watch_calls, args=(stop, seen), daemon=True)
            poller.start()
            seconds = math.ceil(lead + window + delay + 1.0)
            began = time.time()
            try:
                result = self.load.run(self.base, path, seconds, s.connections)
            finally:
                stop.set()
                poller.join(timeout=5)
            self.check_load("rollover load", result)
            rolling.append((began, time.time(), result))
            if seen:
                starts.append(seen[0] - refresh_at)
                refresh_at = seen[0] + delay + ttl - window  # the next refresh point of the new token
            else:
                refresh_at += ttl - window
            log(
                f"  rollover {k + 1}: {len(seen)} token call(s), slowest request {ms(result.max)}, p99 {ms(result.p99)}"
            )
        calls = self.sim.token_requests() - before - 1
        waits_after = self._single_flight_waits()
        if not steady:  # too short to have a steady stretch: measure one now, same account, same load
            began = time.time()
            steady.append((began, time.time() + 1, self.load.run(self.base, path, 1, s.connections)))
            steady[-1] = (began, time.time(), steady[-1][2])
        self.sim.behaviour(expires_in=None, delay=None)
        steady_p99 = statistics.median(x.p99 for _, _, x in steady)
        slowest = max(x.max for _, _, x in rolling)
        r.row(
            "4",
            f"rollover: Trackunit token calls during {s.rollovers} rollover(s) under steady load",
            f"{calls}",
            f"1 per rollover ({s.rollovers})",
            r.count("rollover token calls", calls == s.rollovers),
        )
        # Client-side latency includes the machine's noise (queueing, other tenants); the service's own request
        # log times each request from its first to its last line of code, where a wait for Trackunit would show.
        server = self._server_times(log_offset, account)
        in_steady = [d for t, d in server if any(a <= t <= b for a, b, _ in steady)]
        in_rolling = [d for t, d in server if any(a <= t <= b for a, b, _ in rolling)]
        judged = self.judged
        r.row(
            "4",
            f"rollover, client side ({self.load.name.split()[0]}): slowest request around the refresh point "
            f"vs steady p99",
            f"{ms(slowest)} vs {ms(steady_p99)} (steady max {ms(max(x.max for _, _, x in steady))})",
            f"< {ms(delay)} (simulator delay)",
            judged(slowest < delay) if not (in_steady and in_rolling) else "",
        )
        if in_steady and in_rolling:
            slow = sum(1 for d in in_rolling if d >= delay / 2)
            slow_steady = sum(1 for d in in_steady if d >= delay / 2)
            r.row(
                "4",
                "rollover, server side (service request log): slowest vs steady p99 / max; requests >= delay/2",
                f"{ms(max(in_rolling))} vs {ms(percentile(in_steady, 99))} / {ms(max(in_steady))}; "
                f"{slow} of {len(in_rolling):,} (steady: {slow_steady} of {len(in_steady):,})",
                f"< {ms(delay)}: nobody waits for Trackunit",
                judged(max(in_rolling) < delay),
            )
        else:
            r.notes.append("rollover: the service's request log could not be read; only client-side latency shown.")
        if waits_before is not None and waits_after is not None:
            waits = waits_after - waits_before
            r.row(
                "4",
                "rollover: requests that waited for a fetch (service metric itv_single_flight_waits_total)",
                f"{waits}",
                "0",
                judged(waits == 0),
            )
        if starts:
            r.notes.append(
                "rollover: the background refresh reached Trackunit "
                + ", ".join(f"{x:+.2f} s" for x in starts)
                + " after the refresh point "
                f"(cache_lifetime({s.rollover_expires_in}, {s.margin}) = ({ttl} s, window {window:.2f} s))."
            )

    def _single_flight_waits(self) -> int | None:
        """The service's count of requests that waited on another's fetch (all outcomes); None if not exposed."""
        try:
            text = self.http.get(self.base + "/metrics", timeout=10).text
        except requests.RequestException:
            return None
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("itv_single_flight_waits_total")
        ]
        return int(sum(values)) if values else None

    def _log_size(self) -> int:
        try:
            return self.gunicorn.log_path.stat().st_size
        except OSError:
            return 0

    def _server_times(self, offset: int, account_id: str) -> list[tuple[float, float]]:
        """(epoch time of the line, seconds) of the account's requests in the service's JSON request log."""
        found: list[tuple[float, float]] = []
        needle = account_id.encode()
        with contextlib.suppress(OSError), open(self.gunicorn.log_path, "rb") as stream:
            stream.seek(offset)
            for raw in stream:
                # One line per request: itv.request, or itv.audit when the request issued a token.
                if needle not in raw or b'"duration_ms"' not in raw:
                    continue
                try:
                    line = json.loads(raw)
                    if line.get("logger") in ("itv.request", "itv.audit") and line.get("account_id") == account_id:
                        found.append(
                            (dt.datetime.fromisoformat(line["time"]).timestamp(), float(line["duration_ms"]) / 1000)
                        )
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
        return found

    def _watch_calls(self, stop: threading.Event, seen: list[float]) -> None:
        with requests.Session() as session:
            last = self.sim.token_requests(session)
            while not stop.is_set():
                now = self.sim.token_requests(session)
                if now > last:
                    seen.extend([time.time()] * (now - last))
                    last = now
                stop.wait(0.02)
