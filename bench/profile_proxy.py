#!/usr/bin/env python3
"""Where the time of one proxied call goes: the service in-process, profiled with pyinstrument.

Starts a redis-server and the simulator (a subprocess, so that its threads do not share this
process's GIL), builds the service with `create_app`, installs one account and caches its token,
then, interleaved, times calls of each kind one after another (one connection, no delay):

    healthz   test client GET /healthz                        (Flask + the test client: the floor)
    hit       test client GET /v1/accounts/{id}/token         (a cached token)
    proxied   test client GET /v1/accounts/{id}/proxy/api/asset/v1/assets
    direct    requests.Session GET {simulator}/api/asset/v1/assets   (what the proxy itself sends)

and profiles the proxied calls alone with pyinstrument (text to stdout; --html FILE as well).
gunicorn's own work per request (accepting, parsing, writing; ~0.3-0.5 ms here) is not in these
figures: `make bench` measures the whole path (section 13.6).

    .venv/bin/python -m bench.profile_proxy [--calls 2000] [--html profile.html]
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
from pyinstrument import Profiler

from app import create_app
from bench.common import ACCOUNT_SCOPES, API_PATH, APP_ID, APP_SCOPES, Budget
from bench.processes import Simulator
from core.config import Config
from tests.support.redis_server import RedisServer
from vault.accounts import Credentials
from vault.keys import generate_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls of each kind (2000)")
    parser.add_argument("--html", help="also write pyinstrument's HTML report here")
    parser.add_argument("--all", action="store_true", help="show library frames too (a long tree)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="itv-profile-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        redis_server = RedisServer()
        stack.callback(shutil.rmtree, redis_server.dir, ignore_errors=True)
        stack.callback(redis_server.stop)
        redis_server.start()
        sim = Simulator(stack, workdir, Budget(120), tls=False)
        api_key = secrets.token_urlsafe(24)
        config = Config.from_env(
            {
                "REDIS_URL": redis_server.url,
                "VAULT_KEY": generate_key(),
                "API_KEYS": f"bench:{api_key}",
                "IRIS_APP_ID": APP_ID,
                "APP_SCOPES": APP_SCOPES,
                "TRACKUNIT_TOKEN_URL": f"{sim.url}/apptoken",
                "TRACKUNIT_JWKS_URL": f"{sim.url}/api/marketplace/jwks",
                "TRACKUNIT_API_URL": sim.url,
            }
        )
        app = create_app(config)
        stack.callback(app.extensions["vault"].close)
        account = str(uuid.uuid4())
        creds = sim._post("/_sim/accounts", {"accountId": account, "scopes": ACCOUNT_SCOPES, "irisAppId": APP_ID})
        app.extensions["vault"].accounts.install(account, APP_ID, Credentials(creds["clientId"], creds["clientSecret"]))
        client = app.test_client()
        headers = {"Authorization": f"Bearer {api_key}"}
        token_path = f"/v1/accounts/{account}/token"
        proxy_path = f"/v1/accounts/{account}/proxy{API_PATH}"
        token = client.get(token_path, headers=headers).get_json()["access_token"]
        direct = requests.Session()
        direct.headers["Authorization"] = f"Bearer {token}"

        def call(kind: str) -> None:
            if kind == "direct":
                answer = direct.get(sim.url + API_PATH, timeout=10)
                assert answer.status_code == 200, answer.status_code
                return
            path = {"healthz": "/healthz", "hit": token_path, "proxied": proxy_path}[kind]
            answer = client.get(path, headers=headers)
            assert answer.status_code == 200, (kind, answer.status_code, answer.data[:200])
            answer.close()

        kinds = ("healthz", "hit", "proxied", "direct")
        for kind in kinds:  # warm: connections, local token cache, imports
            for _ in range(50):
                call(kind)
        # Timed without the profiler (interleaved batches), then profiled on its own: the sampling
        # profiler slows what it watches.
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        batch = 100
        for start in range(0, args.calls, batch):
            sim.reset()  # the simulator's API log grows by every request
            for kind in kinds:
                for _ in range(min(batch, args.calls - start)):
                    began = time.perf_counter()
                    call(kind)
                    times[kind].append(time.perf_counter() - began)
        profiler = Profiler(interval=0.0005)
        for start in range(0, args.calls, batch):
            sim.reset()
            profiler.start()
            for _ in range(min(batch, args.calls - start)):
                call("proxied")
            profiler.stop()
        print(f"in-process, one call at a time, {args.calls} calls each (median, p90), microseconds:")
        for kind in kinds:
            ordered = sorted(times[kind])
            print(f"  {kind:8} {statistics.median(ordered) * 1e6:8.0f} {ordered[int(0.9 * len(ordered))] * 1e6:8.0f}")
        healthz, proxied, upstream = (statistics.median(times[k]) for k in ("healthz", "proxied", "direct"))
        print(
            f"  proxied - healthz - direct = {(proxied - healthz - upstream) * 1e6:.0f} us: the proxy's own work "
            f"beyond Flask's floor and the upstream call itself"
        )
        print()
        print(profiler.output_text(unicode=True, color=False, show_all=args.all))
        if args.html:
            Path(args.html).write_text(profiler.output_html())
            print(f"HTML report: {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
