"""The report: rows, notes and wrong counts, and the printed header and table."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import platform
import subprocess

from bench.common import ROOT
from bench.load import Wrk


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


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


class Output:
    """The benchmark's output: the header lines, the table, and the rows repeated under issue 13."""

    def no_regression(self) -> None:
        """Target 5 (and 4's stampede): the rows of issue 5's sections, repeated under issue 13's numbers."""
        wanted = (
            ("13.5", "no regression: ", "1", "token hit req/s"),
            ("13.5", "no regression: ", "4", "rollover, server side"),
            ("13.5", "no regression: ", "4", "rollover: requests that waited"),
            ("13.4", "still: ", "3", "stampede: Trackunit token calls"),
        )
        for section, prefix, source, start in wanted:
            row = next((x for x in self.report.rows if x.section == source and x.measure.startswith(start)), None)
            if row is not None:
                self.report.row(
                    section, f"{prefix}{row.measure.split(' (')[0]} (row {source})", row.value, row.target, row.verdict
                )

    def header(self) -> list[str]:
        s = self.s
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        model, mem = "", 0
        with contextlib.suppress(OSError):
            model = next(
                (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
            )
        with contextlib.suppress(OSError, StopIteration, ValueError):
            mem = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]) * 1024
        commit = _git("rev-parse", "--short", "HEAD") or "?"
        dirty = " (+ uncommitted changes)" if _git("status", "--porcelain") else ""
        server_info = self.redis.info("server")  # on a cluster: one node's
        redis_version = server_info.get("redis_version", "?")
        topology = "a Redis Cluster of 3 masters + 3 replicas" if self.on_cluster else "one redis-server"
        mode = "SMOKE run (tiny N, short runs; counts asserted, no throughput threshold)" if s.smoke else "full run"
        return [
            f"Iris Token Vault benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {mode}",
            f"machine: {cpus} CPUs (nproc{', ' + model if model else ''}), {mem / 2**30:.1f} GiB RAM, "
            f"{platform.system()} {platform.release()}; 1-min load average {self.load_at_start:.2f} before the run "
            f"(other tenants)",
            f"service: commit {commit}{dirty}; gunicorn per Procfile, WEB_CONCURRENCY={s.workers}, "
            f"MAX_IN_FLIGHT={s.service_env.get('MAX_IN_FLIGHT', 'unset (gunicorn.conf.py default)')}, "
            f"worker class {self.worker_class} (gunicorn's log); redis-server {redis_version}, {topology}; "
            f"TOKEN_EXPIRY_MARGIN={s.margin}; Python {platform.python_version()}"
            + (
                f"; extra service env: {' '.join(f'{k}={v}' for k, v in s.service_env.items())}"
                if s.service_env
                else ""
            ),
            f"load: {self.load.name}"
            + (f", {s.wrk_threads} threads" if isinstance(self.load, Wrk) else "")
            + f", {s.connections} connections; throughput as ratios of "
            f"interleaved A/B runs (medians); N = {s.accounts:,} accounts; all traffic on 127.0.0.1",
        ]

    def table(self) -> str:
        rows = [("#", "measure", "value", "target", "verdict")] + [
            (x.section, x.measure, x.value, x.target, x.verdict) for x in self.report.rows
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = []
        for index, row in enumerate(rows):
            lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)
