"""Section 5: Trackunit calls per cache lifetime, account and scope set (upstream economy)."""

from __future__ import annotations

import time

import requests

from auth.fetcher import cache_lifetime
from bench.common import SCOPE_SETS, log


class Economy:
    """Trackunit calls per cache lifetime, account and scope set (upstream economy).

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def economy(self) -> None:
        s, r = self.s, self.report
        accounts = self.callback_ids[3 : 3 + s.economy_accounts]
        paths = [self.token_path(a, scope) for a in accounts for scope in SCOPE_SETS]
        ttl, window = cache_lifetime(s.economy_expires_in, s.margin)
        self.sim.behaviour(expires_in=s.economy_expires_in, delay=None)
        log(
            f"upstream economy: {len(accounts)} accounts x {len(SCOPE_SETS)} scope sets, expires_in "
            f"{s.economy_expires_in} s (cached {ttl} s), {s.economy_seconds} s of load"
        )
        # Fill every slot first: the one cold fetch per slot is not an upstream cost of keeping it
        # warm, and counting it would add 1 / lifetimes to the ratio whatever the service does.
        for path in paths:
            requests.get(self.base + path, headers=self.headers, timeout=20).raise_for_status()
        before = self.sim.token_requests()
        started = time.monotonic()
        result = self.load.run(self.base, paths, s.economy_seconds, max(4, min(s.connections, 8)))
        elapsed = time.monotonic() - started
        calls = self.sim.token_requests() - before
        self.sim.behaviour(expires_in=None)
        self.check_load("economy load", result)
        lifetimes = elapsed / ttl
        ratio = calls / (lifetimes * len(paths))
        floor = ttl / (ttl - window)
        prod_ttl, prod_window = cache_lifetime(3600, 300)
        r.row(
            "5",
            "upstream economy: Trackunit calls / (cache lifetimes x accounts x scope sets), slots warm",
            f"{ratio:.3f} ({calls} calls / ({lifetimes:.1f} x {len(accounts)} x {len(SCOPE_SETS)}))",
            "<= 1.05",
            self.judged(ratio <= 1.05),
        )
        r.row(
            "5",
            "  where lifetime = auth.tokens.cache_lifetime(expires_in, TOKEN_EXPIRY_MARGIN)[0]",
            f"cache_lifetime({s.economy_expires_in}, {s.margin})[0] = {ttl} s; run {elapsed:.1f} s",
        )
        r.row(
            "5",
            "  refresh-ahead alone: ttl / (ttl - window), here and at Trackunit's 3600 s (margin 300)",
            f"{floor:.3f} here ({ratio / floor:.3f} x that measured); "
            f"{prod_ttl / (prod_ttl - prod_window):.3f} at 3600 s",
        )
