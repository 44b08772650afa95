"""Section 13.3: connections the simulator accepted for proxied calls, over HTTP and TLS."""

from __future__ import annotations

from bench.common import log
from bench.load import LoadResult
from bench.settings import CA_BUNDLE_VARIABLE


class ConnectionReuse:
    """Connections the simulator accepted for proxied calls, over HTTP and TLS.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def _reuse_run(self, base: str, path: str, seconds: int, connections: int) -> tuple[LoadResult, dict]:
        """One proxied load run with the simulator's counters reset just before it and read once every
        request has left the simulator (the service may still be working through a queue when wrk stops)."""
        self.sim.reset(delay=self.s.api_delay)
        result = self.load.run(base, [path], seconds, connections)
        self.sim.quiesce(self.budget)
        return result, self.sim.stats()

    def _reuse_row(self, section: str, label: str, runs: list[tuple[LoadResult, dict]], tls: bool) -> None:
        """Judged run by run ("over a run of target 1"): each run's new connections (and, over TLS, its
        handshakes) against that run's peak of calls in flight + 10 %; the totals are shown beside."""
        key = "tls_connections_accepted" if tls else "connections_accepted"

        def opened(stats: dict) -> int:
            return max(stats[key], stats["tls_handshakes"]) if tls else stats[key]

        worst = max(runs, key=lambda run: opened(run[1]) / max(run[1]["api_in_flight_peak"], 1))[1]
        met = all(
            0 < stats["api_in_flight_peak"] and opened(stats) <= 1.1 * stats["api_in_flight_peak"] for _, stats in runs
        )
        new = sum(stats[key] for _, stats in runs)
        handshakes = sum(stats["tls_handshakes"] for _, stats in runs)
        open_peak = max(stats["connections_open_peak"] for _, stats in runs)
        calls = sum(stats["api_requests"] for _, stats in runs)
        value = (
            f"worst run {opened(worst):,} new for a peak of {worst['api_in_flight_peak']} in flight; all "
            f"{len(runs)} runs: {new:,} new connections"
            + (f", {handshakes:,} TLS handshakes" if tls else "")
            + f" for {calls:,} calls (simulator's open connections, all clients: peak {open_peak})"
        )
        self.report.row(section, label, value, "<= the run's peak in flight + 10%, every run", self.judged(met))
        self.report.notes.append(
            f"{label.split(':')[0]}, per run (new connections / peak in flight): "
            + ", ".join(f"{stats[key]}/{stats['api_in_flight_peak']}" for _, stats in runs)
            + " (the first run fills the service's cold pools)."
        )

    def proxy_tls(self) -> None:
        """Target 3 over HTTPS: a second gunicorn whose Trackunit URLs are the simulator's HTTPS listener."""
        s, r = self.s, self.report
        label = (
            f"connection reuse over HTTPS (simulator's test CA given as {CA_BUNDLE_VARIABLE}): TLS "
            f"connections and handshakes over proxied runs like 13.1's"
        )
        if not self.sim.tls_url:
            r.row("13.3", label, "not measured (" + ("smoke run" if s.smoke else "--no-tls") + ")")
            return
        env = {
            **self.env,
            "TRACKUNIT_API_URL": self.sim.tls_url,
            "TRACKUNIT_TOKEN_URL": f"{self.sim.tls_url}/apptoken",
            "TRACKUNIT_JWKS_URL": f"{self.sim.tls_url}/api/marketplace/jwks",
            CA_BUNDLE_VARIABLE: self.sim.ca_bundle,
        }
        account = self.callback_ids[0]
        self.get_token(account)  # cached in Redis, which both services share
        log(
            f"connection reuse over HTTPS: a second gunicorn with TRACKUNIT_API_URL={self.sim.tls_url}, "
            f"{CA_BUNDLE_VARIABLE}={self.sim.ca_bundle}"
        )
        server = self.start_gunicorn("gunicorn-tls", env)
        try:
            self.sim.reset()
            probe = self.http.get(server.url + self.proxy_path(account), timeout=30)
            if probe.status_code != 200:
                failures = self.sim.stats()["tls_handshake_failures"]
                r.row(
                    "13.3",
                    label,
                    f"not measured: with {CA_BUNDLE_VARIABLE} set the proxy answered "
                    f"{probe.status_code} {probe.headers.get('Token-Vault-Error', '')} "
                    f"({failures} failed TLS handshake(s) at the simulator): the service does not "
                    f"trust the bundle (see bench/README.md)",
                )
                return
            c, d = s.inflight_connections, s.inflight_duration
            runs = [self._reuse_run(server.url, self.proxy_path(account), max(1, min(d, 2)), c)]
            runs.append(self._reuse_run(server.url, self.proxy_path(account), d, c))
            errors, detail = self._errors([x for x, _ in runs])
            self._reuse_row("13.3", label + f" ({len(runs)} runs, {c} connections)", runs, tls=True)
            r.notes.append(f"connection reuse over HTTPS: {detail}; {runs[-1][0].rps:.0f} req/s in the last run.")
        finally:
            self.sim.reset()
            self._stop_gunicorn(server)
