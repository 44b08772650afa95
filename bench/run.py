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
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import queue
import re
import resource
import secrets
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests

from auth.fetcher import cache_lifetime
from core.config import Config
from tests.support.gunicorn import GunicornServer
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
from vault.accounts import AccountRepository, Credentials  # noqa: E402
from vault.keys import generate_key  # noqa: E402
from vault.seal import Sealer  # noqa: E402
from vault.layout import KeySpace

APP_ID = "@organization/appname"
APP_SCOPES = "asset.view account.view account.alert.view?"
ACCOUNT_SCOPES = ["asset.view", "account.view"]
SCOPE_SETS = (None, "asset.view")  # the manifest's required scopes (default) and a narrower set
KEY_PREFIX = "itv"
API_PATH = "/api/asset/v1/assets"  # the simulator's REST resource (answers after the API delay)
HOST = "127.0.0.1"
_ALNUM = string.ascii_letters + string.digits

# wrk reports through a Lua done() hook: one machine-readable line (microseconds).
_WRK_DONE = r"""
function done(summary, latency, requests)
  io.write(string.format("BENCH_RESULT %d %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""
# Several paths: each request takes the next one (per wrk thread), so every slot stays in use.
_WRK_ROTATE = r"""
local paths = {}
local counter = 0
function init(args)
  for i, path in ipairs(args) do paths[i] = path end
end
function request()
  counter = counter + 1
  return wrk.format(nil, paths[(counter % #paths) + 1])
end
""" + _WRK_DONE
_WRK_RESULT = re.compile(r"^BENCH_RESULT((?: \d+){10})$", re.M)


#: wrk's --timeout: a request unanswered after this many seconds counts as a timeout.
WRK_TIMEOUT = 10


class SetupError(Exception):
    """The benchmark could not be set up (exit status 2)."""


# Settings -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    smoke: bool
    accounts: int
    callback_installs: int
    install_concurrency: int
    rounds: int
    duration: int
    workers: int
    threads: int
    connections: int
    wrk_threads: int
    stampede: int
    stampede_delay: float
    rollovers: int
    rollover_expires_in: int
    rollover_delay: float
    margin: int
    economy_accounts: int
    economy_seconds: int
    economy_expires_in: int
    page_size: int
    install_wrk: bool
    python_load: bool
    budget: float
    # issue 13: many calls in flight
    inflight_rounds: int
    inflight_duration: int
    inflight_connections: int
    api_delay: float
    many_connections: int
    many_seconds: int
    fanout: int
    fanout_delay: float
    overhead_rounds: int
    overhead_duration: int
    tls: bool = True
    sections: frozenset[str] = frozenset()
    service_env: dict[str, str] = dataclasses.field(default_factory=dict)
    threads_given: bool = False


FULL = dict(accounts=100_000, callback_installs=1000, rounds=9, duration=2, stampede=200, stampede_delay=0.5,
            rollovers=2, rollover_expires_in=20, rollover_delay=0.3, margin=2, economy_accounts=10,
            economy_seconds=60, economy_expires_in=6, page_size=1000, budget=1800.0,
            # runs longer than wrk's timeout, so that a request stuck past it is seen as a timeout
            inflight_rounds=5, inflight_duration=12, inflight_connections=256, api_delay=0.5,
            many_connections=1000, many_seconds=20, fanout=500, fanout_delay=0.5,
            overhead_rounds=7, overhead_duration=2)
# The smoke run asserts counts only: a short proxied run without errors (few connections, so
# that any worker model passes), a tiny cold fan-out (N accounts -> N token calls, all 200).
SMOKE = dict(accounts=300, callback_installs=60, rounds=1, duration=1, stampede=200, stampede_delay=0.5,
             rollovers=1, rollover_expires_in=6, rollover_delay=0.05, margin=2, economy_accounts=2,
             economy_seconds=4, economy_expires_in=4, page_size=50, budget=240.0,
             inflight_rounds=1, inflight_duration=2, inflight_connections=8, api_delay=0.1,
             many_connections=0, many_seconds=0, fanout=20, fanout_delay=0.5,
             overhead_rounds=1, overhead_duration=1)
#: Sections, in the order they run; --sections picks some (the accounts are always installed).
SECTIONS = ("paging", "hit", "stampede", "fanout", "rollover", "economy", "proxy", "tls", "overhead", "many")
#: The variable the service is told to trust a CA bundle with (for Trackunit's URLs), see bench/README.md.
CA_BUNDLE_VARIABLE = "TRACKUNIT_CA_BUNDLE"


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds: tiny N, 1 round, short runs; counts asserted")
    parser.add_argument("--accounts", type=int, help="installed accounts N (full 100000, smoke 300)")
    parser.add_argument("--callback-installs", type=int, help="of N, installed through POST /appinstall (1000)")
    parser.add_argument("--rounds", type=int, help="A/B rounds of the throughput ratio (5)")
    parser.add_argument("--duration", type=int, help="seconds per side per round (3)")
    parser.add_argument("--workers", type=int, default=4, help="WEB_CONCURRENCY (4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="GUNICORN_THREADS (default: not set, so gunicorn.conf.py's own default applies)")
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
    parser.add_argument("--sections", help="comma-separated subset of: " + ",".join(SECTIONS) + " (default all)")
    parser.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra environment variable for every gunicorn the bench starts (repeatable)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--python-load", action="store_true",
                        help="use the Python load loop even if wrk is there (smoke only: the fallback, tested)")
    args = parser.parse_args(argv)
    preset = dict(SMOKE if args.smoke else FULL)
    for name in ("accounts", "callback_installs", "rounds", "duration", "stampede", "rollovers", "economy_seconds",
                 "page_size", "inflight_rounds", "inflight_duration", "inflight_connections", "api_delay",
                 "many_connections", "many_seconds", "fanout", "overhead_rounds"):
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
    settings = Settings(smoke=args.smoke, install_concurrency=16, workers=args.workers,
                        threads=args.threads if args.threads is not None else 0, threads_given=args.threads is not None,
                        connections=args.connections, wrk_threads=args.wrk_threads,
                        install_wrk=not args.no_install, python_load=args.python_load,
                        tls=not args.no_tls and not args.smoke, sections=sections, service_env=service_env, **preset)
    if args.python_load and not args.smoke:
        parser.error("--python-load is for --smoke only: the full run needs wrk")
    # hit, stampede, rollover, economy and fan-out accounts: real simulator credentials
    needed = 3 + settings.economy_accounts + (settings.fanout if "fanout" in settings.sections else 0)
    settings.callback_installs = max(settings.callback_installs, needed)
    settings.accounts = max(settings.accounts, settings.callback_installs)
    if settings.threads_given and settings.threads < 1:
        parser.error("--threads must be at least 1")
    for name in ("rounds", "duration", "workers", "connections", "wrk_threads", "stampede", "rollovers",
                 "economy_seconds", "page_size", "inflight_rounds", "inflight_duration", "inflight_connections",
                 "fanout", "overhead_rounds"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    settings.page_size = min(settings.page_size, 1000)  # tunables.MAX_PAGE_SIZE
    return settings


# Small helpers ----------------------------------------------------------------------------------

_T0 = time.monotonic()
LOAD_AT_START = float("nan")


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def us(seconds: float) -> str:
    """Sub-millisecond figures: two decimals of a millisecond."""
    return f"{seconds * 1000:.2f} ms"


def process_tree(master: int) -> list[int]:
    """The master's pid and those of its children (gunicorn's workers), from /proc."""
    pids = [master]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == master:
            pids.append(int(entry))
    return pids


def memory_of(pids: list[int]) -> tuple[int, int]:
    """(VmRSS summed, Pss summed) in bytes. RSS counts pages shared by the forked workers once per
    process (an upper bound); Pss shares them out (what the processes cost together)."""
    rss = pss = 0
    for pid in pids:
        for path, field in ((f"/proc/{pid}/status", "VmRSS:"), (f"/proc/{pid}/smaps_rollup", "Pss:")):
            with contextlib.suppress(OSError, ValueError, IndexError), open(path) as stream:
                for line in stream:
                    if line.startswith(field):
                        value = int(line.split()[1]) * 1024
                        if field == "VmRSS:":
                            rss += value
                        else:
                            pss += value
                        break
    return rss, pss


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (at most the hard limit); children
    (wrk, gunicorn, the simulator) inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Budget:
    """Every loop checks it: the whole run is bounded in time, whatever hangs."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise SetupError(f"time budget exhausted during {what}")


@dataclasses.dataclass
class Row:
    section: str
    measure: str
    value: str
    target: str = ""
    verdict: str = ""


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.wrong: list[str] = []  # counts that are wrong: exit status 1

    def row(self, *args, **kwargs) -> None:
        self.rows.append(Row(*args, **kwargs))

    def count(self, what: str, ok: bool) -> str:
        if not ok:
            self.wrong.append(what)
        return "ok" if ok else "WRONG"


# Load generators ------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoadResult:
    requests: int
    seconds: float
    socket_errors: int
    bad_status: int  # responses >= 400
    timeouts: int
    p50: float  # seconds
    p99: float
    max: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def clean(self) -> bool:
        return self.requests > 0 and self.bad_status == 0 and self.timeouts == 0 and self.socket_errors == 0


class Wrk:
    def __init__(self, binary: str, workdir: Path, headers: dict[str, str], threads: int) -> None:
        self.binary = binary
        self.headers = headers
        self.threads = threads
        self.single = workdir / "wrk-report.lua"
        self.rotate = workdir / "wrk-rotate.lua"
        self.single.write_text(_WRK_DONE)
        self.rotate.write_text(_WRK_ROTATE)
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        self.name = "wrk " + ((out.stdout + out.stderr).split()[1:2] or ["?"])[0]

    def run(self, base: str, paths: list[str], seconds: int, connections: int,
            headers: dict[str, str] | None = None) -> LoadResult:
        """`headers` replaces the default ones (the API key), e.g. for requests straight to the simulator."""
        threads = max(1, min(self.threads, connections))
        command = [self.binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout",
                   f"{WRK_TIMEOUT}s"]
        for name, value in (self.headers if headers is None else headers).items():
            command += ["-H", f"{name}: {value}"]
        if len(paths) == 1:
            command += ["-s", str(self.single), base + paths[0]]
        else:
            command += ["-s", str(self.rotate), base + paths[0], "--", *paths]
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
        match = _WRK_RESULT.search(out.stdout)
        if out.returncode != 0 or match is None:
            raise SetupError(f"wrk failed (exit {out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
        n, duration, connect, read, write, status, timeout, p50, p99, top = (int(v) for v in match.group(1).split())
        return LoadResult(n, duration / 1e6, connect + read + write, status, timeout, p50 / 1e6, p99 / 1e6, top / 1e6)


class PythonLoad:
    """The fallback when wrk is not available (smoke mode only): threads with keep-alive sessions."""

    def __init__(self, headers: dict[str, str], why: str) -> None:
        self.headers = headers
        self.name = f"Python threads with keep-alive sessions, at most 16 ({why})"

    def run(self, base: str, paths: list[str], seconds: int, connections: int,
            headers: dict[str, str] | None = None) -> LoadResult:
        headers = self.headers if headers is None else headers
        connections = min(connections, 16)
        stop_at = time.monotonic() + seconds
        latencies: list[list[float]] = [[] for _ in range(connections)]
        counts = collections.Counter()
        lock = threading.Lock()

        def worker(index: int) -> None:
            session = requests.Session()
            i = index
            try:
                while time.monotonic() < stop_at:
                    i += 1
                    started = time.perf_counter()
                    try:
                        response = session.get(base + paths[i % len(paths)], headers=headers, timeout=WRK_TIMEOUT)
                    except requests.Timeout:
                        with lock:
                            counts["timeouts"] += 1
                        continue
                    except requests.RequestException:
                        with lock:
                            counts["socket"] += 1
                        continue
                    latencies[index].append(time.perf_counter() - started)
                    if response.status_code >= 400:
                        with lock:
                            counts["status"] += 1
            finally:
                session.close()

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=connections) as pool:
            list(pool.map(worker, range(connections)))
        elapsed = time.monotonic() - started
        flat = [x for part in latencies for x in part] or [0.0]
        return LoadResult(sum(len(p) for p in latencies), elapsed, counts["socket"], counts["status"],
                          counts["timeouts"], percentile(flat, 50), percentile(flat, 99), max(flat))


def one_shot(base: str, paths: list[str], headers: dict[str, str], timeout: float) -> list[tuple[int, dict, float]]:
    """One request per path, all at once: every connection is opened first, then every request is
    written in one go from a single asyncio loop, so the client adds microseconds, not the tens of
    milliseconds 500 Python threads would (the GIL). (status, JSON body or {}, seconds) per path, in
    order; status 0 when the request failed or took longer than `timeout`."""
    import asyncio
    from urllib.parse import urlsplit

    target = urlsplit(base)
    host, port = target.hostname, target.port or 80
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> tuple[int, dict]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Connection: close\r\n\r\n".encode())
        status = int((await reader.readline()).split()[1])
        length, chunked = None, False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            body = b""
            while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                body += await reader.readexactly(size)
                await reader.readline()
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        return status, parsed if isinstance(parsed, dict) else {}

    async def run() -> list[tuple[int, dict, float]]:
        connections = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in paths),
                                           return_exceptions=True)
        gate = asyncio.Event()

        async def one(connection, path: str) -> tuple[int, dict, float]:
            if isinstance(connection, BaseException):
                return 0, {}, 0.0
            reader, writer = connection
            await gate.wait()
            started = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(exchange(reader, writer, path), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                status, body = 0, {}
            elapsed = time.perf_counter() - started
            writer.close()
            return status, body, elapsed

        tasks = [asyncio.ensure_future(one(c, p)) for c, p in zip(connections, paths)]
        await asyncio.sleep(0.05)  # every task waits at the gate
        gate.set()
        return list(await asyncio.gather(*tasks))

    return asyncio.run(run())


def find_wrk(settings: Settings) -> str | None:
    found = shutil.which("wrk")
    if found or not settings.install_wrk:
        return found
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    attempts = [["apt-get", "install", "-y", "-qq", "wrk"]]
    if not settings.smoke:  # a fresh machine may have no package lists yet
        attempts.append(["apt-get", "update", "-qq"])
        attempts.append(["apt-get", "install", "-y", "-qq", "wrk"])
    for command in attempts:
        log("wrk is not installed: " + " ".join(command))
        try:
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60 if settings.smoke else 180)
        except (subprocess.TimeoutExpired, OSError) as exc:
            log(f"  {type(exc).__name__}: {exc}")
            return None
        if shutil.which("wrk"):
            return shutil.which("wrk")
    return None


# The simulator (a subprocess) and its control API -------------------------------------------------


class Simulator:
    def __init__(self, stack: contextlib.ExitStack, workdir: Path, budget: Budget, *, tls: bool) -> None:
        self._log = open(workdir / "simulator.log", "wb")
        stack.callback(self._log.close)
        command = [sys.executable, "-m", "simulator", "serve", "--host", HOST, "--port", "0", "--quiet"]
        if tls:  # a second listener, HTTPS, on the same state (accounts, tokens, counters)
            command += ["--tls-port", "0", "--cert-dir", str(workdir / "simulator-tls")]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True)
        stack.callback(self.stop)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True).start()
        deadline = time.monotonic() + min(30, budget.left())
        self.url = self.tls_url = self.ca_bundle = None
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise SetupError("the simulator did not start within 30 s") from None
            for name, pattern in (("url", r"simulator on (http://\S+)"), ("tls_url", r"HTTPS: +(https://\S+)"),
                                  ("ca_bundle", r"CA bundle: (\S+)")):
                match = re.search(pattern, line)
                if match:
                    setattr(self, name, match.group(1))
            if self.url and (not tls or (self.tls_url and self.ca_bundle)):
                break
        self.http = requests.Session()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def _post(self, path: str, body: dict, session: requests.Session | None = None) -> dict:
        response = (session or self.http).post(self.url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def behaviour(self, **fields) -> dict:
        return self._post("/_sim/behaviour", fields)

    def token_requests(self, session: requests.Session | None = None) -> int:
        return int(self.stats(session)["token_requests"])

    def api_behaviour(self, **fields) -> dict:
        return self._post("/_sim/api-behaviour", fields)

    def stats(self, session: requests.Session | None = None) -> dict:
        response = (session or self.http).get(self.url + "/_sim/stats", timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self, **api_behaviour) -> None:
        """Counters (connections, peaks, requests), the API log and behaviour back to defaults, then
        `api_behaviour` applied. Accounts and tokens stay. Also ends delayed requests still pending."""
        self._post("/_sim/reset", {})
        if api_behaviour:
            self.api_behaviour(**api_behaviour)

    def quiesce(self, budget: Budget, timeout: float = 30.0) -> float:
        """Wait until no request is in flight at the simulator (a load generator's unanswered requests may
        still be queued in the service when it stops); returns the seconds waited, at most `timeout`."""
        started = time.monotonic()
        deadline = started + min(timeout, max(1.0, budget.left()))
        quiet = 0
        while time.monotonic() < deadline:
            stats = self.stats()
            quiet = quiet + 1 if stats["api_in_flight"] == 0 and stats["token_in_flight"] == 0 else 0
            if quiet >= 3:
                break
            time.sleep(0.1)
        return time.monotonic() - started


# The benchmark ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, settings: Settings, stack: contextlib.ExitStack) -> None:
        self.s = settings
        self.stack = stack
        self.report = Report()
        self.budget = Budget(settings.budget)
        self.workdir = Path(tempfile.mkdtemp(prefix="itv-bench-"))
        self.keep_workdir = False
        stack.callback(self._cleanup_workdir)
        self.api_key = secrets.token_urlsafe(24)
        self.headers = {"Authorization": f"Bearer {self.api_key}"}
        self.http = requests.Session()
        self.http.headers.update(self.headers)
        self.callback_ids: list[str] = []
        self.client_of: dict[str, str] = {}
        self.direct_ids: list[str] = []
        self.worker_class = "?"

    def _cleanup_workdir(self) -> None:
        if self.keep_workdir:
            log(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # Start-up ------------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.s
        wrk = None if s.python_load else find_wrk(s)
        if wrk is not None:
            self.load = Wrk(wrk, self.workdir, self.headers, s.wrk_threads)
        elif s.smoke:
            log("wrk is not available: the smoke run uses a Python load loop instead" if not s.python_load
                else "--python-load: the smoke run uses the Python load loop")
            self.load = PythonLoad(self.headers, "--python-load" if s.python_load else "wrk not available")
        else:
            raise SetupError("the full benchmark needs wrk: install it (Debian/Ubuntu: apt-get install -y wrk), "
                             "or run as root so that it is installed for you; --smoke works without it")
        log(f"load generator: {self.load.name}")

        self.redis_server = RedisServer()
        self.stack.callback(lambda: shutil.rmtree(self.redis_server.dir, ignore_errors=True))
        self.stack.callback(self.redis_server.stop)
        self.redis_server.start()
        self.redis = self.redis_server.client()
        self.stack.callback(self.redis.close)
        log(f"redis-server on port {self.redis_server.port}")

        self.sim = Simulator(self.stack, self.workdir, self.budget, tls=s.tls and "tls" in s.sections)
        log(f"simulator on {self.sim.url}" + (f" and {self.sim.tls_url} (CA {self.sim.ca_bundle})"
                                              if self.sim.tls_url else ""))

        self.env = {
            "REDIS_URL": self.redis_server.url,
            "VAULT_KEY": generate_key(),
            "API_KEYS": f"bench:{self.api_key}",
            "IRIS_APP_ID": APP_ID,
            "APP_SCOPES": APP_SCOPES,
            "TRACKUNIT_TOKEN_URL": f"{self.sim.url}/apptoken",
            "TRACKUNIT_JWKS_URL": f"{self.sim.url}/api/marketplace/jwks",
            "TRACKUNIT_API_URL": self.sim.url,
            "TOKEN_EXPIRY_MARGIN": str(s.margin),
            "KEY_PREFIX": KEY_PREFIX,
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "prometheus"),
            **s.service_env,
        }
        self.config = Config.from_env(self.env)
        self.gunicorn = self.start_gunicorn("gunicorn")
        self.base = self.gunicorn.url
        self.worker_class = self._worker_class(self.gunicorn)
        log(f"service under gunicorn (Procfile) on {self.base}: {s.workers} workers, "
            f"GUNICORN_THREADS={s.threads if s.threads_given else 'unset'}, worker class {self.worker_class}")

    def start_gunicorn(self, name: str, env: dict[str, str] | None = None, *,
                       workers: int | None | bool = True) -> GunicornServer:
        """gunicorn as the Procfile runs it, stopped with the bench. `workers`: True = --workers,
        None = WEB_CONCURRENCY unset (gunicorn.conf.py's default). GUNICORN_THREADS is set only when
        --threads was given, so gunicorn.conf.py's default worker model is what is measured."""
        s = self.s
        server = GunicornServer(env or self.env, workers=s.workers if workers is True else (workers or 1),
                                threads=s.threads or 1)
        if not s.threads_given:
            server.env.pop("GUNICORN_THREADS", None)
        if workers is None:
            server.env.pop("WEB_CONCURRENCY", None)
        server.log_path = self.workdir / f"{name}.log"
        self.stack.callback(self._stop_gunicorn, server)
        server.start()
        return server

    @staticmethod
    def _stop_gunicorn(server: GunicornServer) -> None:
        if getattr(server, "process", None) is not None or hasattr(server, "_log"):
            server.stop()

    @staticmethod
    def _worker_class(server: GunicornServer) -> str:
        """What gunicorn says it uses ("Using worker: gthread"), from its log."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            match = re.search(r"Using worker: (\S+)", server.log())
            if match:
                return match.group(1)
            time.sleep(0.1)
        return "?"

    def judged(self, met: bool) -> str:
        """The verdict of a timing or ratio target: none in smoke mode (too short and too small to judge)."""
        return "" if self.s.smoke else ("ok" if met else "MISSED")

    def token_path(self, account_id: str, scope: str | None = None) -> str:
        return f"/v1/accounts/{account_id}/token" + (f"?scope={scope}" if scope else "")

    def get_token(self, account_id: str) -> dict:
        response = self.http.get(self.base + self.token_path(account_id), timeout=30)
        if response.status_code != 200:
            raise SetupError(f"token request for {account_id}: {response.status_code} {response.text[:300]}")
        return response.json()

    def check_load(self, what: str, result: LoadResult) -> None:
        if not result.clean:
            self.report.wrong.append(
                f"{what}: {result.bad_status} responses >= 400, {result.timeouts} timeouts, "
                f"{result.socket_errors} socket errors of {result.requests}")

    # 6. Scale: installs, memory, paging (first, so every later figure runs with N accounts in Redis) ---------

    def install_accounts(self) -> None:
        s, r = self.s, self.report
        before = self._settled_used_memory()
        log(f"preparing {s.callback_installs} accounts at the simulator (credentials, signed identity)")
        prepared = self._prepare_callbacks(s.callback_installs)
        log(f"installing {len(prepared)} accounts through POST /appinstall, {s.install_concurrency} concurrent")
        local = threading.local()

        def post(item: tuple[str, dict, str]) -> tuple[int, str, float]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            account_id, body, identity = item
            started = time.perf_counter()
            response = local.session.post(self.base + "/appinstall", json=body,
                                          headers={"Trackunit-Identity": identity}, timeout=30)
            elapsed = time.perf_counter() - started
            status = response.json().get("status") if response.status_code == 200 else response.text[:200]
            return response.status_code, status, elapsed

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=s.install_concurrency) as pool:
            results = list(pool.map(post, prepared))
        elapsed = time.monotonic() - started
        stored = sum(1 for code, status, _ in results if code == 200 and status == "stored")
        self.callback_ids = [item[0] for item in prepared]
        self.client_of = {item[0]: item[1]["clientId"] for item in prepared}
        latencies = [x for _, _, x in results]
        r.row("6", f"install callback: POST /appinstall, {s.install_concurrency} concurrent, {len(prepared)} accounts",
              f"{len(prepared) / elapsed:.0f} req/s (p50 {ms(percentile(latencies, 50))}, "
              f"p99 {ms(percentile(latencies, 99))})")
        r.row("6", "install callback: answered 200 stored", f"{stored} of {len(prepared)}", "all",
              r.count("callback installs", stored == len(prepared)))

        direct = s.accounts - len(prepared)
        if direct > 0:
            log(f"installing {direct} more accounts directly in Redis (AccountRepository's install script, pipelined)")
            started = time.monotonic()
            self._install_direct(direct)
            elapsed = time.monotonic() - started
            r.notes.append(f"{direct:,} of the {s.accounts:,} accounts were written directly to Redis through "
                           f"vault.accounts.AccountRepository.install on a pipeline (same script, same sealed "
                           f"format), {direct / elapsed:,.0f} accounts/s; the rest through the real callback.")
        after = self._settled_used_memory()
        total = self.redis.zcard(self.config.key_prefix + ":accounts")
        r.row("6", "accounts installed (index ZCARD)", f"{total:,}", f"{s.accounts:,}",
              r.count("installed accounts", total == s.accounts))
        keys = KeySpace(self.config.key_prefix)
        sample = (self.callback_ids[:3] + self.direct_ids[:3])[:6]
        usages = [self.redis.memory_usage(keys.key_for(a), samples=0) or 0 for a in sample]
        index_bytes = self.redis.memory_usage(keys.index, samples=0) or 0
        per_account = (after - before) / s.accounts
        hash_bytes = statistics.median(usages)
        key = keys.key_for(sample[0])
        encoding = self.redis.object("encoding", key).decode()
        longest = max(len(v) for v in self.redis.hgetall(key).values())
        r.row("6", f"Redis memory per account: used_memory delta / N (N = {s.accounts:,})", f"{per_account:.0f} B",
              "", "")
        r.row("6", f"MEMORY USAGE of one account hash (credential record; median of {len(usages)})",
              f"{hash_bytes:.0f} B, {encoding} (+ {index_bytes / s.accounts:.0f} B in the id index)", "<= 512 B",
              "ok" if hash_bytes <= 512 else "MISSED")
        limit = int(self.redis.config_get("hash-max-listpack-value").get("hash-max-listpack-value", 64))
        if encoding == "hashtable" and longest > limit:
            r.notes.append(f"the account hash is {encoding}-encoded because its longest value (the sealed `cred`, "
                           f"{longest} B) exceeds hash-max-listpack-value ({limit}); "
                           f"{self._listpack_what_if(key, longest)}")

    def _listpack_what_if(self, key: str, longest: int) -> str:
        """The same record restored as a listpack (in this private Redis only, setting put back)."""
        name = "hash-max-listpack-value"
        old = self.redis.config_get(name)[name]
        scratch = key + ":bench-what-if"
        try:
            self.redis.config_set(name, max(128, 1 << (longest - 1).bit_length()))
            self.redis.restore(scratch, 0, self.redis.dump(key), replace=True)
            size = self.redis.memory_usage(scratch, samples=0)
            encoding = self.redis.object("encoding", scratch).decode()
            value = self.redis.config_get(name)[name]
        finally:
            self.redis.delete(scratch)
            self.redis.config_set(name, old)
        return f"with {name} {value} the same record takes {size} B ({encoding})."

    def _settled_used_memory(self) -> int:
        """used_memory once it stops moving (pub/sub buffers drain), at most 5 s."""
        last = int(self.redis.info("memory")["used_memory"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = int(self.redis.info("memory")["used_memory"])
            if abs(now - last) <= 4096:
                return now
            last = now
        return last

    def _prepare_callbacks(self, count: int) -> list[tuple[str, dict, str]]:
        local = threading.local()

        def prepare(_: int) -> tuple[str, dict, str]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            account_id = str(uuid.uuid4())
            creds = self.sim._post("/_sim/accounts", {"accountId": account_id, "scopes": ACCOUNT_SCOPES,
                                                      "irisAppId": APP_ID}, local.session)
            identity = self.sim._post("/_sim/identity", {"claims": {"irisAppId": APP_ID, "accountId": account_id},
                                                         "expires_in": 900}, local.session)["token"]
            body = {"type": "INSTALLED", "irisAppId": APP_ID, "accountId": account_id,
                    "clientId": creds["clientId"], "clientSecret": creds["clientSecret"]}
            return account_id, body, identity

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(prepare, range(count)))

    def _install_direct(self, count: int) -> None:
        sealer, keys = Sealer(self.config.keyring), KeySpace(self.config.key_prefix)
        batch = 1000
        for start in range(0, count, batch):
            self.budget.check("direct installs")
            pipe = self.redis.pipeline(transaction=False)
            repository = AccountRepository(pipe, sealer, keys)
            for _ in range(min(batch, count - start)):
                account_id = str(uuid.uuid4())
                creds = Credentials(client_id="0oa" + "".join(secrets.choice(_ALNUM) for _ in range(17)),
                                    client_secret=secrets.token_urlsafe(32))
                repository.install(account_id, APP_ID, creds)
                self.direct_ids.append(account_id)
            pipe.execute()

    def paging(self) -> None:
        s, r = self.s, self.report
        limit = s.page_size
        log(f"paging through GET /v1/accounts?limit={limit}")
        self.http.get(self.base + "/v1/accounts", params={"limit": 1}, timeout=30).raise_for_status()  # warm
        cursor, ids, times, sizes, cursors = None, [], [], [], []
        for _ in range(s.accounts // limit + 2):
            self.budget.check("paging")
            cursors.append(cursor)
            elapsed, page = self._page(limit, cursor)
            times.append(elapsed)
            ids.extend(a["account_id"] for a in page["accounts"])
            sizes.append(len(page["accounts"]))
            cursor = page["next_cursor"]
            if not cursor:
                break
        complete = len(ids) == s.accounts and len(set(ids)) == len(ids) and ids == sorted(ids)
        # Start, middle and end timed again, interleaved (A B C A B C ...), so noise hits all three alike.
        full = [i for i, n in enumerate(sizes) if n == limit] or list(range(len(sizes)))
        chosen = [full[0], full[len(full) // 2], full[-1]]
        rounds = 3 if s.smoke else 7
        samples: list[list[float]] = [[], [], []]
        for _ in range(rounds):
            self.budget.check("paging")
            for slot, index in enumerate(chosen):
                samples[slot].append(self._page(limit, cursors[index])[0])
        start_t, mid_t, end_t = (statistics.median(x) for x in samples)
        flat = max(mid_t, end_t) <= 1.5 * start_t
        r.row("6", f"paging GET /v1/accounts?limit={limit}: time per page at the start / middle / end of the id "
                   f"range (pages {chosen[0] + 1}, {chosen[1] + 1}, {chosen[2] + 1}; median of {rounds} interleaved)",
              f"{ms(start_t)} / {ms(mid_t)} / {ms(end_t)}", "flat (<= 1.5 x start)", self.judged(flat))
        r.row("6", f"paging: every account once, in id order ({len(times)} pages, {sum(times):.1f} s in all)",
              f"{len(ids):,}", f"{s.accounts:,}", r.count("paging", complete))

    def _page(self, limit: int, cursor: str | None) -> tuple[float, dict]:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        started = time.perf_counter()
        response = self.http.get(self.base + "/v1/accounts", params=params, timeout=60)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SetupError(f"GET /v1/accounts: {response.status_code} {response.text[:300]}")
        return elapsed, response.json()

    # 1 + 2. Hit throughput ratio and latency -------------------------------------------------------

    def hit_ratio(self) -> None:
        s, r = self.s, self.report
        account = self.callback_ids[0]
        self.get_token(account)  # cached from here on
        hit = self.token_path(account)
        log(f"throughput: token hit vs /healthz, {s.rounds} rounds x {s.duration} s per side, {s.connections} conns")
        self.load.run(self.base, [hit], max(1, s.duration // 2 + 1), s.connections)  # warm-up, not counted
        if not s.smoke:
            self.load.run(self.base, ["/healthz"], 1, s.connections)
        hits, healths = [], []
        for round_no in range(s.rounds):
            self.budget.check("throughput rounds")
            # A B, then B A: a drift in the machine's load (other tenants) favours neither side.
            if round_no % 2 == 0:
                a = self.load.run(self.base, [hit], s.duration, s.connections)
                b = self.load.run(self.base, ["/healthz"], s.duration, s.connections)
            else:
                b = self.load.run(self.base, ["/healthz"], s.duration, s.connections)
                a = self.load.run(self.base, [hit], s.duration, s.connections)
            self.check_load(f"round {round_no + 1} token hit", a)
            self.check_load(f"round {round_no + 1} /healthz", b)
            hits.append(a)
            healths.append(b)
            log(f"  round {round_no + 1}: hit {a.rps:.0f} req/s, /healthz {b.rps:.0f} req/s, "
                f"ratio {a.rps / b.rps:.3f}")
        ratios = [a.rps / b.rps for a, b in zip(hits, healths)]
        ratio = statistics.median(ratios)
        r.row("1", f"token hit req/s / /healthz req/s (median of {s.rounds} A/B rounds of {s.duration} s, "
                   f"{s.connections} connections)",
              f"{ratio:.2f} (hit {statistics.median(x.rps for x in hits):.0f}, /healthz "
              f"{statistics.median(x.rps for x in healths):.0f} req/s)", ">= 0.85",
              self.judged(ratio >= 0.85))
        r.notes.append("per-round ratios (hit/healthz): " + ", ".join(f"{x:.3f}" for x in ratios))
        for name, results in (("token hit", hits), ("/healthz", healths)):
            r.row("2", f"latency p50 / p99: {name} (same runs; medians)",
                  f"{ms(statistics.median(x.p50 for x in results))} / {ms(statistics.median(x.p99 for x in results))}")

    # 3. Stampede -------------------------------------------------------------------------------------

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
        r.row("3", f"stampede: Trackunit token calls ({s.stampede} concurrent, cold account, {s.workers} workers)",
              f"{calls}", "exactly 1", r.count("stampede token calls", calls == 1))
        r.row("3", "stampede: answered 200 with one and the same token (cold, then again warm)",
              f"{ok} of {2 * s.stampede}, {len(tokens)} token(s), {calls_after_warm} call(s) in all",
              "all, 1 token, 1 call",
              r.count("stampede answers", ok == 2 * s.stampede and len(tokens) == 1 and calls_after_warm == 1))
        r.row("3", f"stampede: p99 latency / simulator delay ({s.stampede_delay} s)",
              f"{p99 / s.stampede_delay:.2f} (p50 {ms(percentile(latencies, 50))}, p99 {ms(p99)}, "
              f"max {ms(max(latencies))})")
        warm_lat = [x for _, _, x in warm]
        r.row("3", f"  same {s.stampede} requests again, account now warm (the client's and machine's floor)",
              f"p50 {ms(percentile(warm_lat, 50))}, p99 {ms(percentile(warm_lat, 99))}; cold p99 - warm p99 = "
              f"{ms(p99 - percentile(warm_lat, 99))}")

    # 4. Rollover ---------------------------------------------------------------------------------------

    def rollover(self) -> None:
        s, r = self.s, self.report
        account = self.callback_ids[2]
        path = [self.token_path(account)]
        ttl, window = cache_lifetime(s.rollover_expires_in, s.margin)
        delay = s.rollover_delay
        lead = 1.0 if not s.smoke else 0.8
        self.sim.behaviour(expires_in=s.rollover_expires_in, delay=delay)
        log(f"rollover: expires_in {s.rollover_expires_in} s -> cached {ttl} s, refresh-ahead window {window:.1f} s, "
            f"simulator delay {delay} s, {s.rollovers} rollover(s) under load")
        before = self.sim.token_requests()
        self.get_token(account)
        cached_at = time.time()  # the service computed cached_until a moment before this
        log_offset = self._log_size()
        waits_before = self._single_flight_waits()  # the stampede made the metric appear, if it is wired up
        refresh_at = cached_at + ttl - window
        steady: list[tuple[float, float, LoadResult]] = []  # (start, end, result)
        rolling: list[tuple[float, float, LoadResult]] = []
        starts: list[float] = []
        for k in range(s.rollovers):
            self.budget.check("rollover")
            gap = refresh_at - lead - time.time()
            if gap >= 1:
                began = time.time()
                result = self.load.run(self.base, path, int(gap), s.connections)
                self.check_load("rollover steady load", result)
                steady.append((began, time.time(), result))
            time.sleep(max(0.0, refresh_at - lead - time.time()))
            seen: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(target=self._watch_calls, args=(stop, seen), daemon=True)
            poller.start()
            seconds = math.ceil(lead + window + delay + 1.0)
            began = time.time()
            try:
                result = self.load.run(self.base, path, seconds, s.connections)
            finally:
                stop.set()
                poller.join(timeout=5)
            self.check_load("rollover load", result)
            rolling.append((began, time.time(), result))
            if seen:
                starts.append(seen[0] - refresh_at)
                refresh_at = seen[0] + delay + ttl - window  # the next refresh point of the new token
            else:
                refresh_at += ttl - window
            log(f"  rollover {k + 1}: {len(seen)} token call(s), slowest request {ms(result.max)}, "
                f"p99 {ms(result.p99)}")
        calls = self.sim.token_requests() - before - 1
        waits_after = self._single_flight_waits()
        if not steady:  # too short to have a steady stretch: measure one now, same account, same load
            began = time.time()
            steady.append((began, time.time() + 1, self.load.run(self.base, path, 1, s.connections)))
            steady[-1] = (began, time.time(), steady[-1][2])
        self.sim.behaviour(expires_in=None, delay=None)
        steady_p99 = statistics.median(x.p99 for _, _, x in steady)
        slowest = max(x.max for _, _, x in rolling)
        r.row("4", f"rollover: Trackunit token calls during {s.rollovers} rollover(s) under steady load",
              f"{calls}", f"1 per rollover ({s.rollovers})", r.count("rollover token calls", calls == s.rollovers))
        # Client-side latency includes the machine's noise (queueing, other tenants); the service's own request
        # log times each request from its first to its last line of code, where a wait for Trackunit would show.
        server = self._server_times(log_offset, account)
        in_steady = [d for t, d in server if any(a <= t <= b for a, b, _ in steady)]
        in_rolling = [d for t, d in server if any(a <= t <= b for a, b, _ in rolling)]
        judged = self.judged
        r.row("4", f"rollover, client side ({self.load.name.split()[0]}): slowest request around the refresh point "
                   f"vs steady p99",
              f"{ms(slowest)} vs {ms(steady_p99)} (steady max {ms(max(x.max for _, _, x in steady))})",
              f"< {ms(delay)} (simulator delay)", judged(slowest < delay) if not (in_steady and in_rolling) else "")
        if in_steady and in_rolling:
            slow = sum(1 for d in in_rolling if d >= delay / 2)
            slow_steady = sum(1 for d in in_steady if d >= delay / 2)
            r.row("4", "rollover, server side (service request log): slowest vs steady p99 / max; requests >= delay/2",
                  f"{ms(max(in_rolling))} vs {ms(percentile(in_steady, 99))} / {ms(max(in_steady))}; "
                  f"{slow} of {len(in_rolling):,} (steady: {slow_steady} of {len(in_steady):,})",
                  f"< {ms(delay)}: nobody waits for Trackunit", judged(max(in_rolling) < delay))
        else:
            r.notes.append("rollover: the service's request log could not be read; only client-side latency shown.")
        if waits_before is not None and waits_after is not None:
            waits = waits_after - waits_before
            r.row("4", "rollover: requests that waited for a fetch (service metric itv_single_flight_waits_total)",
                  f"{waits}", "0", judged(waits == 0))
        if starts:
            r.notes.append("rollover: the background refresh reached Trackunit "
                           + ", ".join(f"{x:+.2f} s" for x in starts) + " after the refresh point "
                           f"(cache_lifetime({s.rollover_expires_in}, {s.margin}) = ({ttl} s, window {window:.2f} s)).")

    def _single_flight_waits(self) -> int | None:
        """The service's count of requests that waited on another's fetch (all outcomes); None if not exposed."""
        try:
            text = self.http.get(self.base + "/metrics", timeout=10).text
        except requests.RequestException:
            return None
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("itv_single_flight_waits_total")]
        return int(sum(values)) if values else None

    def _log_size(self) -> int:
        try:
            return self.gunicorn.log_path.stat().st_size
        except OSError:
            return 0

    def _server_times(self, offset: int, account_id: str) -> list[tuple[float, float]]:
        """(epoch time of the line, seconds) of the account's requests in the service's JSON request log."""
        found: list[tuple[float, float]] = []
        needle = account_id.encode()
        with contextlib.suppress(OSError), open(self.gunicorn.log_path, "rb") as stream:
            stream.seek(offset)
            for raw in stream:
                # One line per request: itv.request, or itv.audit when the request issued a token.
                if needle not in raw or b'"duration_ms"' not in raw:
                    continue
                try:
                    line = json.loads(raw)
                    if line.get("logger") in ("itv.request", "itv.audit") and line.get("account_id") == account_id:
                        found.append((dt.datetime.fromisoformat(line["time"]).timestamp(),
                                      float(line["duration_ms"]) / 1000))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
        return found

    def _watch_calls(self, stop: threading.Event, seen: list[float]) -> None:
        with requests.Session() as session:
            last = self.sim.token_requests(session)
            while not stop.is_set():
                now = self.sim.token_requests(session)
                if now > last:
                    seen.extend([time.time()] * (now - last))
                    last = now
                stop.wait(0.02)

    # 5. Upstream economy -------------------------------------------------------------------------

    def economy(self) -> None:
        s, r = self.s, self.report
        accounts = self.callback_ids[3:3 + s.economy_accounts]
        paths = [self.token_path(a, scope) for a in accounts for scope in SCOPE_SETS]
        ttl, window = cache_lifetime(s.economy_expires_in, s.margin)
        self.sim.behaviour(expires_in=s.economy_expires_in, delay=None)
        log(f"upstream economy: {len(accounts)} accounts x {len(SCOPE_SETS)} scope sets, expires_in "
            f"{s.economy_expires_in} s (cached {ttl} s), {s.economy_seconds} s of load")
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
        r.row("5", "upstream economy: Trackunit calls / (cache lifetimes x accounts x scope sets), slots warm",
              f"{ratio:.3f} ({calls} calls / ({lifetimes:.1f} x {len(accounts)} x {len(SCOPE_SETS)}))", "<= 1.05",
              self.judged(ratio <= 1.05))
        r.row("5", "  where lifetime = auth.tokens.cache_lifetime(expires_in, TOKEN_EXPIRY_MARGIN)[0]",
              f"cache_lifetime({s.economy_expires_in}, {s.margin})[0] = {ttl} s; run {elapsed:.1f} s")
        r.row("5", "  refresh-ahead alone: ttl / (ttl - window), here and at Trackunit's 3600 s (margin 300)",
              f"{floor:.3f} here ({ratio / floor:.3f} x that measured); "
              f"{prod_ttl / (prod_ttl - prod_window):.3f} at 3600 s")

    # Issue 13: many calls in flight ----------------------------------------------------------------

    def proxy_path(self, account_id: str) -> str:
        return f"/v1/accounts/{account_id}/proxy{API_PATH}"

    def _direct_headers(self, account_id: str) -> dict[str, str]:
        """What the service sends the simulator for the account: its cached Trackunit token."""
        return {"Authorization": f"Bearer {self.get_token(account_id)['access_token']}"}

    def _errors(self, results: list[LoadResult]) -> tuple[int, str]:
        bad = sum(x.bad_status for x in results)
        socket_errors = sum(x.socket_errors for x in results)
        timeouts = sum(x.timeouts for x in results)
        total = sum(x.requests for x in results)
        return bad + socket_errors + timeouts, (f"{bad} non-2xx, {socket_errors} socket errors, {timeouts} timeouts "
                                               f"of {total:,}")

    def _reuse_run(self, base: str, path: str, seconds: int, connections: int) -> tuple[LoadResult, dict]:
        """One proxied load run with the simulator's counters reset just before it and read once every
        request has left the simulator (the service may still be working through a queue when wrk stops)."""
        self.sim.reset(delay=self.s.api_delay)
        result = self.load.run(base, [path], seconds, connections)
        self.sim.quiesce(self.budget)
        return result, self.sim.stats()

    def _reuse_row(self, section: str, label: str, runs: list[tuple[LoadResult, dict]], tls: bool) -> None:
        key = "tls_connections_accepted" if tls else "connections_accepted"
        new = sum(stats[key] for _, stats in runs)
        handshakes = sum(stats["tls_handshakes"] for _, stats in runs)
        peak = max(stats["api_in_flight_peak"] for _, stats in runs)
        open_peak = max(stats["connections_open_peak"] for _, stats in runs)
        calls = sum(stats["api_requests"] for _, stats in runs)
        limit = peak * 1.1
        worst = max(new, handshakes) if tls else new
        value = (f"{new:,} new connections" + (f", {handshakes:,} TLS handshakes" if tls else "")
                 + f" for {calls:,} calls; peak in flight {peak} (simulator's open connections, all clients: "
                   f"peak {open_peak})")
        self.report.row(section, label, value, f"<= {limit:.0f} (peak in flight + 10%)",
                        self.judged(peak > 0 and worst <= limit))
        first = runs[0][1]
        self.report.notes.append(
            f"{label.split(':')[0]}: first run (the service's pools cold) {first[key]} new connections for a peak of "
            f"{first['api_in_flight_peak']} in flight; the {len(runs) - 1} later run(s) "
            f"{sum(stats[key] for _, stats in runs[1:])} new in all.")

    def proxy_slow_api(self) -> None:
        """Targets 1 and 3: proxied vs direct under a slow API, interleaved; the connections that took."""
        s, r = self.s, self.report
        account = self.callback_ids[0]
        proxied, headers = self.proxy_path(account), self._direct_headers(account)
        c, d, delay = s.inflight_connections, s.inflight_duration, s.api_delay
        log(f"proxy under a slow API: {c} connections, API delay {delay} s, {s.inflight_rounds} rounds x {d} s "
            f"per side, proxied vs straight to the simulator")
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
        through, direct = [], []
        for round_no in range(s.inflight_rounds):
            self.budget.check("proxy rounds")
            if round_no % 2 == 0:
                a, b = proxied_run(d), direct_run(d)
            else:
                b, a = direct_run(d), proxied_run(d)
            through.append(a)
            direct.append(b)
            log(f"  round {round_no + 1}: proxied {a.rps:.0f} req/s (p50 {ms(a.p50)}, {self._errors([a])[1]}), "
                f"direct {b.rps:.0f} req/s (p50 {ms(b.p50)})")
        self.sim.reset()
        ratios = [a.rps / b.rps if b.rps else 0.0 for a, b in zip(through, direct)]
        ratio = statistics.median(ratios)
        p50, p50_direct = statistics.median(x.p50 for x in through), statistics.median(x.p50 for x in direct)
        p50_limit = 1.1 * p50_direct + 0.020
        errors, detail = self._errors(through)
        direct_errors, direct_detail = self._errors(direct)
        where = f"{c} connections, API delay {ms(delay)}, median of {s.inflight_rounds} A/B rounds of {d} s"
        r.row("13.1", f"proxy under a slow API: proxied req/s / direct req/s ({where})",
              f"{ratio:.2f} (proxied {statistics.median(x.rps for x in through):.0f}, direct "
              f"{statistics.median(x.rps for x in direct):.0f} req/s)", ">= 0.9", self.judged(ratio >= 0.9))
        r.row("13.1", "proxy under a slow API: p50 latency, proxied vs direct (same runs; medians)",
              f"{ms(p50)} vs {ms(p50_direct)} (p99 {ms(statistics.median(x.p99 for x in through))} vs "
              f"{ms(statistics.median(x.p99 for x in direct))})",
              f"<= 1.1 x direct + 20 ms = {ms(p50_limit)}", self.judged(p50 <= p50_limit))
        r.row("13.1", f"proxy under a slow API: errors, proxied (wrk: non-2xx, socket errors, timeouts > "
                      f"{WRK_TIMEOUT} s)", f"{errors} ({detail}); direct: {direct_errors} ({direct_detail})", "0",
              self.judged(errors == 0))
        r.notes.append("proxy under a slow API, per-round ratios (proxied/direct): "
                       + ", ".join(f"{x:.3f}" for x in ratios))
        if direct_errors:
            r.notes.append("proxy under a slow API: the direct side had errors, so the simulator (or the machine) "
                           "could not keep up: the ratio is not a fair measure of the service in this run.")
        if s.smoke:  # counts only: a short proxied run through any worker model answers every request
            for i, (a, b) in enumerate(zip(through, direct)):
                self.check_load(f"proxied run {i + 1}", a)
                self.check_load(f"direct run {i + 1}", b)
        self._reuse_row("13.3", f"connection reuse: connections the simulator accepted over the proxied runs of "
                                f"13.1 ({len(reuse)} runs, warm-up included)", reuse, tls=False)

    def proxy_tls(self) -> None:
        """Target 3 over HTTPS: a second gunicorn whose Trackunit URLs are the simulator's HTTPS listener."""
        s, r = self.s, self.report
        label = (f"connection reuse over HTTPS (simulator's test CA given as {CA_BUNDLE_VARIABLE}): TLS "
                 f"connections and handshakes over proxied runs like 13.1's")
        if not self.sim.tls_url:
            r.row("13.3", label, "not measured (" + ("smoke run" if s.smoke else "--no-tls") + ")")
            return
        env = {**self.env, "TRACKUNIT_API_URL": self.sim.tls_url,
               "TRACKUNIT_TOKEN_URL": f"{self.sim.tls_url}/apptoken",
               "TRACKUNIT_JWKS_URL": f"{self.sim.tls_url}/api/marketplace/jwks",
               CA_BUNDLE_VARIABLE: self.sim.ca_bundle}
        account = self.callback_ids[0]
        self.get_token(account)  # cached in Redis, which both services share
        log(f"connection reuse over HTTPS: a second gunicorn with TRACKUNIT_API_URL={self.sim.tls_url}, "
            f"{CA_BUNDLE_VARIABLE}={self.sim.ca_bundle}")
        server = self.start_gunicorn("gunicorn-tls", env)
        try:
            self.sim.reset()
            probe = self.http.get(server.url + self.proxy_path(account), timeout=30)
            if probe.status_code != 200:
                failures = self.sim.stats()["tls_handshake_failures"]
                r.row("13.3", label, f"not measured: with {CA_BUNDLE_VARIABLE} set the proxy answered "
                                     f"{probe.status_code} {probe.headers.get('Token-Vault-Error', '')} "
                                     f"({failures} failed TLS handshake(s) at the simulator): the service does not "
                                     f"trust the bundle (see bench/README.md)")
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

    def many_in_flight(self) -> None:
        """Target 2: many connections through the proxy at the default WEB_CONCURRENCY; memory from /proc."""
        s, r = self.s, self.report
        n = s.many_connections
        if n <= 0:
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2 * n + 256:
            r.notes.append(f"in flight: RLIMIT_NOFILE is {soft}, too low for {n} connections (wrk, the service "
                           f"and the simulator each hold one descriptor per connection); raise the hard limit.")
        account = self.callback_ids[0]
        self.get_token(account)
        log(f"{n} connections in flight through the proxy, API delay {s.api_delay} s, {s.many_seconds} s, "
            f"gunicorn with WEB_CONCURRENCY unset (its default)")
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
            r.row("13.2", f"{n:,} connections through the proxy, API delay {ms(s.api_delay)}, {s.many_seconds} s, "
                          f"default WEB_CONCURRENCY ({workers} {worker_class} workers)",
                  f"{result.requests:,} answered, {result.rps:.0f} req/s, p50 {ms(result.p50)}, p99 {ms(result.p99)}; "
                  f"{detail}; at the simulator: peak in flight {stats['api_in_flight_peak']}, "
                  f"{stats['connections_accepted']:,} new connections",
                  f"0 errors, 0 timeouts (> {WRK_TIMEOUT} s)", self.judged(errors == 0 and result.requests > 0))
            r.row("13.2", "  the same load straight to the simulator (one Python process), just before",
                  f"{reference.requests:,} answered, {reference.rps:.0f} req/s, p50 {ms(reference.p50)}, "
                  f"p99 {ms(reference.p99)}; {self._errors([reference])[1]}")
            if not reference.clean:
                r.notes.append(f"{n:,} connections: the simulator alone did not answer this load cleanly "
                               f"({self._errors([reference])[1]}), so some of the proxied run's timeouts may be "
                               f"the simulator's, not the service's.")
            mib = 2 ** 20
            r.row("13.2", f"memory of all gunicorn processes (master + {workers} workers, /proc VmRSS summed; "
                          f"Pss beside it), peak during that run",
                  f"RSS {peak[0] / mib:.0f} MiB (idle {idle_rss / mib:.0f}); PSS {peak[1] / mib:.0f} MiB "
                  f"(idle {idle_pss / mib:.0f})", "<= 512 MiB (Heroku basic dyno)",
                  self.judged(peak[0] <= 512 * mib))
        finally:
            self.sim.reset()
            self._stop_gunicorn(server)

    def fanout(self) -> None:
        """Target 4: many cold accounts at once, one first request each."""
        s, r = self.s, self.report
        first = 3 + s.economy_accounts
        accounts = self.callback_ids[first:first + s.fanout]
        n, delay = len(accounts), s.fanout_delay
        self.sim.reset()
        self.sim.behaviour(delay=delay)
        log(f"cold fan-out: {n} accounts, none cached, {n} concurrent first requests, token endpoint delay {delay} s")
        paths = [self.token_path(a) for a in accounts]
        cold = [(code, body.get("access_token", ""), x)
                for code, body, x in one_shot(self.base, paths, self.headers, timeout=60)]
        after = self.sim.stats()
        warm = [(code, body.get("access_token", ""), x)
                for code, body, x in one_shot(self.base, paths, self.headers, timeout=60)]
        after_warm = self.sim.stats()
        self.sim.reset()
        calls, by_client = after["token_requests"], after["token_requests_by_client"]
        one_each = all(by_client.get(self.client_of[a], 0) == 1 for a in accounts)
        ok = sum(1 for code, _, _ in cold if code == 200)
        tokens = {t for _, t, _ in cold if t}
        warm_ok = sum(1 for code, _, _ in warm if code == 200)
        latencies = [x for _, _, x in cold]
        p99 = percentile(latencies, 99)
        r.row("13.4", f"cold fan-out: {n} concurrent first requests, one per account, none cached (token delay "
                      f"{ms(delay)}): answered 200", f"{ok} of {n} ({len(tokens)} distinct tokens); warm repeat "
                                                   f"{warm_ok} of {n}",
              f"all ({n})", r.count("fan-out answers", ok == n and len(tokens) == n and warm_ok == n))
        r.row("13.4", "cold fan-out: Trackunit token calls", f"{calls} ("
              + ("one per account" if one_each else "NOT one per account") + f"); {after_warm['token_requests']} "
              f"after the warm repeat", f"exactly {n}",
              r.count("fan-out token calls", calls == n and one_each and after_warm["token_requests"] == n))
        r.row("13.4", f"cold fan-out: p99 latency / token delay ({ms(delay)})",
              f"{p99 / delay:.2f} (p50 {ms(percentile(latencies, 50))}, p99 {ms(p99)}, max {ms(max(latencies))}); "
              f"token calls in flight at once: peak {after['token_in_flight_peak']}", "<= 3",
              self.judged(p99 <= 3 * delay))
        warm_latencies = [x for _, _, x in warm]
        r.row("13.4", f"  same {n} requests again, all cached (what {n} at once cost without Trackunit)",
              f"p50 {ms(percentile(warm_latencies, 50))}, p99 {ms(percentile(warm_latencies, 99))}")

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
        through, direct = [], []
        for round_no in range(s.overhead_rounds):
            self.budget.check("overhead rounds")
            order = ("proxied", "direct") if round_no % 2 == 0 else ("direct", "proxied")
            results = {side: run(side, d) for side in order}
            through.append(results["proxied"])
            direct.append(results["direct"])
        self.sim.reset()
        p50, p50_direct = statistics.median(x.p50 for x in through), statistics.median(x.p50 for x in direct)
        added = p50 - p50_direct
        diffs = [a.p50 - b.p50 for a, b in zip(through, direct)]
        r.row("13.6", f"proxy overhead at 1 connection, no delay: proxied p50 - direct p50 (median of "
                      f"{s.overhead_rounds} A/B rounds of {d} s)",
              f"{us(added)} (proxied {us(p50)}, direct {us(p50_direct)})", "<= 1.0 ms",
              self.judged(added <= 0.001))
        r.row("13.6", "  the same runs: req/s proxied / direct, and p99",
              f"{statistics.median(x.rps for x in through):.0f} / {statistics.median(x.rps for x in direct):.0f} "
              f"req/s; p99 {us(statistics.median(x.p99 for x in through))} / "
              f"{us(statistics.median(x.p99 for x in direct))}")
        r.notes.append("proxy overhead, per-round p50 differences: " + ", ".join(us(x) for x in diffs))
        if s.smoke:
            for i, (a, b) in enumerate(zip(through, direct)):
                self.check_load(f"overhead proxied run {i + 1}", a)
                self.check_load(f"overhead direct run {i + 1}", b)

    def no_regression(self) -> None:
        """Target 5 (and 4's stampede): the rows of issue 5's sections, repeated under issue 13's numbers."""
        wanted = (("13.5", "no regression: ", "1", "token hit req/s"),
                  ("13.5", "no regression: ", "4", "rollover, server side"),
                  ("13.5", "no regression: ", "4", "rollover: requests that waited"),
                  ("13.4", "still: ", "3", "stampede: Trackunit token calls"))
        for section, prefix, source, start in wanted:
            row = next((x for x in self.report.rows if x.section == source and x.measure.startswith(start)), None)
            if row is not None:
                self.report.row(section, f"{prefix}{row.measure.split(' (')[0]} (row {source})", row.value,
                                row.target, row.verdict)

    # Output ---------------------------------------------------------------------------------------

    def header(self) -> list[str]:
        s = self.s
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        model, mem = "", 0
        with contextlib.suppress(OSError):
            model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                          if line.startswith("model name")), "")
        with contextlib.suppress(OSError, StopIteration, ValueError):
            mem = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]) * 1024
        commit = _git("rev-parse", "--short", "HEAD") or "?"
        dirty = " (+ uncommitted changes)" if _git("status", "--porcelain") else ""
        redis_version = self.redis.info("server").get("redis_version", "?")
        mode = "SMOKE run (tiny N, short runs; counts asserted, no throughput threshold)" if s.smoke else "full run"
        return [
            f"Iris Token Vault benchmark, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: {mode}",
            f"machine: {cpus} CPUs (nproc{', ' + model if model else ''}), {mem / 2**30:.1f} GiB RAM, "
            f"{platform.system()} {platform.release()}; 1-min load average {LOAD_AT_START:.2f} before the run "
            f"(other tenants)",
            f"service: commit {commit}{dirty}; gunicorn per Procfile, WEB_CONCURRENCY={s.workers}, "
            f"GUNICORN_THREADS={s.threads if s.threads_given else 'unset (gunicorn.conf.py default)'}, "
            f"worker class {self.worker_class} (gunicorn's log); redis-server {redis_version} (no persistence); "
            f"TOKEN_EXPIRY_MARGIN={s.margin}; Python {platform.python_version()}"
            + (f"; extra service env: {' '.join(f'{k}={v}' for k, v in s.service_env.items())}"
               if s.service_env else ""),
            f"load: {self.load.name}" + (f", {s.wrk_threads} threads" if isinstance(self.load, Wrk) else "")
            + f", {s.connections} connections; throughput as ratios of "
            f"interleaved A/B runs (medians); N = {s.accounts:,} accounts; all traffic on 127.0.0.1",
        ]

    def table(self) -> str:
        rows = [("#", "measure", "value", "target", "verdict")] + [
            (x.section, x.measure, x.value, x.target, x.verdict) for x in self.report.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = []
        for index, row in enumerate(rows):
            lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


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
        try:
            bench.start()
            bench.install_accounts()
            steps = {"paging": bench.paging, "hit": bench.hit_ratio, "stampede": bench.stampede,
                     "fanout": bench.fanout, "rollover": bench.rollover, "economy": bench.economy,
                     "proxy": bench.proxy_slow_api, "tls": bench.proxy_tls, "overhead": bench.overhead,
                     "many": bench.many_in_flight}
            for name in SECTIONS:
                if name in settings.sections:
                    steps[name]()
            bench.no_regression()
            lines = bench.header()
        except KeyboardInterrupt:
            log("interrupted: stopping everything")
            return 130
        except (SetupError, RuntimeError, OSError, requests.RequestException, redis.RedisError,
                subprocess.TimeoutExpired) as exc:
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
