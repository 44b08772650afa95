"""What the vault keeps in Redis: sealed records, bound to their account, readable across a key rotation."""

from __future__ import annotations

import base64
import json
import logging

import requests

from tests.support.constants import OLD_KEY, VAULT_KEY
from tests.support.installer import Installer
from tests.support.records import read_sealed, write_sealed
from vault.keys import key_id, parse_key
from vault.layout import KeySpace
from vault.seal import HEADER_SIZE, NONCE_SIZE, Sealer

KEYS = KeySpace("test")


# Helpers ---------------------------------------------------------------------------------------


def everything_in(r) -> list[bytes]:
    """Every key name, every DUMP and every member/field/value of every key, as bytes."""
    found: list[bytes] = []
    for key in r.keys("*"):
        found += [key, r.dump(key)]
        kind = r.type(key)
        if kind == b"hash":
            found += [item for pair in r.hgetall(key).items() for item in pair]
        elif kind == b"string":
            found.append(r.get(key))
        elif kind == b"set":
            found += list(r.smembers(key))
        elif kind == b"zset":
            found += r.zrange(key, 0, -1)
    return found


def token_over_http(vault_server, auth_headers, account_id: str) -> requests.Response:
    return requests.get(f"{vault_server.url}/v1/accounts/{account_id}/token", headers=auth_headers, timeout=20)


def stored_key_id(r, account_id: str) -> str:
    return Sealer.key_id_of(read_sealed(r, KEYS.key_for(account_id)))


def assert_record_unreadable(response) -> None:
    """A 5xx JSON error with code record_unreadable (from `requests` or Flask's test client)."""
    body = response.json() if isinstance(response, requests.Response) else response.get_json()
    assert 500 <= response.status_code < 600 and body["error"]["code"] == "record_unreadable", body


# Sealing ---------------------------------------------------------------------------------------


def test_client_secret_is_never_in_redis_a_response_or_a_log_line(
    caplog, install, vault_server, auth_headers, redis_client
):
    caplog.set_level(logging.DEBUG)
    result = install("acc-1")
    secret = result["clientSecret"]
    fetched = token_over_http(vault_server, auth_headers, "acc-1")  # from Trackunit, then from the cache
    cached = token_over_http(vault_server, auth_headers, "acc-1")
    shown = [
        requests.get(f"{vault_server.url}{path}", headers=auth_headers, timeout=20)
        for path in ("/v1/accounts/acc-1", "/v1/accounts")
    ]
    assert all(response.status_code == 200 for response in [fetched, cached, *shown])
    access_token = fetched.json()["access_token"]
    responses = [json.dumps(result["callbackResponse"])] + [
        response.text + json.dumps(dict(response.headers)) for response in [fetched, cached, *shown]
    ]

    stored = everything_in(redis_client)
    assert any(b"cred.0" == item for item in stored) and any(b":token:" in item for item in stored)
    assert not [item for item in stored if secret.encode() in item]
    assert not [item for item in stored if access_token.encode() in item]  # cached tokens are sealed too
    assert not [text for text in responses if secret in text]
    assert caplog.records and secret not in caplog.text
    assert not [r for r in caplog.records if secret in r.getMessage() or secret in repr(r.args)]


def test_credentials_copied_onto_another_account_do_not_open(caplog, install, vault_server, auth_headers, redis_client):
    install("acc-a")
    install("acc-b")
    sealed = read_sealed(redis_client, KEYS.key_for("acc-a"))
    write_sealed(redis_client, KEYS.key_for("acc-b"), sealed)
    caplog.set_level(logging.DEBUG)

    response = token_over_http(vault_server, auth_headers, "acc-b")
    assert_record_unreadable(response)

    body = sealed[HEADER_SIZE:]
    traces = [
        repr(sealed),
        sealed.hex(),
        body.hex(),
        body[:NONCE_SIZE].hex(),
        base64.b64encode(sealed).decode(),
        base64.b64encode(body).decode(),
    ]
    assert "acc-b" in caplog.text
    assert not [trace for trace in traces if trace in caplog.text or trace in response.text]
    # The process serves on: the intact account still gets its token.
    assert token_over_http(vault_server, auth_headers, "acc-a").status_code == 200
    assert requests.get(f"{vault_server.url}/healthz", timeout=5).status_code == 200


# Key rotation ----------------------------------------------------------------------------------


def test_records_sealed_under_a_previous_key_open_after_rotation(make_app, sim, redis_client, auth_headers):
    old_app = make_app(VAULT_KEY=OLD_KEY).test_client()
    Installer(sim, old_app).install("acc-1")
    assert stored_key_id(redis_client, "acc-1") == key_id(parse_key(OLD_KEY, "old")).hex()

    new_key_only = make_app(VAULT_KEY=VAULT_KEY).test_client()
    assert_record_unreadable(new_key_only.get("/v1/accounts/acc-1/token", headers=auth_headers))

    rotated = make_app(VAULT_KEY=VAULT_KEY, VAULT_PREVIOUS_KEYS=OLD_KEY).test_client()
    response = rotated.get("/v1/accounts/acc-1/token", headers=auth_headers)
    assert response.status_code == 200 and response.get_json()["access_token"]


def test_reinstall_after_rotation_seals_under_the_new_key(make_app, sim, redis_client, auth_headers):
    Installer(sim, make_app(VAULT_KEY=OLD_KEY).test_client()).install("acc-1")
    rotated = make_app(VAULT_KEY=VAULT_KEY, VAULT_PREVIOUS_KEYS=OLD_KEY).test_client()
    Installer(sim, rotated).install("acc-1")
    assert stored_key_id(redis_client, "acc-1") == key_id(parse_key(VAULT_KEY, "new")).hex()
    new_key_only = make_app(VAULT_KEY=VAULT_KEY).test_client()
    assert new_key_only.get("/v1/accounts/acc-1/token", headers=auth_headers).status_code == 200
