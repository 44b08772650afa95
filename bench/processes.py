"""The processes the benchmark starts and watches: the simulator subprocess and its control API,
and what /proc tells about gunicorn's processes (pids, memory, open-file limit)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from bench.common import HOST, ROOT, Budget, SetupError


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
            for name, pattern in (
                ("url", r"simulator on (http://\S+)"),
                ("tls_url", r"HTTPS: +(https://\S+)"),
                ("ca_bundle", r"CA bundle: (\S+)"),
            ):
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
