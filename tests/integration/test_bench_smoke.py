"""`python -m bench.run --smoke` end to end, as `make bench-smoke` runs it.

The smoke run starts its own redis-server, simulator and gunicorn (free ports),
installs a few hundred accounts and runs every section of the benchmark
briefly. It exits non-zero when a count is wrong (the stampede's single
Trackunit call, one call per rollover, one per account in the cold fan-out,
every answer a 2xx, also of the short proxied runs, paging complete);
throughput is not judged. Without wrk it falls back to a Python load loop.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_smoke_run_passes_and_reports_a_single_stampede_call():
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + "\n--- stderr ---\n" + result.stderr[-4000:]
    assert result.returncode == 0, output
    assert re.search(
        r"^\| 3 +\| stampede: Trackunit token calls .*\| 1 +\| exactly 1 +\| ok +\|$", result.stdout, re.M
    ), output
    # issue 13: a tiny cold fan-out makes one token call per account, and a short proxied run
    # (slow API) and the one-connection overhead runs answer every request (counts, not speed)
    assert re.search(
        r"^\| 13\.4 +\| cold fan-out: Trackunit token calls +\| (\d+) \(one per account\); \1 after "
        r"the warm repeat +\| exactly \1 +\| ok +\|$",
        result.stdout,
        re.M,
    ), output
    assert re.search(
        r"^\| 13\.4 +\| cold fan-out: .* answered 200 +\| (\d+) of \1 .*\| ok +\|$", result.stdout, re.M
    ), output
    assert re.search(
        r"^\| 13\.1 +\| proxy under a slow API: errors, proxied .*\| 0 \(0 non-2xx", result.stdout, re.M
    ), output
    assert re.search(
        r"^\| 13\.3 +\| connection reuse: .*\| worst run \d+ new for a peak of \d+ in flight; "
        r"all \d+ runs: [\d,]+ new connections for \d",
        result.stdout,
        re.M,
    ), output
    # issue 17: the token hit with a managed, scoped API key and with a rate-limited one, every answer a 2xx
    assert re.search(r"^\| 17\.1 +\| token hit req/s with a managed, scoped key ", result.stdout, re.M), output
    assert re.search(r"^\| 17\.2 +\| token hit req/s with a rate-limited key ", result.stdout, re.M), output
    # Issue 16: every install's two events delivered once, in order, with valid signatures (counts only).
    assert re.search(
        r"^\| 16 +\| installs stored; .*\| 40 stored, 80 of 80 delivered +\| all +\| ok", result.stdout, re.M
    ), output
    assert "load generator:" in result.stderr, output
    assert "counts: all correct" in result.stdout, output
