"""Section 13.6: what the proxy adds over a direct call at one connection."""

from __future__ import annotations

from bench.ab import interleaved, median_of
from bench.common import API_PATH, log, us
from bench.load import LoadResult


class Overhead:
    """What the proxy adds over a direct call at one connection.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def overhead(self) -> None:
        """Target 6: what the proxy adds at one connection and no delay, interleaved A/B."""
        s, r = self.s, self.report
        account = self.callback_ids[0]
        proxied, headers = self.proxy_path(account), self._direct_headers(account)
        d = s.overhead_duration
        log(f"proxy overhead: 1 connection, no API delay, {s.overhead_rounds} rounds x {d} s per side")

        def run(side: str, seconds: int) -> LoadResult:
            self.sim.reset()  # also empties the API log, which grows by every request
            if side == "direct":
                return self.load.run(self.sim.url, [API_PATH], seconds, 1, headers=headers)
            return self.load.run(self.base, [proxied], seconds, 1)

        run("proxied", 1)
        run("direct", 1)
        through, direct = interleaved(
            s.overhead_rounds, self.budget, "overhead rounds", lambda: run("proxied", d), lambda: run("direct", d)
        )
        self.sim.reset()
        p50, p50_direct = median_of(through, "p50"), median_of(direct, "p50")
        added = p50 - p50_direct
        diffs = [a.p50 - b.p50 for a, b in zip(through, direct)]
        r.row(
            "13.6",
            f"proxy overhead at 1 connection, no delay: proxied p50 - direct p50 (median of "
            f"{s.overhead_rounds} A/B rounds of {d} s)",
            f"{us(added)} (proxied {us(p50)}, direct {us(p50_direct)})",
            "<= 1.0 ms",
            self.judged(added <= 0.001),
        )
        r.row(
            "13.6",
            "  the same runs: req/s proxied / direct, and p99",
            f"{median_of(through, 'rps'):.0f} / {median_of(direct, 'rps'):.0f} "
            f"req/s; p99 {us(median_of(through, 'p99'))} / "
            f"{us(median_of(direct, 'p99'))}",
        )
        r.notes.append("proxy overhead, per-round p50 differences: " + ", ".join(us(x) for x in diffs))
        if s.smoke:
            for i, (a, b) in enumerate(zip(through, direct)):
                self.check_load(f"overhead proxied run {i + 1}", a)
                self.check_load(f"overhead direct run {i + 1}", b)
