"""gunicorn.conf.py: the fast configuration by default, and a master that imports nothing the
gevent worker must patch first (it patches each worker after the fork, then imports the app)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core import tunables
from tests.unit.test_config import GOOD

ROOT = Path(__file__).resolve().parents[2]

# What the master does with the file: load it, then call on_starting (which validates the config).
MASTER = """
import json, os, sys, tempfile
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
settings = {}
exec(compile(open("gunicorn.conf.py").read(), "gunicorn.conf.py", "exec"), settings)
settings["on_starting"](None)
network = ("urllib3", "requests", "redis", "concurrent.futures", "flask", "jwt", "prometheus_client")
print(json.dumps({
    "worker_class": settings["worker_class"], "preload_app": settings.get("preload_app", False),
    "worker_connections": settings["worker_connections"], "keepalive": settings["keepalive"],
    "imported": sorted(m for m in network if m in sys.modules),
}))
"""


def load_in_master(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MASTER], cwd=ROOT, env={**GOOD, **env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_default_is_the_gevent_worker_with_room_above_the_in_flight_limit():
    settings = load_in_master()
    assert settings["worker_class"] == "gevent"
    assert settings["preload_app"] is False
    assert settings["keepalive"] > 0  # under gevent it is also the deadline for a request's headers
    assert (
        settings["worker_connections"]
        == 1000 * tunables.WORKER_CONNECTIONS_PER_IN_FLIGHT + tunables.WORKER_CONNECTIONS_SPARE
    )


def test_worker_connections_follow_max_in_flight():
    assert (
        load_in_master(MAX_IN_FLIGHT="10")["worker_connections"]
        == 10 * tunables.WORKER_CONNECTIONS_PER_IN_FLIGHT + tunables.WORKER_CONNECTIONS_SPARE
    )


def test_the_master_imports_no_network_library_before_the_workers_patch_theirs():
    assert load_in_master()["imported"] == []
