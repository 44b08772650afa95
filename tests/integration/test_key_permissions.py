"""Least-privilege API keys in one process: every endpoint x every permission, the scope ceiling, and refusals counted.

Keys come from API_KEYS with options (`name:KEY allow=... scopes=...`); the admin key is a plain
entry, as every key was before permissions existed. The simulator over HTTP is Trackunit: its
counters prove that a refused request reached neither the token endpoint nor the API.
"""

from __future__ import annotations

import pytest

from core.permissions import Permission
from tests.integration.test_metrics import sample, scrape
from tests.support.constants import ACCOUNT

PROXY = f"/v1/accounts/{ACCOUNT}/proxy/api/asset/v1/assets"
ITEM = f"{PROXY}/a-1"
MANAGE = "account.asset.manage"  # the simulator's API wants it for writes; optional in the manifest


def key_of(permission: Permission) -> str:
    return f"key-of-{permission.value.replace(':', '-')}-0123456789"


def name_of(permission: Permission) -> str:
    return permission.value.replace(":", "-")


# One key per permission; `admin` is a plain entry (no options), as API_KEYS was before permissions.
API_KEYS = ",".join(
    f"{name_of(p)}:{key_of(p)}" + ("" if p is Permission.ADMIN else f" allow={p.value}") for p in Permission
)

# operation -> (method, path, the permissions that allow it (besides admin; the one it needs first), "served")
OPERATIONS = {
    "token": ("GET", f"/v1/accounts/{ACCOUNT}/token", (Permission.TOKEN_READ,), 200),
    "proxy GET": ("GET", PROXY, (Permission.PROXY_READ, Permission.PROXY_WRITE), 200),
    "proxy HEAD": ("HEAD", PROXY, (Permission.PROXY_READ, Permission.PROXY_WRITE), 200),
    "proxy POST": ("POST", PROXY, (Permission.PROXY_WRITE,), 201),
    "proxy PUT": ("PUT", ITEM, (Permission.PROXY_WRITE,), 200),
    "proxy PATCH": ("PATCH", ITEM, (Permission.PROXY_WRITE,), 200),
    "proxy DELETE": ("DELETE", ITEM, (Permission.PROXY_WRITE,), 200),
    "list accounts": ("GET", "/v1/accounts", (Permission.ACCOUNTS_READ,), 200),
    "show account": ("GET", f"/v1/accounts/{ACCOUNT}", (Permission.ACCOUNTS_READ,), 200),
    "delete account": ("DELETE", f"/v1/accounts/{ACCOUNT}", (Permission.ACCOUNTS_DELETE,), 204),
    "event feed": ("GET", "/v1/events", (Permission.EVENTS_READ,), 200),
    "unmapped /v1 path": ("GET", "/v1/not-a-route", (), 404),
}


@pytest.fixture
def keyed(make_app, installer):
    """An app with one key per permission, and the account installed through it."""
    app = make_app(API_KEYS=API_KEYS, APP_SCOPES=f"asset.view account.view {MANAGE}?")
    client = app.test_client()
    installer.to(client).install(scopes=("asset.view", "account.view", MANAGE))
    return client


def bearer(permission: Permission, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_of(permission)}", **headers}


def call(client, operation: str, permission: Permission):
    method, path, _, _ = OPERATIONS[operation]
    headers = bearer(permission, **{"Content-Type": "application/json"})
    if "/proxy/" in path and method not in ("GET", "HEAD"):
        headers["Trackunit-Scope"] = f"asset.view {MANAGE}"
    body = b'{"name": "x"}' if method in ("POST", "PUT", "PATCH") else None
    return client.open(path, method=method, data=body, headers=headers)


@pytest.mark.parametrize("permission", list(Permission), ids=[p.value for p in Permission])
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_endpoint_with_every_permission(keyed, sim, redis_client, operation, permission):
    method, path, allowed_by, served = OPERATIONS[operation]
    allowed = permission in allowed_by or permission is Permission.ADMIN
    stored_before = sorted(redis_client.keys("test:*"))
    response = call(keyed, operation, permission)
    if allowed:
        assert response.status_code == served, response.get_data(as_text=True)
        assert "Token-Vault-Error" not in response.headers
        if operation.startswith("proxy"):
            assert sim.api_requests == 1
        if operation == "delete account":
            assert keyed.get(path, headers=bearer(Permission.ADMIN)).status_code == 404
        return
    assert response.status_code == 403, response.get_data(as_text=True)
    if method != "HEAD":
        error = response.get_json()["error"]
        needed = allowed_by[0] if allowed_by else Permission.ADMIN
        assert error["code"] == "forbidden"
        assert repr(needed.value) in error["message"]  # names the missing permission
        assert key_of(permission) not in response.get_data(as_text=True)
    if operation.startswith("proxy"):
        assert response.headers["Token-Vault-Error"] == "forbidden"
    # Nothing changed: nothing reached Trackunit, nothing was written or deleted.
    assert (sim.token_requests, sim.api_requests) == (0, 0)
    assert sorted(redis_client.keys("test:*")) == stored_before
    assert keyed.get(f"/v1/accounts/{ACCOUNT}", headers=bearer(Permission.ADMIN)).status_code == 200


def test_an_unknown_or_missing_key_is_401_and_counted(keyed):
    before = scrape(keyed)
    assert keyed.get("/v1/accounts", headers={"Authorization": "Bearer nope-0123456789abcdef"}).status_code == 401
    assert keyed.get("/v1/accounts").status_code == 401
    assert keyed.get("/v1/accounts", headers=bearer(Permission.TOKEN_READ)).status_code == 403
    after = scrape(keyed)
    for reason, expected in (("unauthorized", 2), ("forbidden", 1)):
        name = "itv_api_key_refusals_total"
        assert sample(after, name, reason=reason) - sample(before, name, reason=reason) == expected, reason


def test_audit_lines_name_the_key(keyed, caplog):
    with caplog.at_level("INFO", logger="itv.audit"):
        assert keyed.get(f"/v1/accounts/{ACCOUNT}/token", headers=bearer(Permission.TOKEN_READ)).status_code == 200
    issued = [r for r in caplog.records if getattr(r, "event", None) == "token_issued"]
    assert [r.key_name for r in issued] == ["token-read"]
    assert all(key_of(Permission.TOKEN_READ) not in r.getMessage() for r in caplog.records)


# The scope ceiling ----------------------------------------------------------------------------------

CEILING_KEY = "ceiling-key-0123456789"
OPTIONAL_ONLY_KEY = "optional-only-0123456789"


@pytest.fixture
def ceiling(make_app, installer):
    app = make_app(
        API_KEYS=f"sync:{CEILING_KEY} allow=token:read+proxy:read scopes=asset.view,"
        f"alerts:{OPTIONAL_ONLY_KEY} allow=token:read+proxy:read scopes=account.alert.view"
    )
    client = app.test_client()
    installer.to(client).install()
    return client


def refused_by_ceiling(response) -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "scope_not_allowed"


@pytest.mark.parametrize("scope", ["account.view", "asset.view account.view", "account.alert.view"])
def test_a_token_outside_the_ceiling_is_refused_before_trackunit(ceiling, sim, scope):
    auth = {"Authorization": f"Bearer {CEILING_KEY}"}
    response = ceiling.get(f"/v1/accounts/{ACCOUNT}/token", query_string={"scope": scope}, headers=auth)
    refused_by_ceiling(response)
    assert sim.token_requests == 0


def test_a_proxy_call_outside_the_ceiling_is_refused_before_trackunit(ceiling, sim):
    auth = {"Authorization": f"Bearer {CEILING_KEY}", "Trackunit-Scope": "asset.view account.view"}
    response = ceiling.get(PROXY, headers=auth)
    refused_by_ceiling(response)
    assert response.headers["Token-Vault-Error"] == "scope_not_allowed"
    assert (sim.token_requests, sim.api_requests) == (0, 0)


def test_no_scope_asked_means_the_required_scopes_within_the_ceiling(ceiling, sim):
    auth = {"Authorization": f"Bearer {CEILING_KEY}"}
    token = ceiling.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth)
    assert token.status_code == 200 and token.get_json()["scope"] == "asset.view"  # not the manifest's two
    within = ceiling.get(f"/v1/accounts/{ACCOUNT}/token", query_string={"scope": "asset.view"}, headers=auth)
    assert within.get_json()["access_token"] == token.get_json()["access_token"]  # the same slot
    assert ceiling.get(PROXY, headers=auth).status_code == 200
    assert (sim.token_requests, sim.api_requests) == (1, 1)


def test_a_ceiling_holding_no_required_scope_is_refused_rather_than_widened(ceiling, sim):
    auth = {"Authorization": f"Bearer {OPTIONAL_ONLY_KEY}"}
    refused_by_ceiling(ceiling.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth))
    refused_by_ceiling(ceiling.get(PROXY, headers=auth))
    assert (sim.token_requests, sim.api_requests) == (0, 0)
    before = scrape(ceiling)
    refused_by_ceiling(ceiling.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth))
    name = "itv_api_key_refusals_total"
    assert (
        sample(scrape(ceiling), name, reason="scope_not_allowed") - sample(before, name, reason="scope_not_allowed")
        == 1
    )
