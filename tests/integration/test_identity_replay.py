"""What one Trackunit-Identity token may carry, for every token shape a real issuer could send.

Trackunit documents none of the identity's claims. An issuer may put a `jti` in every
token, or none; may name the account, or not; may reuse one token for its whole life.
RS256 is deterministic, so tokens without a `jti` and with the same claims are
byte-identical. A verified token with a valid body is stored whatever other messages
carried it; only a `jti` binds a token to one message; an older `iat` never replaces newer
credentials; `UNINSTALLED` never deletes. Real Redis, the simulator over real HTTP.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from core import metrics, tunables
from tests.support.constants import ACCOUNT, APP_ID
from tests.support.flows import get_token, ok_token, wait_for

OTHER = "0c7d3f0e-1111-4a2b-9c3d-5e6f7a8b9c0d"

# Shapes a real issuer could sign. None of them names the account, so one token fits every account.
SHARED_SHAPES = {
    "iss_iat_exp": {},
    "iss_iat_exp_app": {"irisAppId": APP_ID},
    "without_exp": {"exp": None},
    "without_iat": {"iat": None},
    "iss_only": {"iat": None, "exp": None},
}


# Helpers ---------------------------------------------------------------------------------------


def keyspace(r) -> dict[bytes, bytes]:
    return {key: r.dump(key) for key in r.keys("*")}


def uninstalled(account_id: str = ACCOUNT) -> dict:
    return {"type": "UNINSTALLED", "irisAppId": APP_ID, "accountId": account_id}


def shared_token(sim, shape: dict | None = None, **claims) -> str:
    """A token without a jti: the same claims in the same second give these very bytes again."""
    return sim.identity_token({**(shape or {}), **claims}, jti=False)


def assert_stored(response, *, replaced: bool | None = None) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "stored"
    if replaced is not None:
        assert response.get_json()["replaced"] is replaced


def token_client_id(client, sim, auth_headers, account_id: str) -> str:
    """Fetch a fresh token for the account; the client id Trackunit saw for it."""
    ok_token(client, auth_headers, account_id, force_refresh="true")
    return sim.last_token_request["client_id"]


# One token, many messages -------------------------------------------------------------------------


def test_identical_claims_sign_to_byte_identical_tokens(sim):
    """The premise: without a jti, RS256 gives two callbacks in one second the same token."""
    sim.clock = lambda: 1_800_000_000
    assert shared_token(sim) == shared_token(sim)
    assert sim.identity_token({}) != sim.identity_token({})  # the default carries a unique jti


@pytest.mark.parametrize("shape", SHARED_SHAPES.values(), ids=SHARED_SHAPES.keys())
def test_two_accounts_installed_with_one_token_are_both_stored(installer, shape, client, sim, auth_headers):
    token = shared_token(sim, shape)
    first, second = installer.message(ACCOUNT), installer.message(OTHER)
    assert_stored(installer.post(first, token))
    assert_stored(installer.post(second, token))
    assert token_client_id(client, sim, auth_headers, ACCOUNT) == first["clientId"]
    assert token_client_id(client, sim, auth_headers, OTHER) == second["clientId"]


@pytest.mark.parametrize(
    "shape", [*SHARED_SHAPES.values(), {"accountId": ACCOUNT}], ids=[*SHARED_SHAPES.keys(), "with_account_claim"]
)
def test_a_reinstall_with_new_credentials_and_the_same_token_is_stored(installer, shape, client, sim, auth_headers):
    token = shared_token(sim, shape)
    assert_stored(installer.post(installer.message(), token), replaced=False)
    ok_token(client, auth_headers)
    again = installer.message()  # Trackunit issued new credentials; the old ones no longer work
    assert_stored(installer.post(again, token), replaced=True)
    assert ok_token(client, auth_headers)["access_token"]
    assert sim.last_token_request["client_id"] == again["clientId"]


def test_any_number_of_identical_retries_without_jti_are_stored(installer, client, sim, auth_headers):
    token, body = shared_token(sim), installer.message()
    for _ in range(5):
        assert_stored(installer.post(body, token))
    assert get_token(client, auth_headers).status_code == 200


def test_a_token_without_jti_is_counted_and_logged_once_without_the_token(installer, client, sim, caplog):
    token, body = shared_token(sim), installer.message()
    before = metrics.IDENTITY_WITHOUT_JTI._value.get()
    with caplog.at_level(logging.INFO):
        assert_stored(installer.post(body, token))
    assert metrics.IDENTITY_WITHOUT_JTI._value.get() == before + 1
    lines = [r for r in caplog.records if "replay protection did not apply" in r.getMessage()]
    assert len(lines) == 1 and lines[0].account_id == ACCOUNT
    for record in caplog.records:
        text = record.getMessage() + json.dumps(vars(record), default=str)
        assert token not in text and token.split(".")[2] not in text and body["clientSecret"] not in text


def test_a_token_with_jti_is_not_counted_as_unprotected(installer, client, sim):
    before = metrics.IDENTITY_WITHOUT_JTI._value.get()
    assert_stored(installer.post(installer.message(), sim.identity_token({})))
    assert metrics.IDENTITY_WITHOUT_JTI._value.get() == before


# A jti carries one message ---------------------------------------------------------------------------


def test_the_same_jti_with_another_body_is_refused_and_changes_nothing(installer, client, sim, redis_client):
    token = sim.identity_token({})
    assert_stored(installer.post(installer.message(), token))
    before = keyspace(redis_client)
    for forged in (
        installer.message(clientId="0oaATTACKER000000000", clientSecret="attacker-secret"),
        installer.message(OTHER),
        uninstalled(),
    ):
        response = installer.post(forged, token)
        assert response.status_code == 401, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == "invalid_identity"
        assert keyspace(redis_client) == before


def test_the_same_jti_with_the_same_body_is_a_retry(installer, client, sim, auth_headers):
    token, body = sim.identity_token({"irisAppId": APP_ID, "accountId": ACCOUNT}), installer.message()
    for _ in range(3):
        assert_stored(installer.post(body, token))
    assert get_token(client, auth_headers).status_code == 200


@pytest.mark.parametrize("jti", [True, False], ids=["jti", "no_jti"])
def test_a_reserialised_retry_is_the_same_message(installer, jti, client, sim):
    token, body = sim.identity_token({}, jti=jti), installer.message()
    assert_stored(installer.post(body, token))
    reordered = dict(reversed(list(body.items())))
    assert_stored(installer.post(body, token, data=json.dumps(reordered, indent=4)))
    assert_stored(installer.post(body, token, data=json.dumps(body, separators=(",", ":"))))
    assert_stored(installer.post(body, token, data=json.dumps(body, ensure_ascii=True).replace("-", "\\u002d")))


def test_one_jti_from_two_issuers_binds_separately(installer, client, sim):
    first = sim.identity_token({"iss": "https://issuer-a.example", "jti": "same-jti"})
    second = sim.identity_token({"iss": "https://issuer-b.example", "jti": "same-jti"})
    assert_stored(installer.post(installer.message(ACCOUNT), first))
    assert_stored(installer.post(installer.message(OTHER), second))


def test_the_binding_lives_as_long_as_the_token(installer, client, sim, redis_client):
    def binding_ttls() -> list[int]:
        return [redis_client.ttl(key) for key in redis_client.keys("test:identity:*")]

    assert_stored(installer.post(installer.message("short"), sim.identity_token({}, expires_in=300)))
    (ttl,) = binding_ttls()
    assert 300 < ttl <= 300 + tunables.IDENTITY_LEEWAY
    redis_client.delete(*redis_client.keys("test:identity:*"))
    assert_stored(installer.post(installer.message("long"), sim.identity_token({}, expires_in=30 * 86400)))
    assert binding_ttls()[0] == pytest.approx(tunables.IDENTITY_REPLAY_WINDOW, abs=2)
    redis_client.delete(*redis_client.keys("test:identity:*"))
    assert_stored(installer.post(installer.message("none"), sim.identity_token({"exp": None})))
    assert binding_ttls()[0] == pytest.approx(tunables.IDENTITY_REPLAY_WINDOW, abs=2)


# No rollback by replay -------------------------------------------------------------------------------


@pytest.mark.parametrize("jti", [True, False], ids=["jti", "no_jti"])
def test_an_older_token_after_a_reinstall_is_stale_and_changes_nothing(
    installer, jti, client, sim, redis_client, auth_headers
):
    now = int(time.time())
    old_token, old_body = sim.identity_token({"iat": now - 100}, jti=jti), installer.message()
    assert_stored(installer.post(old_body, old_token))
    new_token, new_body = sim.identity_token({"iat": now}, jti=jti), installer.message()
    assert_stored(installer.post(new_body, new_token), replaced=True)
    ok_token(client, auth_headers)
    before = keyspace(redis_client)
    response = installer.post(old_body, old_token)  # captured, or delayed: Trackunit replaced these since
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"status": "stale", "account_id": ACCOUNT}
    assert {k: v for k, v in keyspace(redis_client).items() if b":identity:" not in k} == {
        k: v for k, v in before.items() if b":identity:" not in k
    }
    assert token_client_id(client, sim, auth_headers, ACCOUNT) == new_body["clientId"]


def test_stale_is_audited(installer, client, sim, caplog):
    now = int(time.time())
    old_token, old_body = shared_token(sim, iat=now - 50), installer.message()
    assert_stored(installer.post(old_body, old_token))
    assert_stored(installer.post(installer.message(), shared_token(sim, iat=now)))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert installer.post(old_body, old_token).get_json()["status"] == "stale"
    assert [r.getMessage() for r in caplog.records if r.name == "itv.audit"] == ["install_stale"]


def test_an_older_token_for_another_account_is_stored(installer, client, sim):
    now = int(time.time())
    assert_stored(installer.post(installer.message(ACCOUNT), shared_token(sim, iat=now)))
    assert_stored(installer.post(installer.message(OTHER), shared_token(sim, iat=now - 100)))


def test_a_token_without_iat_replaces_credentials_and_the_newest_iat_is_kept(installer, client, sim, auth_headers):
    now = int(time.time())
    first = shared_token(sim, iat=now - 10)
    assert_stored(installer.post(installer.message(), first))
    without_iat = installer.message()
    assert_stored(installer.post(without_iat, shared_token(sim, iat=None)), replaced=True)
    older = installer.post({**without_iat, "clientSecret": "older-secret"}, shared_token(sim, iat=now - 20))
    assert older.get_json()["status"] == "stale"
    assert token_client_id(client, sim, auth_headers, ACCOUNT) == without_iat["clientId"]


# UNINSTALLED never deletes -----------------------------------------------------------------------------


@pytest.fixture
def installed(installer, client, sim, auth_headers):
    """ACCOUNT installed, with a cached token."""
    assert_stored(installer.post(installer.message(), sim.identity_token({})))
    return ok_token(client, auth_headers)["access_token"]


def test_uninstalled_with_working_credentials_keeps_the_account_active(
    installer, installed, client, sim, redis_client, auth_headers
):
    calls = sim.token_requests
    response = installer.post(uninstalled(), shared_token(sim))
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json() == {"status": "verifying", "account_id": ACCOUNT}
    wait_for(lambda: sim.token_requests == calls + 1)  # one verification fetch
    wait_for(lambda: any(b":token:" in key for key in redis_client.keys("*")))
    account = client.get(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).get_json()
    assert account["status"] == "active"
    token = ok_token(client, auth_headers)
    assert token["access_token"] != installed  # the cached one was dropped; the verification's is served
    assert sim.token_requests == calls + 1


def test_uninstalled_with_refused_credentials_makes_the_account_revoked(
    installer, installed, client, sim, auth_headers
):
    sim.revoke(ACCOUNT)  # the app was really uninstalled: Trackunit refuses the client now
    assert installer.post(uninstalled(), shared_token(sim)).status_code == 202
    wait_for(lambda: client.get(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).get_json()["status"] == "revoked")
    response = get_token(client, auth_headers)
    assert response.status_code == 410 and response.get_json()["error"]["code"] == "credentials_revoked"
    assert client.get(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 200  # nothing deleted


def test_many_uninstalled_make_one_verification_fetch(installer, installed, client, sim):
    calls = sim.token_requests
    token = shared_token(sim)
    for _ in range(5):
        assert installer.post(uninstalled(), token).get_json()["status"] == "verifying"
    wait_for(lambda: sim.token_requests == calls + 1)
    time.sleep(0.3)
    assert sim.token_requests == calls + 1


def test_uninstalled_for_an_account_not_installed_is_ignored_and_writes_nothing(installer, client, sim, redis_client):
    before = keyspace(redis_client)
    response = installer.post(uninstalled(), shared_token(sim))
    assert response.status_code == 202
    assert response.get_json()["status"] == "ignored"
    assert keyspace(redis_client) == before


def test_delete_removes_the_verification_mark_too(installer, installed, client, sim, redis_client, auth_headers):
    assert installer.post(uninstalled(), shared_token(sim)).status_code == 202
    wait_for(lambda: any(b":verifying" in key for key in redis_client.keys("*")))
    assert client.delete(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 204
    time.sleep(0.2)  # a verification still in flight must not bring anything back
    assert [key for key in redis_client.keys("*") if ACCOUNT.encode() in key] == []


# The binding store down -----------------------------------------------------------------------------------


@pytest.mark.parametrize("jti", [True, False], ids=["jti", "no_jti"])
def test_redis_down_is_503_with_retry_after_never_401(installer, jti, client, sim, redis_server, auth_headers):
    assert client.get("/v1/accounts", headers=auth_headers).status_code == 200  # a live pooled connection
    body, token = installer.message(), sim.identity_token({}, jti=jti)
    redis_server.stop()
    response = installer.post(body, token)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    redis_server.start()
    assert_stored(installer.post(body, token))  # Trackunit's retry, once Redis is back
