"""Sections 1 and 2: token-hit throughput against /healthz, interleaved A/B, and their latency; issue 17's
variants: the same hit with a managed, scoped API key (17.1) and with a rate-limited one (17.2)."""

from __future__ import annotations

import statistics

from bench.ab import interleaved, median_of
from bench.common import log, ms
from bench.load import LoadResult
from core.permissions import KeyPolicy, parse_permissions, parse_rate, parse_scopes
from vault.apikeys import ApiKeyStore
from vault.layout import KeySpace

# A limit the bench never reaches (the highest allowed): what is measured is counting, not refusing.
UNREACHED_RATE = "999999/second"


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
        ratio, hits, healths = self._hit_against_healthz("", hit, None)
        r.row(
            "1",
            f"token hit req/s / /healthz req/s (median of {s.rounds} A/B rounds of {s.duration} s, "
            f"{s.connections} connections)",
            f"{ratio:.2f} (hit {median_of(hits, 'rps'):.0f}, /healthz {median_of(healths, 'rps'):.0f} req/s)",
            ">= 0.85",
            self.judged(ratio >= 0.85),
        )
        for name, results in (("token hit", hits), ("/healthz", healths)):
            r.row(
                "2",
                f"latency p50 / p99: {name} (same runs; medians)",
                f"{ms(median_of(results, 'p50'))} / {ms(median_of(results, 'p99'))}",
            )
        self._managed_key_hits(hit, median_of(hits, "rps"))

    def _managed_key_hits(self, hit: str, env_key_rps: float) -> None:
        """17.1: the hit with a managed key holding token:read and a ceiling; 17.2: the same key rate-limited."""
        s, r = self.s, self.report
        store = ApiKeyStore(self.redis, self.config.keyring, KeySpace(self.config.key_prefix))
        ceiling = parse_scopes(" ".join(self.config.app_scopes.required))  # the default token is within it
        scoped = store.create("bench-scoped", KeyPolicy(parse_permissions("token:read"), ceiling))
        limited = store.create(
            "bench-limited", KeyPolicy(parse_permissions("token:read"), ceiling, parse_rate(UNREACHED_RATE))
        )
        assert scoped is not None and limited is not None, "bench keys exist already"
        self._managed_against_env_key(hit, {"Authorization": f"Bearer {scoped}"})
        for row, name, key in (("17.1", "managed, scoped key", scoped), ("17.2", "rate-limited key", limited)):
            headers = {"Authorization": f"Bearer {key}"}
            self.load.run(self.base, [hit], 1, s.connections, headers)  # warm-up: every worker remembers the key
            ratio, hits, healths = self._hit_against_healthz(f" ({name})", hit, headers)
            target, verdict = (">= 0.85", self.judged(ratio >= 0.85)) if row == "17.1" else ("", "")
            r.row(
                row,
                f"token hit req/s with a {name} / /healthz req/s (median of {s.rounds} A/B rounds of {s.duration} s)",
                f"{ratio:.2f} (hit {median_of(hits, 'rps'):.0f}, /healthz {median_of(healths, 'rps'):.0f} req/s; "
                f"p50 {ms(median_of(hits, 'p50'))}, p99 {ms(median_of(hits, 'p99'))}; "
                f"{median_of(hits, 'rps') / env_key_rps:.2f} x the API_KEYS key's hit req/s)",
                target,
                verdict,
            )

    def _managed_against_env_key(self, hit: str, headers: dict[str, str]) -> None:
        """17.1: the hit with the managed, scoped key against the same hit with the API_KEYS key, interleaved,
        so that only the key check differs between the sides (the /healthz ratios compare across runs)."""
        s = self.s
        self.load.run(self.base, [hit], 1, s.connections, headers)  # warm-up: every worker remembers the key
        managed, env = interleaved(
            s.rounds,
            self.budget,
            "throughput rounds (managed key vs API_KEYS key)",
            lambda: self.load.run(self.base, [hit], s.duration, s.connections, headers),
            lambda: self.load.run(self.base, [hit], s.duration, s.connections),
            lambda n, a, b: (
                self.check_load(f"round {n + 1} token hit (managed key)", a),
                self.check_load(f"round {n + 1} token hit", b),
            ),
        )
        ratios = [a.rps / b.rps for a, b in zip(managed, env)]
        self.report.notes.append(
            "per-round ratios (managed key hit / API_KEYS key hit): " + ", ".join(f"{x:.3f}" for x in ratios)
        )
        self.report.row(
            "17.1",
            f"token hit req/s with a managed, scoped key / with the API_KEYS key (median of {s.rounds} A/B rounds)",
            f"{statistics.median(ratios):.2f} (managed {median_of(managed, 'rps'):.0f}, "
            f"API_KEYS key {median_of(env, 'rps'):.0f} req/s)",
        )

    def _hit_against_healthz(
        self, what: str, hit: str, headers: dict[str, str] | None
    ) -> tuple[float, list[LoadResult], list[LoadResult]]:
        """Interleaved A/B rounds of the token hit (with `headers`, else the bench's API key) and /healthz."""
        s = self.s

        def after_round(round_no: int, a: LoadResult, b: LoadResult) -> None:
            self.check_load(f"round {round_no + 1} token hit{what}", a)
            self.check_load(f"round {round_no + 1} /healthz", b)
            log(
                f"  round {round_no + 1}{what}: hit {a.rps:.0f} req/s, /healthz {b.rps:.0f} req/s, "
                f"ratio {a.rps / b.rps:.3f}"
            )

        hits, healths = interleaved(
            s.rounds,
            self.budget,
            f"throughput rounds{what}",
            lambda: self.load.run(self.base, [hit], s.duration, s.connections, headers),
            lambda: self.load.run(self.base, ["/healthz"], s.duration, s.connections),
            after_round,
        )
        ratios = [a.rps / b.rps for a, b in zip(hits, healths)]
        self.report.notes.append(f"per-round ratios (hit{what}/healthz): " + ", ".join(f"{x:.3f}" for x in ratios))
        return statistics.median(ratios), hits, healths
