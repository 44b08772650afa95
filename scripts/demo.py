"""`make demo`: the whole flow, offline, one step at a time.

Starts an ephemeral store, the Trackunit simulator and the service under
gunicorn (as the Procfile does), then: Trackunit installs the app for an
account, a backend asks the vault for a token, calls the (simulated)
Trackunit API with it, and asks again (a cache hit: no second call to Trackunit).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import requests

from scripts import devserver

ACCOUNT = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}", flush=True)


def show(response: requests.Response) -> dict:
    body = response.json() if response.content else {}
    shown = dict(body)
    if "access_token" in shown:
        shown["access_token"] = shown["access_token"][:12] + "…"  # enough to recognise, not to use
    if "clientSecret" in shown:
        shown["clientSecret"] = "…"
    print(f"    {response.request.method} {response.url} → {response.status_code}")
    print("    " + json.dumps(shown, indent=2, ensure_ascii=False).replace("\n", "\n    "), flush=True)
    return body


def main() -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKUNIT_", "REDIS_URL"))}
    env.update(PORT=str(_free_port()), SIMULATOR_PORT=str(_free_port()), WEB_CONCURRENCY="2")
    devserver.prepare(env, quiet=True)
    vault = f"http://127.0.0.1:{env['PORT']}"
    sim = env["TRACKUNIT_API_URL"]
    api_key = env["API_KEYS"].split(":", 1)[1]
    auth = {"Authorization": f"Bearer {api_key}"}
    gunicorn = devserver.spawn_gunicorn(env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        step(0, f"service under gunicorn at {vault}, Trackunit simulator at {sim}, ephemeral store")
        for _ in range(100):
            try:
                if requests.get(f"{vault}/readyz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            print("the service did not start", file=sys.stderr)
            return 1

        step(1, "Trackunit installs the app: it POSTs INSTALLED to /appinstall, signed with Trackunit-Identity")
        result = requests.post(
            f"{sim}/_sim/install",
            json={
                "callbackUrl": f"{vault}/appinstall",
                "accountId": ACCOUNT,
                "irisAppId": env["IRIS_APP_ID"],
                "scopes": ["asset.view", "account.view"],
            },
            timeout=15,
        ).json()
        print(f"    the vault answered {result['callbackStatus']}: {json.dumps(result['callbackResponse'])}")

        step(2, "an operator lists the installed accounts")
        show(requests.get(f"{vault}/v1/accounts", headers=auth, timeout=10))

        step(3, "a backend service asks the vault for a token for the account")
        token = show(requests.get(f"{vault}/v1/accounts/{ACCOUNT}/token", headers=auth, timeout=20))

        step(4, "it calls Trackunit's API (simulated) with the token")
        show(
            requests.get(
                f"{sim}/api/asset/v1/assets", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10
            )
        )

        step(5, "it asks again: served from the cache, no second call to Trackunit")
        show(requests.get(f"{vault}/v1/accounts/{ACCOUNT}/token", headers=auth, timeout=20))
        stats = requests.get(f"{sim}/_sim/stats", timeout=5).json()
        print(f"    token requests Trackunit received in all: {stats['token_requests']}")

        step(6, "a scope outside the manifest is refused without calling Trackunit")
        show(
            requests.get(
                f"{vault}/v1/accounts/{ACCOUNT}/token",
                params={"scope": "account.user.manage"},
                headers=auth,
                timeout=20,
            )
        )
        print("\ndone: install → vault → token → API, all offline.")
        return 0
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
