"""POST /appinstall (Trackunit's tokenCallback) against a real Redis and the simulator's JWKS.

Every refused call is checked twice: the JSON error, and that the Redis
keyspace is byte-for-byte what it was before the call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm
from redis.cluster import RedisCluster

from simulator import SigningKey
from tests.support.constants import ACCOUNT, APP_ID
from tests.support.records import indexed_ids
from tests.support.redis_server import free_port
from vault.layout import KeySpace

# Issue 18: every test here runs on a single Redis and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.topologies("single", "cluster")

AUDIENCE = "https://vault.example.com/appinstall"
FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # a key Trackunit never published


# Helpers ---------------------------------------------------------------------------------------


def keyspace(r) -> dict[bytes, bytes]:
    """Every key with its DUMP: equal snapshots mean Redis is byte-for-byte unchanged."""
    return {key: r.dump(key) for key in r.keys("*")}


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]


def get_token(client, auth_headers, account_id: str = ACCOUNT):
    return client.get(f"/v1/accounts/{account_id}/token", headers=auth_headers)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256_with_public_pem(sim, claims: dict) -> str:
    """The algorithm-confusion forgery: HS256 keyed with the published RSA key's PEM."""
    public = RSAAlgorithm.from_jwk(json.dumps(sim.signing_key.public_jwk()))
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": sim.signing_key.kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.fixture
def existing(installer, client, sim, redis_client, auth_headers):
    """ACCOUNT installed with a cached token; returns the keyspace snapshot refused calls must leave alone."""
    assert installer.post(installer.message()).status_code == 200
    assert get_token(client, auth_headers).status_code == 200
    assert any(b":token:" in key for key in redis_client.keys("*"))
    return keyspace(redis_client)


def assert_refused(response, status: int, code: str, redis_client, before: dict) -> None:
    assert_error(response, status, code)
    assert keyspace(redis_client) == before


# Identity (Trackunit-Identity) -------------------------------------------------------------------

IDENTITY_FORGERIES = {
    "missing": lambda installer, body: None,
    "empty": lambda installer, body: "",
    "not_a_jwt": lambda installer, body: "not.a.jwt",
    "alg_none": lambda installer, body: installer.sim.signing_key.sign(
        {"irisAppId": APP_ID, "accountId": ACCOUNT}, algorithm="none"
    ),
    "hs256_keyed_with_public_pem": lambda installer, body: hs256_with_public_pem(
        installer.sim, {"irisAppId": APP_ID, "accountId": ACCOUNT}
    ),
    "own_key_with_published_kid": lambda installer, body: jwt.encode(
        {"irisAppId": APP_ID, "accountId": ACCOUNT},
        FORGER,
        algorithm="RS256",
        headers={"kid": installer.sim.signing_key.kid},
    ),
    "own_key_with_unknown_kid": lambda installer, body: jwt.encode(
        {"irisAppId": APP_ID, "accountId": ACCOUNT}, FORGER, algorithm="RS256", headers={"kid": "forged"}
    ),
    "tampered_payload": lambda installer, body: _swap_payload(installer.identity(body), {"irisAppId": APP_ID}),
    "expired_10_minutes_ago": lambda installer, body: installer.sim.identity_token(
        {"irisAppId": APP_ID, "accountId": ACCOUNT}, expires_in=-600
    ),
    "not_valid_for_10_minutes": lambda installer, body: installer.identity(body, nbf=int(installer.sim.clock()) + 600),
    "account_claim_differs": lambda installer, body: installer.identity(body, accountId="another-account"),
    "app_claim_differs": lambda installer, body: installer.identity(body, irisAppId="@organization/otherapp"),
}


def _swap_payload(token: str, claims: dict) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


@pytest.mark.parametrize("forgery", IDENTITY_FORGERIES.values(), ids=IDENTITY_FORGERIES.keys())
def test_missing_or_bad_identity_is_401_invalid_identity_and_writes_nothing(
    installer, forgery, client, sim, redis_client, existing
):
    body = installer.message()
    response = installer.post(body, token=forgery(installer, body))
    assert_refused(response, 401, "invalid_identity", redis_client, existing)


def test_identity_with_published_key_and_no_app_or_account_claims_is_accepted(installer, client, sim):
    body = installer.message()
    token = installer.identity(body, names=False)
    assert installer.post(body, token=token).status_code == 200


def test_time_claims_allow_clock_skew_leeway(installer, client, sim):
    body = installer.message()
    token = installer.identity(body, expires_in=-30)  # expired 30 s ago
    assert installer.post(body, token=token).status_code == 200


def test_unknown_kid_refetches_the_jwks(installer, client, sim, redis_client):
    assert installer.post(installer.message("account-1")).status_code == 200  # JWKS fetched and cached
    sim.signing_key = SigningKey()  # Trackunit rotates its signing key
    response = installer.post(installer.message("account-2"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert indexed_ids(redis_client) == [b"account-1", b"account-2"]


def test_aud_is_accepted_as_is_without_a_configured_audience(installer, client, sim):
    body = installer.message()
    assert installer.post(body, aud="https://somewhere.example").status_code == 200


@pytest.mark.parametrize(
    "aud, status", [(AUDIENCE, 200), ("https://other.example", 401), (None, 401)], ids=["matching", "other", "missing"]
)
def test_aud_must_match_a_configured_audience(installer, aud, status, make_app, sim, redis_client):
    client = make_app(TRACKUNIT_IDENTITY_AUDIENCE=AUDIENCE).test_client()
    response = installer.to(client).post(installer.message(), aud=aud)
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 401:
        assert_refused(response, 401, "invalid_identity", redis_client, {})


def test_unreachable_jwks_is_503_identity_unavailable_not_401(installer, make_app, sim, redis_client, existing):
    closed = f"http://127.0.0.1:{free_port()}/api/marketplace/jwks"
    client = make_app(TRACKUNIT_JWKS_URL=closed).test_client()
    response = installer.to(client).post(installer.message())
    assert_refused(response, 503, "identity_unavailable", redis_client, existing)
    assert int(response.headers["Retry-After"]) >= 1


# The app -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["INSTALLED", "UNINSTALLED", "SOMETHING_ELSE"])
def test_another_iris_app_is_403_unknown_app(installer, kind, client, sim, redis_client, existing):
    body = installer.message(irisAppId="@organization/otherapp", type=kind)
    assert_refused(installer.post(body), 403, "unknown_app", redis_client, existing)


# The request --------------------------------------------------------------------------------------


def _without(field):
    return lambda body: {k: v for k, v in body.items() if k != field}


def _with(**fields):
    return lambda body: {**body, **fields}


BAD_BODIES = {
    **{f"missing_{f}": _without(f) for f in ("type", "irisAppId", "accountId", "clientId", "clientSecret")},
    **{f"empty_{f}": _with(**{f: ""}) for f in ("type", "irisAppId", "accountId", "clientId", "clientSecret")},
    "blank_clientSecret": _with(clientSecret="   "),
    "accountId_number": _with(accountId=12345),
    "clientSecret_list": _with(clientSecret=["s"]),
    "clientId_object": _with(clientId={"id": "x"}),
    "type_null": _with(type=None),
    "irisAppId_bool": _with(irisAppId=True),
    "body_is_a_list": lambda body: [body],
    "body_is_a_string": lambda body: "INSTALLED",
    "body_is_null": lambda body: None,
    **{
        f"accountId_{name}": _with(accountId=value)
        for name, value in {
            "slash": "a/b",
            "space": "a b",
            "colon": "a:b",
            "braces": "{a}",
            "star": "a*",
            "dot": "a.b",
            "non_ascii": "konto-ä",
            "newline": "abc\n",
            "129_chars": "a" * 129,
        }.items()
    },
}


@pytest.mark.parametrize("mutate", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_invalid_body_is_400_invalid_request(installer, mutate, client, sim, redis_client, existing):
    body = mutate(installer.message())
    assert_refused(installer.post(body), 400, "invalid_request", redis_client, existing)


@pytest.mark.parametrize(
    "data",
    [b"{not json", b'{"type": "INSTALLED",', b"\xff\xfe{}", b""],
    ids=["garbage", "truncated", "not_utf8", "empty"],
)
def test_malformed_json_is_400_invalid_request(installer, data, client, sim, redis_client, existing):
    token = installer.identity(names=False, irisAppId=APP_ID, accountId=ACCOUNT)
    response = installer.post(None, token=token, data=data)
    assert_refused(response, 400, "invalid_request", redis_client, existing)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_content_type_is_415(installer, content_type, client, sim, redis_client, existing):
    response = installer.post(installer.message(), content_type=content_type)
    assert_refused(response, 415, "unsupported_media_type", redis_client, existing)


def test_body_over_64_kib_is_413(installer, client, sim, redis_client, existing):
    body = installer.message(padding="x" * (64 * 1024))
    assert_refused(installer.post(body), 413, "payload_too_large", redis_client, existing)


def test_body_just_under_64_kib_with_extra_fields_is_accepted(installer, client, sim):
    body = installer.message(note="tolerated")
    body["padding"] = "x" * (64 * 1024 - len(json.dumps(body)) - len(', "padding": ""'))
    assert len(json.dumps(body)) == 64 * 1024
    assert installer.post(body).status_code == 200


# Accepted messages ----------------------------------------------------------------------------------


def test_installed_for_a_new_account_is_stored(installer, client, sim, redis_client, auth_headers):
    body = installer.message()
    response = installer.post(body)
    assert response.status_code == 200
    assert response.get_json()["status"] == "stored"
    assert body["clientSecret"] not in response.get_data(as_text=True)
    assert indexed_ids(redis_client) == [ACCOUNT.encode()]
    assert get_token(client, auth_headers).status_code == 200


def test_installed_for_an_existing_account_replaces_credentials_and_drops_cached_tokens(
    installer, client, sim, redis_client, auth_headers, existing
):
    old_token = get_token(client, auth_headers).get_json()["access_token"]
    body = installer.message()  # the simulator now accepts only these new credentials
    response = installer.post(body)
    assert response.status_code == 200 and response.get_json()["status"] == "stored"
    assert not [key for key in redis_client.keys("*") if b":token:" in key]
    fresh = get_token(client, auth_headers)
    assert fresh.status_code == 200 and fresh.get_json()["access_token"] != old_token
    assert sim.last_token_request["client_id"] == body["clientId"]


def test_reinstall_replaces_credentials_and_drops_tokens_in_one_script(installer, client, sim, redis_client, existing):
    """MONITOR: every command that touches the account comes from one Lua script call (atomic)."""
    server = redis_client  # on a cluster: the master of the account's slot
    if isinstance(redis_client, RedisCluster):
        server = redis_client.get_redis_connection(redis_client.get_node_from_key(KeySpace("test").key_for(ACCOUNT)))
    with server.monitor() as monitor:
        assert installer.post(installer.message()).status_code == 200
        server.echo("itv-monitor-end")
        commands = []
        while "itv-monitor-end" not in (entry := monitor.next_command())["command"]:
            commands.append(entry)
    from_clients = [
        c["command"].split()[0].upper() for c in commands if c["client_type"] != "lua" and ACCOUNT in c["command"]
    ]
    in_script = [c["command"] for c in commands if c["client_type"] == "lua"]
    assert from_clients == ["EVALSHA"] or from_clients == ["EVAL"], from_clients
    assert any(cmd.startswith("DEL") and ":token:" in cmd for cmd in in_script), in_script
    assert any(cmd.startswith("HSET") and "cred" in cmd for cmd in in_script), in_script


def test_identical_replay_is_200_and_the_account_still_works(installer, client, sim, auth_headers):
    body = installer.message()
    token = installer.identity(body)
    assert installer.post(body, token=token).status_code == 200
    replay = installer.post(body, token=token)
    assert replay.status_code == 200 and replay.get_json()["status"] == "stored"
    assert get_token(client, auth_headers).status_code == 200


def test_installed_over_real_http_from_the_simulator_is_stored(install, client, auth_headers):
    result = install(ACCOUNT)
    assert result["callbackResponse"]["status"] == "stored"
    assert get_token(client, auth_headers).status_code == 200


def test_another_message_type_is_202_ignored_and_changes_nothing(installer, client, sim, redis_client, existing):
    body = {"type": "SUSPENDED", "irisAppId": APP_ID, "accountId": ACCOUNT}
    response = installer.post(body)
    assert response.status_code == 202
    assert response.get_json()["status"] == "ignored"
    assert keyspace(redis_client) == existing


def test_uninstalled_deletes_nothing(installer, client, sim, redis_client, auth_headers, existing):
    """UNINSTALLED cannot be told from a replay: it re-checks the credentials (see test_identity_replay.py)."""
    body = {"type": "UNINSTALLED", "irisAppId": APP_ID, "accountId": ACCOUNT}
    response = installer.post(body)
    assert response.status_code == 202 and response.get_json()["status"] == "verifying"
    assert ACCOUNT.encode() in indexed_ids(redis_client)
    assert client.get(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 200


def test_get_appinstall_is_a_json_405(client):
    response = client.get("/appinstall")
    assert_error(response, 405, "method_not_allowed")
    assert "<html" not in response.get_data(as_text=True).lower()
