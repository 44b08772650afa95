"""GET /v1/accounts/<id>/token when things go wrong: Trackunit refusing, failing, hanging, unreachable; Redis stopped.

Trackunit is the simulator over real HTTP (faults injected with `sim.configure`), Redis a real
redis-server that a test stops and starts. Every assertion is on answers and on counts of calls.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import requests
from flask import request as flask_request

from core import tunables
from tests.support.constants import ACCOUNT
from tests.support.flows import get_token, ok_token
from tests.support.installer import Installer
from tests.support.redis_server import free_port
from vault.layout import KeySpace

COLD = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
PREFIX = "test"
ATTEMPTS = 1 + tunables.TRACKUNIT_RETRIES
REVOKED_RETRY_AFTER = 2


# Helpers ---------------------------------------------------------------------------------------


def assert_error(response, status: int, code: str, *, retry_after: bool = False) -> str:
    """Check the JSON error; return its message. `retry_after`: a positive whole Retry-After is required."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code
    if retry_after:
        assert response.headers.get("Retry-After", "").isdigit(), dict(response.headers)
        assert int(response.headers["Retry-After"]) >= 1
    assert "access_token" not in response.get_json()
    return response.get_json()["error"]["message"]


def token_keys(r, account_id: str = ACCOUNT) -> list[bytes]:
    return r.keys(KeySpace(PREFIX).key_for(account_id, "token", "*"))


def account_status(client, headers, account_id: str = ACCOUNT) -> str:
    response = client.get(f"/v1/accounts/{account_id}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["status"]


def unrevoke_at_simulator(sim_server, creds: dict) -> None:
    """Trackunit accepts the same client again: re-create the account's client with the same id and secret."""
    response = requests.post(
        f"{sim_server.url}/_sim/accounts",
        timeout=10,
        json={
            "accountId": creds["accountId"],
            "clientId": creds["clientId"],
            "clientSecret": creds["clientSecret"],
            "scopes": ["asset.view", "account.view"],
        },
    )
    assert response.status_code == 201, response.text


def revoke_at_simulator(sim_server, account_id: str = ACCOUNT) -> None:
    response = requests.post(f"{sim_server.url}/_sim/accounts/{account_id}/revoke", timeout=10)
    assert response.status_code == 200, response.text


def wait_past_cool_down(response) -> None:
    """Sleep until the 410's cool-down is over (Retry-After, rounded up by the service)."""
    time.sleep(int(response.headers["Retry-After"]) + 0.1)


class DroppingListener:
    """A TCP port that accepts each connection, reads the request and hangs up without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/apptoken"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


# Revocation (uninstall) ----------------------------------------------------------------------------


@pytest.fixture
def revocable(make_app):
    """An app whose revocation cool-down is short (REVOKED_RETRY_AFTER=2)."""
    return make_app(REVOKED_RETRY_AFTER=str(REVOKED_RETRY_AFTER)).test_client()


def revoke_through_the_service(client, headers, sim_server, sim, redis_client):
    """Cache a token, uninstall at Trackunit, and let a fetch hit invalid_client: the first 410."""
    ok_token(client, headers)
    ok_token(client, headers, scope="asset.view")
    assert len(token_keys(redis_client)) == 2
    revoke_at_simulator(sim_server)
    calls = sim.token_requests
    response = get_token(client, headers, force_refresh="true")
    assert_error(response, 410, "credentials_revoked", retry_after=True)
    assert sim.token_requests == calls + 1
    return response


def test_invalid_client_revokes_the_account(revocable, auth_headers, sim, sim_server, redis_client):
    creds = Installer(sim, revocable).install(ACCOUNT)
    first = revoke_through_the_service(revocable, auth_headers, sim_server, sim, redis_client)
    assert account_status(revocable, auth_headers) == "revoked"
    assert token_keys(redis_client) == []
    calls = sim.token_requests
    # During the cool-down nobody asks Trackunit: any scope, cached or forced.
    for params in ({}, {"scope": "asset.view"}, {"force_refresh": "true"}, {"scope": "account.view asset.view"}):
        assert_error(get_token(revocable, auth_headers, **params), 410, "credentials_revoked", retry_after=True)
    assert sim.token_requests == calls
    # Trackunit takes the client back; the service still waits out the cool-down...
    unrevoke_at_simulator(sim_server, creds)
    assert_error(get_token(revocable, auth_headers), 410, "credentials_revoked", retry_after=True)
    assert sim.token_requests == calls
    # ...then one request probes, succeeds, and the account is active again.
    wait_past_cool_down(first)
    body = ok_token(revocable, auth_headers)
    assert sim.token_requests == calls + 1
    assert account_status(revocable, auth_headers) == "active"
    assert ok_token(revocable, auth_headers)["access_token"] == body["access_token"]
    assert sim.token_requests == calls + 1


def test_a_failed_probe_starts_a_new_cool_down(revocable, auth_headers, sim, sim_server, redis_client):
    Installer(sim, revocable).install(ACCOUNT)
    first = revoke_through_the_service(revocable, auth_headers, sim_server, sim, redis_client)
    wait_past_cool_down(first)
    calls = sim.token_requests
    assert_error(get_token(revocable, auth_headers), 410, "credentials_revoked", retry_after=True)
    assert sim.token_requests == calls + 1  # exactly one probe
    for _ in range(3):
        assert_error(get_token(revocable, auth_headers), 410, "credentials_revoked", retry_after=True)
    assert sim.token_requests == calls + 1
    assert account_status(revocable, auth_headers) == "revoked"


def test_reinstall_makes_a_revoked_account_active_at_once(revocable, auth_headers, sim, sim_server, redis_client):
    Installer(sim, revocable).install(ACCOUNT)
    revoke_through_the_service(revocable, auth_headers, sim_server, sim, redis_client)
    assert account_status(revocable, auth_headers) == "revoked"
    fresh = Installer(sim, revocable).install(ACCOUNT)  # the verified callback, inside the cool-down
    assert account_status(revocable, auth_headers) == "active"
    calls = sim.token_requests
    ok_token(revocable, auth_headers)
    assert sim.token_requests == calls + 1
    assert sim.last_token_request["client_id"] == fresh["clientId"]


def test_cool_down_lasts_the_whole_revoked_retry_after(make_app, auth_headers, sim, sim_server, redis_client):
    """REVOKED_RETRY_AFTER=1: a request 0.3 s after the revocation is inside the cool-down, whatever the clock's
    fraction of a second was (revoking at x.85 s must not end the cool-down at x+1.0 s)."""
    client = make_app(REVOKED_RETRY_AFTER="1").test_client()
    Installer(sim, client).install(ACCOUNT)
    ok_token(client, auth_headers)
    revoke_at_simulator(sim_server)
    while not 0.80 <= time.time() % 1 < 0.85:
        time.sleep(0.005)
    assert_error(get_token(client, auth_headers, force_refresh="true"), 410, "credentials_revoked")
    calls = sim.token_requests
    time.sleep(0.3)
    assert_error(get_token(client, auth_headers), 410, "credentials_revoked", retry_after=True)
    assert sim.token_requests == calls, "Trackunit was asked again inside the revocation cool-down"


# Trackunit failing -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_retryable_answers_are_retried_then_503(installer, client, auth_headers, sim, redis_client, status):
    installer.install(ACCOUNT)
    sim.configure(fail_status=status)
    response = get_token(client, auth_headers)
    assert_error(response, 503, "auth_unavailable", retry_after=True)
    assert sim.token_requests == ATTEMPTS
    assert token_keys(redis_client) == []


def test_retries_recover_from_a_transient_failure(installer, client, auth_headers, sim):
    installer.install(ACCOUNT)
    sim.configure(fail_status=503, fail_count=tunables.TRACKUNIT_RETRIES)
    ok_token(client, auth_headers)
    assert sim.token_requests == ATTEMPTS


def test_retry_after_is_honoured_between_attempts(installer, client, auth_headers, sim, sim_app):
    arrivals: list[float] = []

    @sim_app.before_request
    def note_arrival():
        if flask_request.path == "/apptoken":
            arrivals.append(time.monotonic())

    installer.install(ACCOUNT)
    sim.configure(fail_status=429, retry_after="1")
    response = get_token(client, auth_headers)
    assert_error(response, 503, "auth_unavailable")
    assert response.headers["Retry-After"] == "1"  # Trackunit's own Retry-After reaches the caller
    assert sim.token_requests == ATTEMPTS == len(arrivals)
    # Each retry waited for Trackunit's Retry-After (a lower bound: it cannot be met by being slow).
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert all(gap >= 0.95 for gap in gaps), gaps


def test_hanging_trackunit_still_ends_in_503(installer, client, auth_headers, sim, vault_server, redis_client):
    """The simulator sleeps past the read timeout on every attempt; over real HTTP (client timeout 40 s, so a
    hang fails instead of blocking) the request still ends, after a bounded number of attempts."""
    installer.install(ACCOUNT)
    sim.configure(delay=tunables.TRACKUNIT_READ_TIMEOUT + 10)
    try:
        response = requests.get(f"{vault_server.url}/v1/accounts/{ACCOUNT}/token", headers=auth_headers, timeout=40)
        calls = sim.token_requests
    finally:
        sim.reset()  # ends the simulator's pending sleeps (and zeroes its counters)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "auth_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert calls == ATTEMPTS
    assert token_keys(redis_client) == []


def test_unreachable_trackunit_is_503(make_app, auth_headers, sim):
    client = make_app(TRACKUNIT_TOKEN_URL=f"http://127.0.0.1:{free_port()}/apptoken").test_client()
    Installer(sim, client).install(ACCOUNT)
    assert_error(get_token(client, auth_headers), 503, "auth_unavailable", retry_after=True)
    assert sim.token_requests == 0


def test_connection_dropped_without_answer_is_retried_then_503(make_app, auth_headers, sim):
    listener = DroppingListener()
    try:
        client = make_app(TRACKUNIT_TOKEN_URL=listener.url).test_client()
        Installer(sim, client).install(ACCOUNT)
        assert_error(get_token(client, auth_headers), 503, "auth_unavailable", retry_after=True)
        assert listener.connections == ATTEMPTS
    finally:
        listener.close()


def test_cached_token_is_served_while_trackunit_is_down(installer, client, auth_headers, sim):
    installer.install(ACCOUNT)
    installer.install(COLD)
    token = ok_token(client, auth_headers)["access_token"]
    sim.configure(fail_status=503)
    calls = sim.token_requests
    for _ in range(3):
        assert ok_token(client, auth_headers)["access_token"] == token
    assert sim.token_requests == calls
    # A cold account (and a cold scope set) cannot be served.
    assert_error(get_token(client, auth_headers, COLD), 503, "auth_unavailable", retry_after=True)
    assert sim.token_requests == calls + ATTEMPTS
    assert_error(get_token(client, auth_headers, scope="asset.view"), 503, "auth_unavailable", retry_after=True)


# Unexpected answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour, expected_in_message",
    [
        ({"fail_status": 400, "fail_body": {"error": "unsupported_grant_type"}}, "unsupported_grant_type"),
        ({"fail_status": 403, "fail_body": {"error": "access_denied", "error_description": "no"}}, "access_denied"),
        ({"fail_status": 400, "fail_body": "<html>Bad Request</html>"}, "400"),
        ({"fail_status": 302, "fail_body": {}}, "302"),
        ({"malformed": True}, "access_token"),
        ({"fail_status": 200, "fail_body": "<html>maintenance</html>"}, "JSON"),
        ({"fail_status": 200, "fail_body": {"access_token": "x", "token_type": "mac", "expires_in": 60}}, "Bearer"),
        ({"fail_status": 200, "fail_body": {"access_token": "x", "expires_in": -1}}, "expires_in"),
    ],
)
def test_unexpected_answers_are_502(installer, client, auth_headers, sim, redis_client, behaviour, expected_in_message):
    creds = installer.install(ACCOUNT)
    sim.configure(**behaviour)
    response = get_token(client, auth_headers)
    message = assert_error(response, 502, "auth_error")
    assert expected_in_message in message
    assert creds["clientSecret"] not in response.get_data(as_text=True)
    assert sim.token_requests == 1  # not retried
    assert token_keys(redis_client) == []


def test_auth_error_never_echoes_the_secret(installer, client, auth_headers, sim):
    creds = installer.install(ACCOUNT)
    sim.configure(
        fail_status=400,
        fail_body={
            "error": "invalid_request",
            "error_description": f"client_secret {creds['clientSecret']} is malformed",
        },
    )
    response = get_token(client, auth_headers)
    message = assert_error(response, 502, "auth_error")
    assert "invalid_request" in message
    assert creds["clientSecret"] not in response.get_data(as_text=True)


# Redis -------------------------------------------------------------------------------------------------


def test_redis_unreachable_is_503(make_app, auth_headers, sim):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    assert_error(get_token(client, auth_headers), 503, "store_unavailable", retry_after=True)
    assert sim.token_requests == 0


def test_redis_stopped_and_started_mid_run(installer, client, auth_headers, sim, redis_server, redis_client):
    installer.install(ACCOUNT)
    token = ok_token(client, auth_headers)["access_token"]
    redis_client.save()  # the restarted server loads this snapshot: same account, same cached token
    dump = os.path.join(redis_server.dir, "dump.rdb")
    redis_server.stop()
    try:
        for params in ({}, {"force_refresh": "true"}, {"scope": "asset.view"}):
            assert_error(get_token(client, auth_headers, **params), 503, "store_unavailable", retry_after=True)
        assert client.get(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 503
    finally:
        redis_server.start()
        os.remove(dump)  # later restarts in this session start empty
    calls = sim.token_requests
    # The same app, without a restart: the cached token, then a fresh fetch written with its scripts.
    assert ok_token(client, auth_headers)["access_token"] == token
    assert sim.token_requests == calls
    refreshed = ok_token(client, auth_headers, force_refresh="true")["access_token"]
    assert refreshed != token
    assert sim.token_requests == calls + 1
    assert ok_token(client, auth_headers)["access_token"] == refreshed


def test_a_retry_after_beyond_the_budget_is_not_retried_early(installer, client, sim, auth_headers):
    """Trackunit asks for 60 s: the vault does not come back after 2 s, it tells the caller to wait 60 s."""
    installer.install()
    sim.configure(fail_status=429, retry_after="60")
    response = get_token(client, auth_headers)
    assert_error(response, 503, "auth_unavailable", retry_after=True)
    assert response.headers["Retry-After"] == "60"
    assert sim.token_requests == 1
