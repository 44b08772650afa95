"""Section 13.1: proxied against direct calls under a slow API, interleaved A/B."""

from __future__ import annotations

import statistics

from bench.ab import interleaved, median_of
from bench.common import API_PATH, log, ms
from bench.load import WRK_TIMEOUT, LoadResult


class SlowApi:
    """Proxied against direct calls under a slow API, interleaved A/B.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def proxy_slow_api(self) -> None:
        """Targets 1 and 3: proxied vs direct under a slow API, interleaved; the connections that took."""
        s, r = self.s, self.report
        account = self.callback_ids[0]
        proxied, headers = self.proxy_path(account), self._direct_headers(account)
        c, d, delay = s.inflight_connections, s.inflight_duration, s.api_delay
        log(
            f"proxy under a slow API: {c} connections, API delay {delay} s, {s.inflight_rounds} rounds x {d} s "
            f"per side, proxied vs straight to the simulator"
        )
        reuse: list[tuple[LoadResult, dict]] = []

        def proxied_run(seconds: int) -> LoadResult:
            result, stats = self._reuse_run(self.base, proxied, seconds, c)
            reuse.append((result, stats))
            return result

        def direct_run(seconds: int) -> LoadResult:
            self.sim.reset(delay=delay)
            result = self.load.run(self.sim.url, [API_PATH], seconds, c, headers=headers)
            self.sim.quiesce(self.budget)
            return result

        proxied_run(max(1, min(d, 2)))  # warm-up: the service's pools fill (counted for reuse, not for the ratio)
        direct_run(1)

        def after_round(round_no: int, a: LoadResult, b: LoadResult) -> None:
            log(
                f"  round {round_no + 1}: proxied {a.rps:.0f} req/s (p50 {ms(a.p50)}, {self._errors([a])[1]}), "
                f"direct {b.rps:.0f} req/s (p50 {ms(b.p50)})"
            )

        through, direct = interleaved(
            s.inflight_rounds, self.budget, "proxy rounds", lambda: proxied_run(d), lambda: direct_run(d), after_round
        )
        self.sim.reset()
        ratios = [a.rps / b.rps if b.rps else 0.0 for a, b in zip(through, direct)]
        ratio = statistics.median(ratios)
        p50, p50_direct = median_of(through, "p50"), median_of(direct, "p50")
        p50_limit = 1.1 * p50_direct + 0.020
        errors, detail = self._errors(through)
        direct_errors, direct_detail = self._errors(direct)
        where = f"{c} connections, API delay {ms(delay)}, median of {s.inflight_rounds} A/B rounds of {d} s"
        r.row(
            "13.1",
            f"proxy under a slow API: proxied req/s / direct req/s ({where})",
            f"{ratio:.2f} (proxied {median_of(through, 'rps'):.0f}, direct {median_of(direct, 'rps'):.0f} req/s)",
            ">= 0.9",
            self.judged(ratio >= 0.9),
        )
        r.row(
            "13.1",
            "proxy under a slow API: p50 latency, proxied vs direct (same runs; medians)",
            f"{ms(p50)} vs {ms(p50_direct)} (p99 {ms(median_of(through, 'p99'))} vs {ms(median_of(direct, 'p99'))})",
            f"<= 1.1 x direct + 20 ms = {ms(p50_limit)}",
            self.judged(p50 <= p50_limit),
        )
        r.row(
            "13.1",
            f"proxy under a slow API: errors, proxied (wrk: non-2xx, socket errors, timeouts > {WRK_TIMEOUT} s)",
            f"{errors} ({detail}); direct: {direct_errors} ({direct_detail})",
            "0",
            self.judged(errors == 0),
        )
        r.notes.append(
            "proxy under a slow API, per-round ratios (proxied/direct): " + ", ".join(f"{x:.3f}" for x in ratios)
        )
        if direct_errors:
            r.notes.append(
                "proxy under a slow API: the direct side had errors, so the simulator (or the machine) "
                "could not keep up: the ratio is not a fair measure of the service in this run."
            )
        if s.smoke:  # counts only: a short proxied run through any worker model answers every request
            for i, (a, b) in enumerate(zip(through, direct)):
                self.check_load(f"proxied run {i + 1}", a)
                self.check_load(f"direct run {i + 1}", b)
        self._reuse_row(
            "13.3",
            f"connection reuse: connections the simulator accepted over the proxied runs of "
            f"13.1 ({len(reuse)} runs, warm-up included)",
            reuse,
            tls=False,
        )
