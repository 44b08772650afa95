"""The service under gunicorn, started as the Procfile does, for multi-worker tests.

`WorkerConnections` gives a test one keep-alive connection to each worker, so that a claim
about "every worker" is checked on every worker, not on whichever ones the kernel picked.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class GunicornServer:
    """The service as the Procfile starts it; MAX_IN_FLIGHT in `env` sets how many requests a worker takes at once."""

    def __init__(self, env: dict[str, str], *, workers: int = 4) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "PORT": str(self.port), "WEB_CONCURRENCY": str(workers)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"itv-gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None

    def start(self) -> GunicornServer:
        procfile = (ROOT / "Procfile").read_text().split("web:", 1)[1].splitlines()[0].split()
        assert procfile[0] == "gunicorn"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *procfile[1:]],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.exit_code = self.process.wait(timeout=30)  # Heroku kills 30 s after SIGTERM
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.exit_code = self.process.wait()
        self.process = None
        self._log.close()

    def worker_pids(self) -> set[int]:
        """The pids of the master's children (the workers), read from /proc."""
        assert self.process is not None
        master, pids = self.process.pid, set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[1]) == master:
                pids.add(int(stat.parent.name))
        return pids

    def worker_holding(self, client_port: int) -> int | None:
        """The pid of the worker holding the server end of the connection made from `client_port`."""
        wanted = f"{self.port:04X}", f"{client_port:04X}"
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if (fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]) == wanted and fields[9] != "0":
                inode = fields[9]
        if inode is None:
            return None
        for pid in self.worker_pids():
            try:
                links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            except OSError:
                continue
            if f"socket:[{inode}]" in links:
                return pid
        return None


class WorkerConnections:
    """One keep-alive HTTP connection to each gunicorn worker (`.by_worker`: pid -> connection).

    Connections are opened until every worker holds one; the extra ones are closed. Requests on a
    connection are served by its worker as long as it is used inside gunicorn's keep-alive (5 s):
    `get` checks that the same worker still holds it, so a reconnect cannot go unnoticed.
    """

    def __init__(self, server: GunicornServer, headers: dict[str, str], *, attempts: int = 200) -> None:
        self.server, self.headers = server, headers
        self.by_worker: dict[int, http.client.HTTPConnection] = {}
        workers = server.worker_pids()
        for _ in range(attempts):
            if set(self.by_worker) == workers:
                return
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            pid = server.worker_holding(conn.sock.getsockname()[1])
            if pid is None or pid in self.by_worker:
                conn.close()
            else:
                self.by_worker[pid] = conn
        self.close()
        raise AssertionError(f"no connection to every worker after {attempts} tries: {len(workers)} workers")

    def get(self, pid: int, path: str, method: str = "GET") -> tuple[int, dict]:
        """(status, JSON body) of `method path` served by worker `pid`."""
        conn = self.by_worker[pid]
        conn.request(method, path, headers=self.headers)
        response = conn.getresponse()
        raw = response.read()
        assert self.server.worker_holding(conn.sock.getsockname()[1]) == pid, "the connection moved to another worker"
        return response.status, (json.loads(raw) if raw else {})

    def close(self) -> None:
        for conn in self.by_worker.values():
            conn.close()
