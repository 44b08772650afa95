"""The system under test, running: redis-server, the simulator and gunicorn (via
tests/support/gunicorn.py) started and stopped, and the calls every section makes on them."""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import requests

from bench.common import API_PATH, APP_ID, APP_SCOPES, KEY_PREFIX, Budget, SetupError, log
from bench.load import LoadResult, PythonLoad, Wrk, find_wrk
from bench.processes import Simulator
from bench.report import Report
from bench.settings import Settings
from core.config import Config
from tests.support.gunicorn import GunicornServer
from tests.support.redis_server import RedisClusterServers, RedisServer
from vault.keys import generate_key


class Harness:
    """Starts and stops what is measured and holds what the sections share."""

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
        self.load_at_start = float("nan")  # the 1-min load average before the run, set by run.main

    def _cleanup_workdir(self) -> None:
        if self.keep_workdir:
            log(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self) -> None:
        s = self.s
        wrk = None if s.python_load else find_wrk(s)
        if wrk is not None:
            self.load = Wrk(wrk, self.workdir, self.headers, s.wrk_threads)
        elif s.smoke:
            log(
                "wrk is not available: the smoke run uses a Python load loop instead"
                if not s.python_load
                else "--python-load: the smoke run uses the Python load loop"
            )
            self.load = PythonLoad(self.headers, "--python-load" if s.python_load else "wrk not available")
        else:
            raise SetupError(
                "the full benchmark needs wrk: install it (Debian/Ubuntu: apt-get install -y wrk), "
                "or run as root so that it is installed for you; --smoke works without it"
            )
        log(f"load generator: {self.load.name}")

        redis_env = self._start_redis()

        self.sim = Simulator(self.stack, self.workdir, self.budget, tls=s.tls and "tls" in s.sections)
        log(
            f"simulator on {self.sim.url}"
            + (f" and {self.sim.tls_url} (CA {self.sim.ca_bundle})" if self.sim.tls_url else "")
        )

        self.env = {
            **redis_env,
            "VAULT_KEY": generate_key(),
            "API_KEYS": f"bench:{self.api_key}",
            "IRIS_APP_ID": APP_ID,
            "APP_SCOPES": APP_SCOPES,
            "TRACKUNIT_TOKEN_URL": f"{self.sim.url}/apptoken",
            "TRACKUNIT_JWKS_URL": f"{self.sim.url}/api/marketplace/jwks",
            "TRACKUNIT_API_URL": self.sim.url,
            "TOKEN_EXPIRY_MARGIN": str(s.margin),
            "KEY_PREFIX": KEY_PREFIX,
            "METRICS_PUBLIC": "true",  # the bench reads /metrics; production needs METRICS_TOKEN or this
            # The sections measure cold accounts (stampede, fan-out): no token fetch right after installing.
            # The events section (16) turns it on for its own gunicorn.
            "VERIFY_ON_INSTALL": "false",
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "prometheus"),
            **s.service_env,
        }
        self.config = Config.from_env(self.env)
        self.gunicorn = self.start_gunicorn("gunicorn")
        self.base = self.gunicorn.url
        self.worker_class = self._worker_class(self.gunicorn)
        log(f"service under gunicorn (Procfile) on {self.base}: {s.workers} workers, worker class {self.worker_class}")

    @property
    def on_cluster(self) -> bool:
        return self.s.redis == "cluster"

    def _start_redis(self) -> dict[str, str]:
        """Start the store (one redis-server, or a cluster) and connect `self.redis`; the service's variables."""
        if self.on_cluster:
            cluster = RedisClusterServers()
            for server in cluster.servers:
                self.stack.callback(shutil.rmtree, server.dir, ignore_errors=True)
            self.stack.callback(cluster.stop)
            cluster.start()
            self.redis = cluster.client()
            self.stack.callback(self.redis.close)
            log(f"Redis Cluster: 3 masters, 3 replicas, from port {cluster.servers[0].port}")
            return {"REDIS_URL": cluster.url, "REDIS_CLUSTER": "true"}
        self.redis_server = RedisServer()
        self.stack.callback(lambda: shutil.rmtree(self.redis_server.dir, ignore_errors=True))
        self.stack.callback(self.redis_server.stop)
        self.redis_server.start()
        self.redis = self.redis_server.client()
        self.stack.callback(self.redis.close)
        log(f"redis-server on port {self.redis_server.port}")
        return {"REDIS_URL": self.redis_server.url}

    def used_memory(self) -> int:
        """Redis's used_memory: of the one server, or summed over the cluster's masters."""
        if not self.on_cluster:
            return int(self.redis.info("memory")["used_memory"])
        found = self.redis.info("memory", target_nodes=self.redis.PRIMARIES)
        return sum(int(node_info["used_memory"]) for node_info in found.values())

    def start_gunicorn(
        self, name: str, env: dict[str, str] | None = None, *, workers: int | None | bool = True
    ) -> GunicornServer:
        """gunicorn as the Procfile runs it, stopped with the bench. `workers`: True = --workers,
        None = WEB_CONCURRENCY unset (gunicorn.conf.py's default). The worker model is gunicorn.conf.py's
        (another one can be tried with --service-env GUNICORN_CMD_ARGS=...)."""
        s = self.s
        server = GunicornServer(env or self.env, workers=s.workers if workers is True else (workers or 1))
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
                f"{result.socket_errors} socket errors of {result.requests}"
            )

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
        return bad + socket_errors + timeouts, (
            f"{bad} non-2xx, {socket_errors} socket errors, {timeouts} timeouts of {total:,}"
        )
