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
from tests.support.constants import API_KEY, APP_ID, service_env
from tests.support.flows import wait_for
from tests.support.gunicorn import GunicornServer
from tests.support.installer import Installer

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WORKERS = 4


@pytest.fixture(scope="module")
def stack(redis_server, signing_key):
    """(simulator state, simulator server, gunicorn) shared by the module; tests use their own account ids."""
    sim_app = create_simulator(signing_key=signing_key)
    sim_server = serve_in_thread(sim_app, log_requests=False)
    env = service_env(redis_server.url, sim_server.url, key_prefix="gid")
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


@pytest.fixture
def installer(stack, sim, vault) -> Installer:
    """Install as Trackunit does, to the gunicorn vault: signed here, or by the simulator (`through_simulator`)."""
    return Installer(sim, vault.url, sim_url=stack[1].url)


def token_of(vault, account_id: str, **params) -> requests.Response:
    return requests.get(f"{vault.url}/v1/accounts/{account_id}/token", params=params, headers=AUTH, timeout=20)


def account(vault, account_id: str) -> dict:
    response = requests.get(f"{vault.url}/v1/accounts/{account_id}", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def keyspace(r) -> dict[bytes, bytes]:
    return {key: r.dump(key) for key in r.keys("gid:account:*")}


def test_two_accounts_installed_through_the_simulator_with_one_token(installer, sim, vault):
    """`/_sim/install` as `simulator install --no-jti --no-account-claims --identity-token` drives it."""
    token = sim.identity_token({}, jti=False)
    results = [installer.through_simulator(account_id, identityToken=token) for account_id in ("gu-two-a", "gu-two-b")]
    assert [r["identityToken"] for r in results] == [token, token]
    assert [r["callbackStatus"] for r in results] == [200, 200], results
    for result in results:
        assert token_of(vault, result["accountId"]).status_code == 200
    assert sim.token_requests_by_client == {r["clientId"]: 1 for r in results}


def test_the_simulator_signs_without_jti_or_account_claims_on_request(installer):
    answers = [installer.through_simulator(f"gu-minimal-{i}", jti=False, accountClaims=False) for i in range(2)]
    assert [a["callbackStatus"] for a in answers] == [200, 200], answers
    claims = [
        jwt.decode(  # the claims the simulator signed, read without verifying
            a["identityToken"], options={"verify_signature": False}
        )
        for a in answers
    ]
    assert all(set(c) == {"iss", "iat", "exp"} for c in claims), claims


def test_a_reinstall_with_new_credentials_and_the_same_token(installer, sim, vault):
    token = sim.identity_token({"accountId": "gu-re"}, jti=False)
    assert installer.post(installer.message("gu-re"), token).json()["replaced"] is False
    assert token_of(vault, "gu-re").status_code == 200
    again = installer.message("gu-re")
    answer = installer.post(again, token)
    assert answer.status_code == 200 and answer.json() == {"status": "stored", "account_id": "gu-re", "replaced": True}
    assert token_of(vault, "gu-re").status_code == 200  # every worker dropped the old token: fetched anew
    assert sim.last_token_request["client_id"] == again["clientId"]


def test_20_concurrent_installs_for_20_accounts_with_one_token(installer, sim, vault):
    token = sim.identity_token({}, jti=False)
    bodies = [installer.message(f"gu-many-{i:02d}") for i in range(20)]
    barrier = threading.Barrier(len(bodies))

    def install(body):
        barrier.wait(timeout=10)
        return installer.post(body, token)

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


def test_a_jti_carries_one_message_and_its_retries(installer, sim, vault, redis_client):
    token, body = sim.identity_token({}), installer.message("gu-jti")
    assert installer.post(body, token).status_code == 200
    retry = installer.post(body, token, data=json.dumps(dict(reversed(list(body.items()))), indent=2))
    assert retry.status_code == 200 and retry.json()["status"] == "stored"
    before = keyspace(redis_client)
    forged = installer.post({**body, "clientSecret": "attacker-secret"}, token)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_identity"
    assert keyspace(redis_client) == before


def test_an_older_token_after_a_reinstall_is_stale(installer, sim, vault, redis_client):
    now = int(time.time())
    old_token, old_body = sim.identity_token({"iat": now - 60}, jti=False), installer.message("gu-stale")
    assert installer.post(old_body, old_token).status_code == 200
    new_body = installer.message("gu-stale")
    assert installer.post(new_body, sim.identity_token({"iat": now}, jti=False)).json()["replaced"] is True
    before = keyspace(redis_client)
    stale = installer.post(old_body, old_token)
    assert stale.status_code == 200 and stale.json() == {"status": "stale", "account_id": "gu-stale"}
    assert keyspace(redis_client) == before
    assert token_of(vault, "gu-stale").status_code == 200
    assert sim.last_token_request["client_id"] == new_body["clientId"]


def test_uninstalled_keeps_working_credentials_and_revokes_refused_ones(installer, sim, vault):
    token = sim.identity_token({}, jti=False)
    for account_id in ("gu-un-works", "gu-un-refused"):
        assert installer.post(installer.message(account_id), token).status_code == 200
        assert token_of(vault, account_id).status_code == 200
    sim.revoke("gu-un-refused")
    calls = sim.token_requests
    for account_id in ("gu-un-works", "gu-un-refused"):
        answer = installer.post({"type": "UNINSTALLED", "irisAppId": APP_ID, "accountId": account_id}, token)
        assert answer.status_code == 202 and answer.json() == {"status": "verifying", "account_id": account_id}
    wait_for(lambda: account(vault, "gu-un-refused")["status"] == "revoked")
    wait_for(lambda: sim.token_requests == calls + 2)
    assert account(vault, "gu-un-works")["status"] == "active"
    assert token_of(vault, "gu-un-works").status_code == 200
    refused = token_of(vault, "gu-un-refused")
    assert refused.status_code == 410 and refused.json()["error"]["code"] == "credentials_revoked"


def test_an_uninstall_as_the_simulator_sends_it_revokes_and_keeps_the_record(installer, sim, vault):
    """`simulator install --type UNINSTALLED`: the client is refused from now on, the message has no credentials."""
    installed = installer.through_simulator("gu-sim-un", type="INSTALLED")
    assert token_of(vault, "gu-sim-un").status_code == 200
    uninstalled = installer.through_simulator("gu-sim-un", type="UNINSTALLED", callback_status=202)
    assert uninstalled["callbackStatus"] == 202 and "clientSecret" not in uninstalled
    assert uninstalled["callbackResponse"] == {"status": "verifying", "account_id": "gu-sim-un"}
    wait_for(lambda: account(vault, "gu-sim-un")["status"] == "revoked")
    assert sim.last_token_request["client_id"] == installed["clientId"]
