"""Install callbacks sharing one identity token, against the service as production runs it.

gunicorn per the Procfile with 4 workers, a real redis-server, the simulator over real HTTP.
The identity tokens have no `jti` unless a test says so: RS256 is deterministic, so equal
claims sign to byte-identical tokens, as an issuer that mints one token a second (or reuses
one for its lifetime) sends them.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from simulator import create_simulator, serve_in_thread
from tests.conftest import API_KEY, APP_ID, APP_SCOPES, VAULT_KEY
from tests.support.flows import wait_for
from tests.support.gunicorn import GunicornServer

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WORKERS = 4


@pytest.fixture(scope="module")
def stack(redis_server, signing_key):
    """(simulator state, simulator server, gunicorn) shared by the module; tests use their own account ids."""
    sim_app = create_simulator(signing_key=signing_key)
    sim_server = serve_in_thread(sim_app, log_requests=False)
    env = {
        "REDIS_URL": redis_server.url, "VAULT_KEY": VAULT_KEY, "API_KEYS": f"ops:{API_KEY}", "IRIS_APP_ID": APP_ID,
        "APP_SCOPES": APP_SCOPES, "TRACKUNIT_TOKEN_URL": f"{sim_server.url}/apptoken",
        "TRACKUNIT_JWKS_URL": f"{sim_server.url}/api/marketplace/jwks", "TRACKUNIT_API_URL": sim_server.url,
        "KEY_PREFIX": "gid",
    }
    server = GunicornServer(env, workers=WORKERS).start()
    yield sim_app.extensions["simulator"], sim_server, server
    server.stop()
    sim_server.shutdown()


@pytest.fixture
def sim(stack, redis_client):  # redis_client: a running, empty Redis for each test
    stack[0].reset()
    return stack[0]


@pytest.fixture
def vault(stack) -> GunicornServer:
    return stack[2]


def message(sim, account_id: str, **fields) -> dict:
    creds = sim.add_account(account_id, ("asset.view", "account.view"), APP_ID)
    return {"type": "INSTALLED", "irisAppId": APP_ID, "accountId": account_id,
            "clientId": creds["clientId"], "clientSecret": creds["clientSecret"], **fields}


def post(vault, body, token: str, *, data: str | None = None) -> requests.Response:
    return requests.post(f"{vault.url}/appinstall", data=json.dumps(body) if data is None else data,
                         headers={"Trackunit-Identity": token, "Content-Type": "application/json"}, timeout=15)


def token_of(vault, account_id: str, **params) -> requests.Response:
    return requests.get(f"{vault.url}/v1/accounts/{account_id}/token", params=params, headers=AUTH, timeout=20)


def account(vault, account_id: str) -> dict:
    response = requests.get(f"{vault.url}/v1/accounts/{account_id}", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def keyspace(r) -> dict[bytes, bytes]:
    return {key: r.dump(key) for key in r.keys("gid:account:*")}


def test_two_accounts_installed_through_the_simulator_with_one_token(stack, sim, vault):
    """`/_sim/install` as `simulator install --no-jti --no-account-claims --identity-token` drives it."""
    _, sim_server, _ = stack
    token = sim.identity_token({}, jti=False)
    results = []
    for account_id in ("gu-two-a", "gu-two-b"):
        answer = requests.post(f"{sim_server.url}/_sim/install", timeout=30, json={
            "callbackUrl": f"{vault.url}/appinstall", "accountId": account_id, "irisAppId": APP_ID,
            "identityToken": token})
        assert answer.status_code == 200, answer.text
        results.append(answer.json())
    assert [r["identityToken"] for r in results] == [token, token]
    assert [r["callbackStatus"] for r in results] == [200, 200], results
    for result in results:
        assert token_of(vault, result["accountId"]).status_code == 200
    assert sim.token_requests_by_client == {r["clientId"]: 1 for r in results}


def test_the_simulator_signs_without_jti_or_account_claims_on_request(stack, sim, vault):
    _, sim_server, _ = stack
    answers = [requests.post(f"{sim_server.url}/_sim/install", timeout=30, json={
        "callbackUrl": f"{vault.url}/appinstall", "accountId": f"gu-minimal-{i}", "irisAppId": APP_ID,
        "jti": False, "accountClaims": False}).json() for i in range(2)]
    assert [a["callbackStatus"] for a in answers] == [200, 200], answers
    claims = [jwt.decode(  # the claims the simulator signed, read without verifying
        a["identityToken"], options={"verify_signature": False}) for a in answers]
    assert all(set(c) == {"iss", "iat", "exp"} for c in claims), claims


def test_a_reinstall_with_new_credentials_and_the_same_token(sim, vault):
    token = sim.identity_token({"accountId": "gu-re"}, jti=False)
    assert post(vault, message(sim, "gu-re"), token).json()["replaced"] is False
    assert token_of(vault, "gu-re").status_code == 200
    again = message(sim, "gu-re")
    answer = post(vault, again, token)
    assert answer.status_code == 200 and answer.json() == {"status": "stored", "account_id": "gu-re", "replaced": True}
    assert token_of(vault, "gu-re").status_code == 200  # every worker dropped the old token: fetched anew
    assert sim.last_token_request["client_id"] == again["clientId"]


def test_20_concurrent_installs_for_20_accounts_with_one_token(sim, vault):
    token = sim.identity_token({}, jti=False)
    bodies = [message(sim, f"gu-many-{i:02d}") for i in range(20)]
    barrier = threading.Barrier(len(bodies))

    def install(body):
        barrier.wait(timeout=10)
        return post(vault, body, token)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        answers = list(pool.map(install, bodies))
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(200, "stored")] * 20
    listed = requests.get(f"{vault.url}/v1/accounts", headers=AUTH, timeout=5).json()["accounts"]
    assert sorted(a["account_id"] for a in listed) == [b["accountId"] for b in bodies]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        tokens = list(pool.map(lambda b: token_of(vault, b["accountId"]), bodies))
    assert [t.status_code for t in tokens] == [200] * 20
    assert sim.token_requests == 20
    assert sorted(sim.token_requests_by_client) == sorted(b["clientId"] for b in bodies)


def test_a_jti_carries_one_message_and_its_retries(sim, vault, redis_client):
    token, body = sim.identity_token({}), message(sim, "gu-jti")
    assert post(vault, body, token).status_code == 200
    retry = post(vault, body, token, data=json.dumps(dict(reversed(list(body.items()))), indent=2))
    assert retry.status_code == 200 and retry.json()["status"] == "stored"
    before = keyspace(redis_client)
    forged = post(vault, {**body, "clientSecret": "attacker-secret"}, token)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_identity"
    assert keyspace(redis_client) == before


def test_an_older_token_after_a_reinstall_is_stale(sim, vault, redis_client):
    now = int(time.time())
    old_token, old_body = sim.identity_token({"iat": now - 60}, jti=False), message(sim, "gu-stale")
    assert post(vault, old_body, old_token).status_code == 200
    new_body = message(sim, "gu-stale")
    assert post(vault, new_body, sim.identity_token({"iat": now}, jti=False)).json()["replaced"] is True
    before = keyspace(redis_client)
    stale = post(vault, old_body, old_token)
    assert stale.status_code == 200 and stale.json() == {"status": "stale", "account_id": "gu-stale"}
    assert keyspace(redis_client) == before
    assert token_of(vault, "gu-stale").status_code == 200
    assert sim.last_token_request["client_id"] == new_body["clientId"]


def test_uninstalled_keeps_working_credentials_and_revokes_refused_ones(sim, vault):
    token = sim.identity_token({}, jti=False)
    for account_id in ("gu-un-works", "gu-un-refused"):
        assert post(vault, message(sim, account_id), token).status_code == 200
        assert token_of(vault, account_id).status_code == 200
    sim.revoke("gu-un-refused")
    calls = sim.token_requests
    for account_id in ("gu-un-works", "gu-un-refused"):
        answer = post(vault, {"type": "UNINSTALLED", "irisAppId": APP_ID, "accountId": account_id}, token)
        assert answer.status_code == 202 and answer.json() == {"status": "verifying", "account_id": account_id}
    wait_for(lambda: account(vault, "gu-un-refused")["status"] == "revoked")
    wait_for(lambda: sim.token_requests == calls + 2)
    assert account(vault, "gu-un-works")["status"] == "active"
    assert token_of(vault, "gu-un-works").status_code == 200
    refused = token_of(vault, "gu-un-refused")
    assert refused.status_code == 410 and refused.json()["error"]["code"] == "credentials_revoked"


def test_an_uninstall_as_the_simulator_sends_it_revokes_and_keeps_the_record(stack, sim, vault):
    """`simulator install --type UNINSTALLED`: the client is refused from now on, the message has no credentials."""
    _, sim_server, _ = stack

    def send(kind: str) -> dict:
        answer = requests.post(f"{sim_server.url}/_sim/install", timeout=30, json={
            "callbackUrl": f"{vault.url}/appinstall", "accountId": "gu-sim-un", "irisAppId": APP_ID, "type": kind})
        assert answer.status_code == 200, answer.text
        return answer.json()

    installed = send("INSTALLED")
    assert token_of(vault, "gu-sim-un").status_code == 200
    uninstalled = send("UNINSTALLED")
    assert uninstalled["callbackStatus"] == 202 and "clientSecret" not in uninstalled
    assert uninstalled["callbackResponse"] == {"status": "verifying", "account_id": "gu-sim-un"}
    wait_for(lambda: account(vault, "gu-sim-un")["status"] == "revoked")
    assert sim.last_token_request["client_id"] == installed["clientId"]
