"""The service as production runs it: gunicorn per the Procfile, 4 worker processes sharing one Redis.

The stampede tests send 128 concurrent requests for a cold account and count what reached
Trackunit (the simulator); the start-up tests check that a bad configuration stops the master.
"""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from core import tunables
from tests.support.constants import ACCOUNT, API_KEY, APP_ID, APP_SCOPES, VAULT_KEY
from tests.support.gunicorn import GunicornServer
from tests.support.redis_server import free_port

CONCURRENCY = 128
WORKERS = 4


# Helpers ---------------------------------------------------------------------------------------


def stampede(url: str, headers: dict, n: int = CONCURRENCY) -> list[tuple[int, dict, dict]]:
    """`n` GETs released together from `n` threads; (status, JSON body, headers) of each."""
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait(timeout=30)
        response = requests.get(url, headers=headers, timeout=40)
        return response.status_code, response.json(), dict(response.headers)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def token_url(server: GunicornServer, account_id: str = ACCOUNT) -> str:
    return f"{server.url}/v1/accounts/{account_id}/token"


def valid_env() -> dict[str, str]:
    """A complete configuration (nothing is contacted before the configuration is checked)."""
    return {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "VAULT_KEY": VAULT_KEY,
        "API_KEYS": f"ops:{API_KEY}",
        "IRIS_APP_ID": APP_ID,
        "APP_SCOPES": APP_SCOPES,
    }


# The stampede ---------------------------------------------------------------------------------


def test_cold_stampede_makes_one_trackunit_call(installer, gunicorn, client, sim, auth_headers):
    installer.install()
    sim.configure(delay=0.5)  # the fetch is slow enough for every request to find it in flight
    server = gunicorn()
    results = stampede(token_url(server), auth_headers)
    assert [status for status, _, _ in results] == [200] * CONCURRENCY, [b for s, b, _ in results if s != 200][:3]
    assert len({body["access_token"] for _, body, _ in results}) == 1
    assert sim.token_requests == 1
    # Warm: more requests are cache hits in every worker.
    again = stampede(token_url(server), auth_headers, 32)
    assert {body["access_token"] for _, body, _ in again} == {results[0][1]["access_token"]}
    assert sim.token_requests == 1


def test_cold_stampede_while_trackunit_fails_makes_one_fetch(installer, gunicorn, client, sim, auth_headers):
    installer.install()
    sim.configure(fail_status=503, delay=0.2)
    server = gunicorn()
    results = stampede(token_url(server), auth_headers)
    assert [status for status, _, _ in results] == [503] * CONCURRENCY
    assert {body["error"]["code"] for _, body, _ in results} == {"auth_unavailable"}
    assert all(int(headers["Retry-After"]) >= 1 for _, _, headers in results)
    # One fetch's attempts, not one per request.
    assert sim.token_requests == 1 + tunables.TRACKUNIT_RETRIES


# The production entry point refusing a bad configuration ------------------------------------------


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("VAULT_KEY", None, "configuration error: VAULT_KEY is missing"),
        ("VAULT_KEY", base64.b64encode(b"k" * 16).decode(), "configuration error: VAULT_KEY must be 32 bytes"),
        ("VAULT_KEY", "n0t-base64!!", "configuration error: VAULT_KEY"),
        ("API_KEYS", None, "configuration error: API_KEYS is missing"),
        # Production keeps /metrics closed unless told otherwise (`make run` opens it and says so).
        ("METRICS_TOKEN", None, "configuration error: METRICS_TOKEN is missing: /metrics would be open to anyone"),
    ],
)
def test_bad_configuration_stops_gunicorn_with_one_line(variable, value, expected):
    server = GunicornServer(valid_env(), workers=WORKERS)
    if value is None:
        server.env.pop(variable, None)  # also when the developer's own environment sets it
    else:
        server.env[variable] = value
    with pytest.raises(RuntimeError, match="gunicorn exited"):
        server.start()  # raises as soon as the process has exited; a started server fails the test
    returncode = server.process.returncode
    output = server.log()
    server.stop()
    assert returncode != 0
    lines = [line for line in output.splitlines() if "configuration error" in line]
    assert len(lines) == 1, output
    assert expected in lines[0]
    if value:
        assert value not in output  # the bad value itself is never printed
    assert "Booting worker" not in output  # stopped in the master, before any worker


def test_a_request_makes_one_log_line_the_apps_own(gunicorn, auth_headers):
    """gunicorn's access log is off by default: the app's JSON line is the request's only line."""
    server = gunicorn(workers=1)
    for n in range(3):
        assert requests.get(f"{server.url}/healthz", headers={"X-Request-ID": f"one-line-{n}"}, timeout=10).ok
    assert requests.get(f"{server.url}/v1/accounts", headers=auth_headers, timeout=10).ok
    server.stop()
    lines = server.log().splitlines()
    assert all(len([line for line in lines if f'"one-line-{n}"' in line]) == 1 for n in range(3))
    assert len([line for line in lines if "/v1/accounts" in line]) == 1
