"""Section 3: many concurrent requests for one cold account make one Trackunit call."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import log, ms, percentile


class Stampede:
    """Many concurrent requests for one cold account make one Trackunit call.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def _concurrent(self, url: str, n: int) -> list[tuple[int, str, float]]:
        """`n` threads, each with a keep-alive connection opened beforehand, released together by a barrier."""
        return self._concurrent_urls([url] * n)

    def _concurrent_urls(self, urls: list[str], timeout: float = 30) -> list[tuple[int, str, float]]:
        """One thread per URL, each with a keep-alive connection opened beforehand, released together by a
        barrier; (status, access_token or "", seconds) each, status 0 when the request failed or timed out."""
        n = len(urls)
        barrier = threading.Barrier(n, timeout=60)

        def one(url: str) -> tuple[int, str, float]:
            with requests.Session() as session:
                session.headers.update(self.headers)
                session.get(self.base + "/healthz", timeout=30)  # the connection is open before the barrier
                barrier.wait()
                started = time.perf_counter()
                try:
                    response = session.get(url, timeout=timeout)
                except requests.RequestException:
                    return 0, "", time.perf_counter() - started
                elapsed = time.perf_counter() - started
                token = response.json().get("access_token", "") if response.status_code == 200 else ""
                return response.status_code, token, elapsed

        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(one, url) for url in urls]
            try:
                return [f.result(timeout=timeout + 90) for f in futures]
            except BaseException:
                barrier.abort()
                raise

    def stampede(self) -> None:
        s, r = self.s, self.report
        account = self.callback_ids[1]
        self.sim.behaviour(delay=s.stampede_delay, expires_in=None)
        before = self.sim.token_requests()
        log(f"stampede: {s.stampede} concurrent requests for a cold account, simulator delay {s.stampede_delay} s")
        cold = self._concurrent(self.base + self.token_path(account), s.stampede)
        calls = self.sim.token_requests() - before
        warm = self._concurrent(self.base + self.token_path(account), s.stampede)
        calls_after_warm = self.sim.token_requests() - before
        self.sim.behaviour(delay=None)
        ok = sum(1 for code, _, _ in cold + warm if code == 200)
        tokens = {t for _, t, _ in cold + warm}
        latencies = [x for _, _, x in cold]
        p99 = percentile(latencies, 99)
        r.row(
            "3",
            f"stampede: Trackunit token calls ({s.stampede} concurrent, cold account, {s.workers} workers)",
            f"{calls}",
            "exactly 1",
            r.count("stampede token calls", calls == 1),
        )
        r.row(
            "3",
            "stampede: answered 200 with one and the same token (cold, then again warm)",
            f"{ok} of {2 * s.stampede}, {len(tokens)} token(s), {calls_after_warm} call(s) in all",
            "all, 1 token, 1 call",
            r.count("stampede answers", ok == 2 * s.stampede and len(tokens) == 1 and calls_after_warm == 1),
        )
        r.row(
            "3",
            f"stampede: p99 latency / simulator delay ({s.stampede_delay} s)",
            f"{p99 / s.stampede_delay:.2f} (p50 {ms(percentile(latencies, 50))}, p99 {ms(p99)}, "
            f"max {ms(max(latencies))})",
        )
        warm_lat = [x for _, _, x in warm]
        r.row(
            "3",
            f"  same {s.stampede} requests again, account now warm (the client's and machine's floor)",
            f"p50 {ms(percentile(warm_lat, 50))}, p99 {ms(percentile(warm_lat, 99))}; cold p99 - warm p99 = "
            f"{ms(p99 - percentile(warm_lat, 99))}",
        )
