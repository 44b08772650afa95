"""The load generators: wrk with its Lua hooks, the Python fallback loop, and the asyncio one-shot fan-out."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.common import SetupError, log, percentile
from bench.settings import Settings

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
_WRK_ROTATE = (
    r"""
local paths = {}
local counter = 0
function init(args)
  for i, path in ipairs(args) do paths[i] = path end
end
function request()
  counter = counter + 1
  return wrk.format(nil, paths[(counter % #paths) + 1])
end
"""
    + _WRK_DONE
)
_WRK_RESULT = re.compile(r"^BENCH_RESULT((?: \d+){10})$", re.M)


#: wrk's --timeout: a request unanswered after this many seconds counts as a timeout.
WRK_TIMEOUT = 10


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

    def run(
        self, base: str, paths: list[str], seconds: int, connections: int, headers: dict[str, str] | None = None
    ) -> LoadResult:
        """`headers` replaces the default ones (the API key), e.g. for requests straight to the simulator."""
        threads = max(1, min(self.threads, connections))
        command = [
            self.binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            f"{WRK_TIMEOUT}s",
        ]
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

    def run(
        self, base: str, paths: list[str], seconds: int, connections: int, headers: dict[str, str] | None = None
    ) -> LoadResult:
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
        return LoadResult(
            sum(len(p) for p in latencies),
            elapsed,
            counts["socket"],
            counts["status"],
            counts["timeouts"],
            percentile(flat, 50),
            percentile(flat, 99),
            max(flat),
        )


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
        connections = await asyncio.gather(
            *(asyncio.open_connection(host, port) for _ in paths), return_exceptions=True
        )
        gate = asyncio.Event()

        async def one(connection, path: str) -> tuple[int, dict, float]:
            if isinstance(connection, BaseException):
                return 0, {}, 0.0
            reader, writer = connection
            await gate.wait()
            started = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(exchange(reader, writer, path), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
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
            subprocess.run(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60 if settings.smoke else 180,
            )
        except (subprocess.TimeoutExpired, OSError) as exc:
            log(f"  {type(exc).__name__}: {exc}")
            return None
        if shutil.which("wrk"):
            return shutil.which("wrk")
    return None
