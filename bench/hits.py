"""Sections 1 and 2: token-hit throughput against /healthz, interleaved A/B, and their latency."""

from __future__ import annotations

import statistics

from bench.ab import interleaved, median_of
from bench.common import log, ms
from bench.load import LoadResult


class Hits:
    """Token-hit throughput against /healthz, interleaved A/B, and their latency.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def hit_ratio(self) -> None:
        s, r = self.s, self.report
        account = self.callback_ids[0]
        self.get_token(account)  # cached from here on
        hit = self.token_path(account)
        log(f"throughput: token hit vs /healthz, {s.rounds} rounds x {s.duration} s per side, {s.connections} conns")
        self.load.run(self.base, [hit], max(1, s.duration // 2 + 1), s.connections)  # warm-up, not counted
        if not s.smoke:
            self.load.run(self.base, ["/healthz"], 1, s.connections)

        def after_round(round_no: int, a: LoadResult, b: LoadResult) -> None:
            self.check_load(f"round {round_no + 1} token hit", a)
            self.check_load(f"round {round_no + 1} /healthz", b)
            log(f"  round {round_no + 1}: hit {a.rps:.0f} req/s, /healthz {b.rps:.0f} req/s, ratio {a.rps / b.rps:.3f}")

        hits, healths = interleaved(
            s.rounds,
            self.budget,
            "throughput rounds",
            lambda: self.load.run(self.base, [hit], s.duration, s.connections),
            lambda: self.load.run(self.base, ["/healthz"], s.duration, s.connections),
            after_round,
        )
        ratios = [a.rps / b.rps for a, b in zip(hits, healths)]
        ratio = statistics.median(ratios)
        r.row(
            "1",
            f"token hit req/s / /healthz req/s (median of {s.rounds} A/B rounds of {s.duration} s, "
            f"{s.connections} connections)",
            f"{ratio:.2f} (hit {median_of(hits, 'rps'):.0f}, /healthz {median_of(healths, 'rps'):.0f} req/s)",
            ">= 0.85",
            self.judged(ratio >= 0.85),
        )
        r.notes.append("per-round ratios (hit/healthz): " + ", ".join(f"{x:.3f}" for x in ratios))
        for name, results in (("token hit", hits), ("/healthz", healths)):
            r.row(
                "2",
                f"latency p50 / p99: {name} (same runs; medians)",
                f"{ms(median_of(results, 'p50'))} / {ms(median_of(results, 'p99'))}",
            )
