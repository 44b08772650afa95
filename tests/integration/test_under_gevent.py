"""The in-process tests of what must stay cooperative, run again under gevent's monkey-patching.

The production worker (gunicorn's gevent worker) patches sockets, ssl, threading and time
before it imports the app. The fetch deadline (a Timer that shuts sockets down, in the middle
of a read or a TLS handshake), Redis outages (reconnects, the invalidation listener, the pool)
and refresh ahead (its ThreadPoolExecutor, redis-py's Lock) are tested in-process with real
threads; here the same tests run in a fresh interpreter where all of those are greenlets.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SELECTED = [
    "tests/unit/test_fetch_deadline.py",  # drip, connect, TLS handshake, Retry-After waits
    "tests/integration/test_store_down.py",  # Redis stopped and started again
    "tests/integration/test_local_cache.py::test_memory_is_not_trusted_while_redis_is_down",
    "tests/integration/test_tokens.py::test_refresh_ahead_serves_the_old_token_while_one_background_refresh_runs",
]


@pytest.mark.slow
def test_cooperative_paths_pass_under_gevent_monkey_patching():
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.gevent_pytest", "-q", "-p", "no:cacheprovider", *SELECTED],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    tail = (out.stdout + out.stderr)[-3000:]
    assert out.stdout.startswith("gevent: patched"), tail
    assert out.returncode == 0, tail
    assert " passed" in out.stdout and "failed" not in out.stdout and "skipped" not in out.stdout, tail
