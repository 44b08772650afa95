"""Section 13.2: a thousand connections in flight through the proxy, and the memory it takes."""

from __future__ import annotations

import resource
import threading

from bench.common import API_PATH, SetupError, log, ms
from bench.load import WRK_TIMEOUT
from bench.processes import memory_of, process_tree


class ManyInFlight:
    """A thousand connections in flight through the proxy, and the memory it takes.

    One part of bench.run.Bench (a mixin): it runs on the harness of bench.harness.
    """

    def many_in_flight(self) -> None:
        """Target 2: many connections through the proxy at the default WEB_CONCURRENCY; memory from /proc."""
        s, r = self.s, self.report
        n = s.many_connections
        if n <= 0:
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2 * n + 256:
            r.notes.append(
                f"in flight: RLIMIT_NOFILE is {soft}, too low for {n} connections (wrk, the service "
                f"and the simulator each hold one descriptor per connection); raise the hard limit."
            )
        account = self.callback_ids[0]
        self.get_token(account)
        log(
            f"{n} connections in flight through the proxy, API delay {s.api_delay} s, {s.many_seconds} s, "
            f"gunicorn with WEB_CONCURRENCY unset (its default)"
        )
        # The same load straight to the simulator first: what one Python process answers at this
        # concurrency, so that the proxied figures can be read against it.
        self.sim.reset(delay=s.api_delay)
        reference = self.load.run(self.sim.url, [API_PATH], s.many_seconds, n, headers=self._direct_headers(account))
        self.sim.quiesce(self.budget)
        server = self.start_gunicorn("gunicorn-default", workers=None)
        try:
            workers = len(process_tree(server.process.pid)) - 1
            worker_class = self._worker_class(server)
            probe = self.http.get(server.url + self.proxy_path(account), timeout=30)
            if probe.status_code != 200:
                raise SetupError(f"proxied request on the default-settings gunicorn: {probe.status_code}")
            idle_rss, idle_pss = memory_of(process_tree(server.process.pid))
            self.sim.reset(delay=s.api_delay)
            peak = [idle_rss, idle_pss]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.25):
                    rss, pss = memory_of(process_tree(server.process.pid))
                    peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                result = self.load.run(server.url, [self.proxy_path(account)], s.many_seconds, n)
            finally:
                stop.set()
                sampler.join(timeout=5)
            self.sim.quiesce(self.budget)
            stats = self.sim.stats()
            errors, detail = self._errors([result])
            r.row(
                "13.2",
                f"{n:,} connections through the proxy, API delay {ms(s.api_delay)}, {s.many_seconds} s, "
                f"default WEB_CONCURRENCY ({workers} {worker_class} workers)",
                f"{result.requests:,} answered, {result.rps:.0f} req/s, p50 {ms(result.p50)}, p99 {ms(result.p99)}; "
                f"{detail}; at the simulator: peak in flight {stats['api_in_flight_peak']}, "
                f"{stats['connections_accepted']:,} new connections",
                f"0 errors, 0 timeouts (> {WRK_TIMEOUT} s)",
                self.judged(errors == 0 and result.requests > 0),
            )
            r.row(
                "13.2",
                "  the same load straight to the simulator (one Python process), just before",
                f"{reference.requests:,} answered, {reference.rps:.0f} req/s, p50 {ms(reference.p50)}, "
                f"p99 {ms(reference.p99)}; {self._errors([reference])[1]}",
            )
            if not reference.clean:
                r.notes.append(
                    f"{n:,} connections: the simulator alone did not answer this load cleanly "
                    f"({self._errors([reference])[1]}), so some of the proxied run's timeouts may be "
                    f"the simulator's, not the service's."
                )
            mib = 2**20
            r.row(
                "13.2",
                f"memory of all gunicorn processes (master + {workers} workers, /proc VmRSS summed; "
                f"Pss beside it), peak during that run",
                f"RSS {peak[0] / mib:.0f} MiB (idle {idle_rss / mib:.0f}); PSS {peak[1] / mib:.0f} MiB "
                f"(idle {idle_pss / mib:.0f})",
                "<= 512 MiB (Heroku basic dyno)",
                self.judged(peak[0] <= 512 * mib),
            )
        finally:
            self.sim.reset()
            self._stop_gunicorn(server)
