"""/v1/accounts, the API key guard, /healthz and /readyz, against a real Redis and the simulator."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from tests.support.constants import API_KEY, APP_ID
from tests.support.records import indexed_ids
from vault.accounts import Credentials
from vault.layout import KeySpace

# Issue 18: every test here runs on a single Redis and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.topologies("single", "cluster")

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# Helpers ---------------------------------------------------------------------------------------


def keyspace(r) -> dict[bytes, bytes]:
    return {key: r.dump(key) for key in r.keys("*")}


def add_account(app, sim, account_id: str) -> None:
    """Install through the service's repository, with credentials the simulator accepts."""
    creds = sim.add_account(account_id)
    app.extensions["vault"].accounts.install(account_id, APP_ID, Credentials(creds["clientId"], creds["clientSecret"]))


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]


def keys_of(r, account_id: str) -> list[bytes]:
    return [key for key in r.keys("*") if account_id.encode() in key]


def epoch(iso: str) -> int:
    return int(dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())


# GET /v1/accounts --------------------------------------------------------------------------------


def test_list_pages_through_every_account_exactly_once(app, client, sim, auth_headers):
    installed = {str(uuid.uuid4()) for _ in range(25)}
    for account_id in installed:
        add_account(app, sim, account_id)
    seen, pages, cursor = [], 0, None
    while True:
        query = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/accounts", query_string=query, headers=auth_headers).get_json()
        assert len(body["accounts"]) <= 7
        seen += [a["account_id"] for a in body["accounts"]]
        pages, cursor = pages + 1, body["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert len(seen) == len(set(seen)) == 25 and set(seen) == installed


def test_list_of_no_accounts_is_empty_with_null_cursor(client, auth_headers):
    response = client.get("/v1/accounts", headers=auth_headers)
    assert response.status_code == 200
    assert response.get_json() == {"accounts": [], "next_cursor": None}


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "7.5", "", " 7", "0x7", "²", "٣"])
def test_list_with_a_bad_limit_is_400(limit, client, auth_headers):
    response = client.get("/v1/accounts", query_string={"limit": limit}, headers=auth_headers)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGFuIGlkIQ", "YS5i"], ids=["not_base64", "not_an_id", "dotted_id"])
def test_list_with_a_cursor_it_never_returned_is_400(cursor, client, auth_headers):
    response = client.get("/v1/accounts", query_string={"cursor": cursor}, headers=auth_headers)
    assert_error(response, 400, "invalid_request")


# GET /v1/accounts/{id} ---------------------------------------------------------------------------


def test_show_account_returns_its_fields_in_iso_8601_utc(app, client, sim, auth_headers, redis_client):
    add_account(app, sim, "acc-1")
    response = client.get("/v1/accounts/acc-1", headers=auth_headers)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"account_id", "iris_app_id", "status", "installed_at", "updated_at"}
    assert (body["account_id"], body["iris_app_id"], body["status"]) == ("acc-1", APP_ID, "active")
    assert ISO_UTC.match(body["installed_at"]) and ISO_UTC.match(body["updated_at"])
    stored = redis_client.hgetall(KeySpace("test").key_for("acc-1"))
    assert epoch(body["installed_at"]) == int(stored[b"installed"])
    assert epoch(body["updated_at"]) == int(stored[b"updated"])


def test_show_account_is_revoked_after_trackunit_refuses_its_credentials(app, client, sim, auth_headers):
    add_account(app, sim, "acc-1")
    sim.revoke("acc-1")
    assert_error(client.get("/v1/accounts/acc-1/token", headers=auth_headers), 410, "credentials_revoked")
    assert client.get("/v1/accounts/acc-1", headers=auth_headers).get_json()["status"] == "revoked"


@pytest.mark.parametrize("account_id", ["never-installed", "a.b", "x" * 129])
def test_show_unknown_account_is_404(account_id, client, auth_headers):
    assert_error(client.get(f"/v1/accounts/{account_id}", headers=auth_headers), 404, "account_not_found")


# DELETE /v1/accounts/{id} ------------------------------------------------------------------------


def test_delete_is_204_and_leaves_nothing_of_the_account(app, client, sim, auth_headers, redis_client):
    add_account(app, sim, "acc-1")
    add_account(app, sim, "acc-2")
    assert client.get("/v1/accounts/acc-1/token", headers=auth_headers).status_code == 200  # a cached token too
    assert len(keys_of(redis_client, "acc-1")) >= 3
    response = client.delete("/v1/accounts/acc-1", headers=auth_headers)
    assert response.status_code == 204 and response.get_data() == b""
    assert keys_of(redis_client, "acc-1") == []
    assert indexed_ids(redis_client) == [b"acc-2"]
    assert_error(client.get("/v1/accounts/acc-1", headers=auth_headers), 404, "account_not_found")


def test_delete_unknown_account_is_404(client, auth_headers):
    assert_error(client.delete("/v1/accounts/never-installed", headers=auth_headers), 404, "account_not_found")


# The API key -------------------------------------------------------------------------------------

BAD_AUTHORIZATION = {
    "missing": None,
    "wrong_key": "Bearer not-the-api-key-0123456789",
    "basic_scheme": f"Basic {API_KEY}",
    "token_scheme": f"Token {API_KEY}",
    "no_scheme": API_KEY,
    "bearer_without_key": "Bearer ",
    "key_with_suffix": f"Bearer {API_KEY}x",
}

V1_REQUESTS = [
    ("GET", "/v1/accounts"),
    ("GET", "/v1/accounts/acc-1"),
    ("DELETE", "/v1/accounts/acc-1"),
    ("GET", "/v1/accounts/acc-1/token"),
    ("GET", "/v1/accounts/acc-1/proxy/api/asset/v1/assets"),
    ("GET", "/v1"),
    ("POST", "/v1/unknown/path"),
    ("GET", "/v1/accounts/not.an.id"),
]


def assert_unauthorized_and_nothing_done(response, redis_client, before, sim) -> None:
    assert_error(response, 401, "unauthorized")
    assert keyspace(redis_client) == before
    assert sim.token_requests == 0


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
def test_v1_with_a_missing_or_bad_api_key_is_401_and_deletes_nothing(authorization, app, client, sim, redis_client):
    add_account(app, sim, "acc-1")
    before = keyspace(redis_client)
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.delete("/v1/accounts/acc-1", headers=headers)
    assert_unauthorized_and_nothing_done(response, redis_client, before, sim)


@pytest.mark.parametrize("method, path", V1_REQUESTS, ids=[f"{m} {p}" for m, p in V1_REQUESTS])
def test_every_v1_path_even_unknown_needs_the_api_key(method, path, app, client, sim, redis_client):
    add_account(app, sim, "acc-1")
    before = keyspace(redis_client)
    response = client.open(path, method=method, headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert_unauthorized_and_nothing_done(response, redis_client, before, sim)


def test_valid_api_key_on_an_unknown_v1_path_is_a_json_404(client, auth_headers):
    assert_error(client.get("/v1/unknown/path", headers=auth_headers), 404, "not_found")


# Health, readiness, and the error shape ---------------------------------------------------------------


def test_healthz_is_200_without_an_api_key(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.is_json


def test_readyz_is_200_when_redis_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.is_json


@pytest.mark.parametrize(
    "method, path, status", [("GET", "/nope", 404), ("GET", "/appinstall", 405), ("PUT", "/v1/accounts", 405)]
)
def test_errors_are_json_never_html(method, path, status, client, auth_headers):
    response = client.open(path, method=method, headers=auth_headers)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert "<html" not in response.get_data(as_text=True).lower()
    assert re.fullmatch(r"[a-z][a-z0-9_]*", response.get_json()["error"]["code"])


# Tokens: no-store ------------------------------------------------------------------------------------


def test_token_response_is_not_cacheable(app, client, sim, auth_headers):
    add_account(app, sim, "acc-1")
    response = client.get("/v1/accounts/acc-1/token", headers=auth_headers)
    assert response.status_code == 200 and response.get_json()["access_token"]
    assert "no-store" in response.headers["Cache-Control"]
