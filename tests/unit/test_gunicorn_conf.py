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
    "forwarder_headers": settings["forwarder_headers"],
    "worker_connections": settings["worker_connections"], "keepalive": settings["keepalive"],
    "imported": sorted(m for m in network if m in sys.modules),
}))
"""


def load_in_master(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MASTER],
        cwd=ROOT,
        env={**GOOD, "METRICS_PUBLIC": "true", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_default_is_the_gevent_worker_with_room_above_the_in_flight_limit():
    settings = load_in_master()
    assert settings["worker_class"] == "core.server.JsonErrorGeventWorker"
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


def test_the_worker_is_gevents_with_json_refusals():
    from gunicorn.workers.ggevent import GeventWorker

    from core.server import JsonErrorGeventWorker, error_bytes

    assert issubclass(JsonErrorGeventWorker, GeventWorker)
    head, _, body = error_bytes(431).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Content-Type: application/json" in head and b"Connection: close" in head
    assert json.loads(body) == {
        "error": {"code": "headers_too_large", "message": "The request headers are too large or too many."}
    }


def test_no_client_header_may_set_script_name_or_path_info():
    # gunicorn's default trusts SCRIPT_NAME and PATH_INFO headers from forwarded_allow_ips ("*" here).
    assert load_in_master()["forwarder_headers"] == ""
