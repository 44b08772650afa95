#!/usr/bin/env python3
"""Benchmark of the Iris Token Vault (issue 5): one command, one table.

Starts a real redis-server, the Trackunit simulator (a subprocess) and the
service under gunicorn exactly as the Procfile does, each on a free port of
127.0.0.1, installs accounts, measures, prints one table and stops everything
(also on Ctrl-C and on errors). Load comes from wrk (Debian package `wrk`).

The machines are shared and noisy, so throughput is only ever quoted as a
ratio of two sides measured in the same run, interleaved A B A B ..., as the
median of the per-round ratios.

    python -m bench.run                 # the full run (needs wrk; installs it with apt-get when root)
    python -m bench.run --smoke         # a few seconds, tiny N, asserts the counts, no throughput threshold
    python -m bench.run --accounts 20000 --rounds 3 --duration 2 --workers 4

Exit status: 0 when every count is right (Trackunit calls of the stampede and
of the rollovers, every response a 2xx, paging returns every account once),
1 when a count is wrong, 2 when the run could not be set up, 130 when
interrupted. Targets (ratios, memory, latency) are printed as ok/MISSED and
do not change the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time

import redis
import requests

from bench.common import SetupError, log
from bench.economy import Economy
from bench.events import EventDelivery
from bench.fanout import FanOut
from bench.harness import Harness
from bench.hits import Hits
from bench.many import ManyInFlight
from bench.overhead import Overhead
from bench.processes import raise_fd_limit
from bench.report import Output
from bench.reuse import ConnectionReuse
from bench.rollover import Rollover
from bench.scale import Scale
from bench.settings import FULL, SECTIONS, SMOKE, Settings
from bench.slow_api import SlowApi
from bench.stampede import Stampede


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds: tiny N, 1 round, short runs; counts asserted"
    )
    parser.add_argument("--accounts", type=int, help="installed accounts N (full 100000, smoke 300)")
    parser.add_argument("--callback-installs", type=int, help="of N, installed through POST /appinstall (1000)")
    parser.add_argument("--rounds", type=int, help="A/B rounds of the throughput ratio (5)")
    parser.add_argument("--duration", type=int, help="seconds per side per round (3)")
    parser.add_argument("--workers", type=int, default=4, help="WEB_CONCURRENCY (4)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--stampede", type=int, default=None, help="concurrent cold requests (200)")
    parser.add_argument("--rollovers", type=int, help="token rollovers under load (full 2, smoke 1)")
    parser.add_argument("--economy-seconds", type=int, help="length of the upstream-economy run (full 60)")
    parser.add_argument("--page-size", type=int, help="limit= of the paging walk (full 1000)")
    parser.add_argument("--inflight-rounds", type=int, help="A/B rounds of the slow-API proxy section (full 5)")
    parser.add_argument("--inflight-duration", type=int, help="seconds per side per round there (full 12)")
    parser.add_argument("--inflight-connections", type=int, help="wrk connections there (full 256, smoke 8)")
    parser.add_argument("--api-delay", type=float, help="simulator REST API delay there, seconds (full 0.5)")
    parser.add_argument("--many-connections", type=int, help="connections of the in-flight section (1000; 0 skips)")
    parser.add_argument("--many-seconds", type=int, help="length of that run (full 20)")
    parser.add_argument("--fanout", type=int, help="accounts of the cold fan-out (full 500, smoke 20)")
    parser.add_argument("--overhead-rounds", type=int, help="A/B rounds of the one-connection overhead (full 7)")
    parser.add_argument("--no-tls", action="store_true", help="skip the HTTPS connection-reuse run")
    parser.add_argument(
        "--redis",
        choices=("single", "cluster"),
        default="single",
        help="the store: one redis-server (default) or a Redis Cluster of 3 masters and 3 replicas",
    )
    parser.add_argument("--sections", help="comma-separated subset of: " + ",".join(SECTIONS) + " (default all)")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for every gunicorn the bench starts (repeatable)",
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load loop even if wrk is there (smoke only: the fallback, tested)",
    )
    args = parser.parse_args(argv)
    preset = dict(SMOKE if args.smoke else FULL)
    for name in (
        "accounts",
        "callback_installs",
        "rounds",
        "duration",
        "stampede",
        "rollovers",
        "economy_seconds",
        "page_size",
        "inflight_rounds",
        "inflight_duration",
        "inflight_connections",
        "api_delay",
        "many_connections",
        "many_seconds",
        "fanout",
        "overhead_rounds",
    ):
        value = getattr(args, name)
        if value is not None:
            preset[name] = value
    sections = frozenset(SECTIONS)
    if args.sections:
        sections = frozenset(x.strip() for x in args.sections.split(",") if x.strip())
        unknown = sections - set(SECTIONS)
        if unknown:
            parser.error(f"--sections: unknown {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    service_env = {}
    for item in args.service_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--service-env wants NAME=VALUE, not {item!r}")
        service_env[name] = value
    settings = Settings(
        smoke=args.smoke,
        install_concurrency=16,
        workers=args.workers,
        connections=args.connections,
        wrk_threads=args.wrk_threads,
        install_wrk=not args.no_install,
        python_load=args.python_load,
        tls=not args.no_tls and not args.smoke,
        redis=args.redis,
        sections=sections,
        service_env=service_env,
        **preset,
    )
    if args.python_load and not args.smoke:
        parser.error("--python-load is for --smoke only: the full run needs wrk")
    # hit, stampede, rollover, economy and fan-out accounts: real simulator credentials
    needed = 3 + settings.economy_accounts + (settings.fanout if "fanout" in settings.sections else 0)
    settings.callback_installs = max(settings.callback_installs, needed)
    settings.accounts = max(settings.accounts, settings.callback_installs)
    for name in (
        "rounds",
        "duration",
        "workers",
        "connections",
        "wrk_threads",
        "stampede",
        "rollovers",
        "economy_seconds",
        "page_size",
        "inflight_rounds",
        "inflight_duration",
        "inflight_connections",
        "fanout",
        "overhead_rounds",
    ):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    settings.page_size = min(settings.page_size, 1000)  # tunables.MAX_PAGE_SIZE
    return settings


#: The 1-min load average before the run (other tenants), for the header.
LOAD_AT_START = float("nan")


class Bench(
    Output,
    Scale,
    Hits,
    Stampede,
    Rollover,
    Economy,
    SlowApi,
    ConnectionReuse,
    FanOut,
    Overhead,
    ManyInFlight,
    EventDelivery,
    Harness,
):
    """The benchmark: the harness (start-up, shared calls) with every section and the output, one object."""


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    global LOAD_AT_START
    settings = parse_args(argv)
    LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(AttributeError, ValueError):
        signal.signal(signal.SIGHUP, _interrupt)
    started = time.monotonic()
    fd_limit = raise_fd_limit()
    log(f"open files limit (RLIMIT_NOFILE, inherited by wrk, gunicorn and the simulator): {fd_limit}")
    with contextlib.ExitStack() as stack:
        bench = Bench(settings, stack)
        bench.load_at_start = LOAD_AT_START
        try:
            bench.start()
            bench.install_accounts()
            steps = {
                "paging": bench.paging,
                "hit": bench.hit_ratio,
                "stampede": bench.stampede,
                "fanout": bench.fanout,
                "rollover": bench.rollover,
                "economy": bench.economy,
                "proxy": bench.proxy_slow_api,
                "tls": bench.proxy_tls,
                "overhead": bench.overhead,
                "many": bench.many_in_flight,
                "events": bench.event_delivery,
            }
            for name in SECTIONS:
                if name in settings.sections:
                    steps[name]()
            bench.no_regression()
            lines = bench.header()
        except KeyboardInterrupt:
            log("interrupted: stopping everything")
            return 130
        except (
            SetupError,
            RuntimeError,
            OSError,
            requests.RequestException,
            redis.RedisError,
            subprocess.TimeoutExpired,
        ) as exc:
            bench.keep_workdir = True
            log(f"benchmark failed: {type(exc).__name__}: {exc}")
            return 2
        finally:
            log("stopping gunicorn, the simulator and redis-server")
    report = bench.report
    print("\n".join(lines))
    print()
    print(bench.table())
    print()
    for note in report.notes:
        print(f"- {note}")
    print(f"- wall time {time.monotonic() - started:.0f} s")
    missed = [row.measure for row in report.rows if row.verdict == "MISSED"]
    if missed:
        print(f"- targets missed: {len(missed)}: " + "; ".join(m.split(":")[0] for m in missed))
    if report.wrong:
        print("COUNTS WRONG: " + "; ".join(report.wrong))
        return 1
    print("counts: all correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
