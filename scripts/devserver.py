"""Run the service locally with nothing set up: `python -m scripts.devserver` (what `make run` does).

Whatever the environment leaves out is filled in for development, loudly:
- no REDIS_URL: an EPHEMERAL in-memory Redis (fakeredis's TCP server, shared
  by every gunicorn worker); everything is lost when this process stops;
- no VAULT_KEY / API_KEYS: generated now and printed once;
- no TRACKUNIT_TOKEN_URL: the bundled Trackunit simulator is started and
  all three Trackunit URLs point at it.
Then gunicorn runs exactly as the Procfile says. The production entry point
(`wsgi.py`) never does any of this.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading

from vault.keys import generate_key

DEFAULTS = {
    "IRIS_APP_ID": "@organization/appname",
    "APP_SCOPES": "asset.view account.view account.alert.view?",
    "PORT": "8000",
    "WEB_CONCURRENCY": "2",
}


def _ephemeral_redis() -> str:
    import fakeredis

    server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_version=(7, 0))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="fakeredis").start()
    return f"redis://127.0.0.1:{server.server_address[1]}/0"


def _simulator(port: int, *, quiet: bool) -> str:
    from simulator import create_simulator, serve_in_thread

    return serve_in_thread(create_simulator(), port=port, log_requests=not quiet).url


def prepare(env: dict[str, str], *, quiet: bool = False) -> list[str]:
    """Fill in development settings; return the lines to print."""
    notes: list[str] = []
    for name, value in DEFAULTS.items():
        env.setdefault(name, value)
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = _ephemeral_redis()
        notes.append("REDIS_URL     (none set) EPHEMERAL in-memory store (fakeredis): all data is lost on exit")
    if not env.get("VAULT_KEY"):
        env["VAULT_KEY"] = generate_key()
        notes.append(f"VAULT_KEY     generated for this run: {env['VAULT_KEY']}")
    if not env.get("API_KEYS"):
        env["API_KEYS"] = "dev:" + secrets.token_urlsafe(24)
        notes.append(
            f"API_KEYS      generated for this run: {env['API_KEYS']}  (use: Authorization: Bearer <after 'dev:'>)"
        )
    if not env.get("METRICS_TOKEN") and not env.get("METRICS_PUBLIC"):
        env["METRICS_PUBLIC"] = "true"
        notes.append("METRICS_PUBLIC (no METRICS_TOKEN set) /metrics is OPEN to anyone: production refuses this")
    if not env.get("TRACKUNIT_TOKEN_URL"):
        sim = _simulator(int(env.get("SIMULATOR_PORT", "5001")), quiet=quiet)
        env["TRACKUNIT_TOKEN_URL"] = f"{sim}/apptoken"
        env["TRACKUNIT_JWKS_URL"] = f"{sim}/api/marketplace/jwks"
        env["TRACKUNIT_API_URL"] = sim
        notes.append(f"TRACKUNIT_*   the bundled Trackunit SIMULATOR at {sim}")
    return notes


def spawn_gunicorn(env: dict[str, str], **popen) -> subprocess.Popen:
    """gunicorn with the Procfile's arguments."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository, where the Procfile is
    with open(os.path.join(here, "Procfile")) as procfile:
        command = procfile.read().split("web:", 1)[1].splitlines()[0].split()
    return subprocess.Popen([sys.executable, "-m", *command], env=env, cwd=here, **popen)


def main() -> int:
    env = dict(os.environ)
    notes = prepare(env)
    print("Iris Token Vault: development server (not for production)", flush=True)
    for line in notes:
        print("  " + line, flush=True)
    print(f"  service       http://127.0.0.1:{env['PORT']}  (Ctrl-C stops everything)", flush=True)
    gunicorn = spawn_gunicorn(env)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: gunicorn.send_signal(signal.SIGTERM))
    return gunicorn.wait()


if __name__ == "__main__":
    sys.exit(main())
