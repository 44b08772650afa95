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
    "tests/unit/test_shared_reads.py",  # readers that wait for another's read are greenlets there
    "tests/integration/test_shared_reads.py",
    "tests/integration/test_hotproxy.py",  # a proxied call made before Flask: its deadline is a greenlet there
]


@pytest.mark.slow
def test_cooperative_paths_pass_under_gevent_monkey_patching():
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.gevent_pytest", "-q", "-p", "no:cacheprovider", *SELECTED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = (out.stdout + out.stderr)[-3000:]
    assert out.stdout.startswith("gevent: patched"), tail
    assert out.returncode == 0, tail
    assert " passed" in out.stdout and "failed" not in out.stdout and "skipped" not in out.stdout, tail


# Imported after patch_all, as in a gevent worker: the per-fetch deadline is per greenlet (a
# shared one would let one fetch's deadline cut another's sockets), locks and queues are gevent's.
AFTER_PATCHING = """
from gevent import monkey
monkey.patch_all()
import queue, threading
import app, core.deadline, auth.tokens, auth.memory.feed
assert type(core.deadline._current).__module__.startswith("gevent"), type(core.deadline._current)
assert threading.Lock.__module__.startswith("gevent"), threading.Lock
assert queue.SimpleQueue.__module__.startswith("gevent"), queue.SimpleQueue  # ThreadPoolExecutor's queue
assert threading.get_ident.__module__.startswith("gevent"), threading.get_ident
print("cooperative")
"""


def test_the_service_modules_see_gevent_primitives_once_patched():
    out = subprocess.run([sys.executable, "-c", AFTER_PATCHING], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "cooperative", out.stderr[-2000:]
