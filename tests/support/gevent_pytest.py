"""pytest under gevent's monkey-patching, the way gunicorn's gevent worker patches a worker
before it imports the app: `python -m tests.support.gevent_pytest [pytest args]`.

Tests that run the service's code in-process (the fetch deadline, Redis outages, refresh
ahead) run this way with every socket, lock, sleep, timer and thread being gevent's, as in
production.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import pytest  # noqa: E402

PATCHED = ("socket", "ssl", "threading", "time", "select", "queue")

if __name__ == "__main__":
    missing = [name for name in PATCHED if not monkey.is_module_patched(name)]
    if missing:
        sys.exit(f"not patched: {missing}")
    print("gevent: patched " + " ".join(PATCHED), flush=True)
    sys.exit(pytest.main(sys.argv[1:]))
