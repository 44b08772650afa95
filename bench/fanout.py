"""Section 13.4: many cold accounts at once, one first request each."""

from __future__ import annotations

from bench.common import log, ms, percentile
from bench.load import one_shot


class FanOut:
    """Many cold accounts at once, one first request each.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def fanout(self) -> None:
        """Target 4: many cold accounts at once, one first request each."""
        s, r = self.s, self.report
        first = 3 + s.economy_accounts
        accounts = self.callback_ids[first : first + s.fanout]
        n, delay = len(accounts), s.fanout_delay
        self.sim.reset()
        self.sim.behaviour(delay=delay)
        log(f"cold fan-out: {n} accounts, none cached, {n} concurrent first requests, token endpoint delay {delay} s")
        paths = [self.token_path(a) for a in accounts]
        cold = [
            (code, body.get("access_token", ""), x)
            for code, body, x in one_shot(self.base, paths, self.headers, timeout=60)
        ]
        after = self.sim.stats()
        warm = [
            (code, body.get("access_token", ""), x)
            for code, body, x in one_shot(self.base, paths, self.headers, timeout=60)
        ]
        after_warm = self.sim.stats()
        self.sim.reset()
        calls, by_client = after["token_requests"], after["token_requests_by_client"]
        one_each = all(by_client.get(self.client_of[a], 0) == 1 for a in accounts)
        ok = sum(1 for code, _, _ in cold if code == 200)
        tokens = {t for _, t, _ in cold if t}
        warm_ok = sum(1 for code, _, _ in warm if code == 200)
        latencies = [x for _, _, x in cold]
        p99 = percentile(latencies, 99)
        r.row(
            "13.4",
            f"cold fan-out: {n} concurrent first requests, one per account, none cached (token delay "
            f"{ms(delay)}): answered 200",
            f"{ok} of {n} ({len(tokens)} distinct tokens); warm repeat {warm_ok} of {n}",
            f"all ({n})",
            r.count("fan-out answers", ok == n and len(tokens) == n and warm_ok == n),
        )
        r.row(
            "13.4",
            "cold fan-out: Trackunit token calls",
            f"{calls} ("
            + ("one per account" if one_each else "NOT one per account")
            + f"); {after_warm['token_requests']} "
            f"after the warm repeat",
            f"exactly {n}",
            r.count("fan-out token calls", calls == n and one_each and after_warm["token_requests"] == n),
        )
        r.row(
            "13.4",
            f"cold fan-out: p99 latency / token delay ({ms(delay)})",
            f"{p99 / delay:.2f} (p50 {ms(percentile(latencies, 50))}, p99 {ms(p99)}, max {ms(max(latencies))}); "
            f"token calls in flight at once: peak {after['token_in_flight_peak']}",
            "<= 3",
            self.judged(p99 <= 3 * delay),
        )
        warm_latencies = [x for _, _, x in warm]
        r.row(
            "13.4",
            f"  same {n} requests again, all cached (what {n} at once cost without Trackunit)",
            f"p50 {ms(percentile(warm_latencies, 50))}, p99 {ms(percentile(warm_latencies, 99))}",
        )
