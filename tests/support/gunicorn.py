"""The service under gunicorn, started as the Procfile does, for multi-worker tests."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class GunicornServer:
    """`threads` is accepted for older callers and ignored: the Procfile's gevent worker has none
    (MAX_IN_FLIGHT in `env` sets how many requests a worker takes at once)."""

    def __init__(self, env: dict[str, str], *, workers: int = 4, threads: int | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "PORT": str(self.port), "WEB_CONCURRENCY": str(workers)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"itv-gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None

    def start(self) -> "GunicornServer":
        procfile = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip().split()
        assert procfile[0] == "gunicorn"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *procfile[1:]], cwd=ROOT, env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT,
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
