"""API key policies: the API_KEYS syntax, the permission, scope and rate grammar, and the route table."""

from __future__ import annotations

import pytest

from api import permissions
from core.config import Config, ConfigError
from core.permissions import EVERY, KeyPolicy, Permission, PolicyError, RateLimit, parse_permissions, parse_rate
from tests.unit.test_config import GOOD

SECRET = "s3cr3t-key-0123456789"


def keys(api_keys: str):
    return Config.from_env({**GOOD, "API_KEYS": api_keys}).api_keys


def test_entries_without_options_are_admin_keys_as_before():
    parsed = keys("ops:0123456789abcdef, fedcba9876543210fedc,odd:key:with:colons:0123")
    assert [(k.name, k.key) for k in parsed] == [
        ("ops", "0123456789abcdef"),
        ("key2", "fedcba9876543210fedc"),
        ("odd", "key:with:colons:0123"),
    ]
    assert all(k.policy == KeyPolicy() and k.policy.permissions == EVERY for k in parsed)


def test_options_give_permissions_a_ceiling_and_a_rate():
    (ops, sync, reporting) = keys(
        f"ops:0123456789abcdef, sync:{SECRET} allow=proxy:read scopes=asset.view rate=20/second,"
        "reporting:fedcba9876543210fedc allow=accounts:read+token:read scopes=asset.view+account.view"
    )
    assert ops.policy.permissions == EVERY
    assert sync.key == SECRET
    expected = KeyPolicy(frozenset({Permission.PROXY_READ}), frozenset({"asset.view"}), RateLimit(20, "second"))
    assert sync.policy == expected
    assert reporting.policy.permissions == {Permission.ACCOUNTS_READ, Permission.TOKEN_READ}
    assert reporting.policy.scopes == {"asset.view", "account.view"} and reporting.policy.rate is None


@pytest.mark.parametrize(
    "api_keys",
    [
        # The comma in the ceiling would start a new entry: a bare "key" that is a public scope name.
        f"ops:0123456789abcdef, sync:{SECRET} allow=proxy:read scopes=asset.view,account.alert.view",
        f"0123456789abcdef0123, sync:{SECRET} allow=proxy:read",
    ],
    ids=["a comma inside an option", "a bare key beside one with options"],
)
def test_with_options_in_use_every_entry_needs_a_name(api_keys):
    with pytest.raises(ConfigError, match="with options in use every entry is name:key") as refused:
        keys(api_keys)
    assert "account.alert.view" not in str(refused.value) and SECRET not in str(refused.value)


def test_a_keyed_entry_is_redacted_as_its_key_alone():
    config = Config.from_env({**GOOD, "API_KEYS": f"sync:{SECRET} allow=proxy:read"})
    assert SECRET in config.secrets


@pytest.mark.parametrize(
    "entry, message",
    [
        ("allow=admin:all", "'admin:all' is not a permission"),
        ("allow=proxy:read rate=fast", "'fast' is not a rate"),
        ("allow=proxy:read rate=0/second", "is not a rate"),
        ("allow=proxy:read scopes=asset.edit", "scopes not in APP_SCOPES: 'asset.edit'"),
        ("scopes=asset.view", "options need allow=PERMISSIONS"),
        ("allow=proxy:read allow=token:read", "allow= is given twice"),
        ("allow=proxy:read ttl=5", "'ttl=5' is not an option"),
        ("allow=", "no permission given"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_entry_never_the_key(entry, message):
    with pytest.raises(ConfigError) as raised:
        keys(f"ops:0123456789abcdef, sync:{SECRET} {entry}")
    text = str(raised.value)
    assert text.startswith("API_KEYS entry 2 (sync): ") and message in text, text
    assert "\n" not in text and SECRET not in text


def test_admin_and_proxy_write_imply_what_they_hold():
    assert parse_permissions("admin") == EVERY
    assert parse_permissions("proxy:write") == {Permission.PROXY_WRITE, Permission.PROXY_READ}
    assert parse_permissions("token:read, accounts:read") == {Permission.TOKEN_READ, Permission.ACCOUNTS_READ}
    assert KeyPolicy(parse_permissions("proxy:write")).named == ["proxy:read", "proxy:write"]
    assert KeyPolicy(EVERY).named == ["admin"]


@pytest.mark.parametrize("text", ["20", "20/sec", "-1/second", "1.5/minute", "20/second/2", "", "1000000/hour"])
def test_rates_are_n_per_a_named_period(text):
    with pytest.raises(PolicyError):
        parse_rate(text)
    assert parse_rate("3/day") == RateLimit(3, "day") and RateLimit(3, "day").seconds == 86400


# The route table ------------------------------------------------------------------------------------


def test_every_v1_route_of_the_app_has_its_own_entry(app):
    """A /v1 route added without an entry would need admin: that is safe, but this test asks for a decision."""
    v1 = {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/v1")}
    assert v1 == set(permissions.BY_ENDPOINT)


@pytest.mark.parametrize(
    "endpoint, method, path, needed",
    [
        ("tokens.get_token", "GET", "/v1/accounts/a/token", Permission.TOKEN_READ),
        ("proxy.proxy", "GET", "/v1/accounts/a/proxy/x", Permission.PROXY_READ),
        ("proxy.proxy", "HEAD", "/v1/accounts/a/proxy/x", Permission.PROXY_READ),
        ("proxy.proxy", "POST", "/v1/accounts/a/proxy/x", Permission.PROXY_WRITE),
        ("proxy.proxy", "DELETE", "/v1/accounts/a/proxy/x", Permission.PROXY_WRITE),
        ("accounts.list_accounts", "GET", "/v1/accounts", Permission.ACCOUNTS_READ),
        ("accounts.show_account", "GET", "/v1/accounts/a", Permission.ACCOUNTS_READ),
        ("accounts.delete_account", "DELETE", "/v1/accounts/a", Permission.ACCOUNTS_DELETE),
        ("events.list_events", "GET", "/v1/events", Permission.EVENTS_READ),
        ("events.list_events", "POST", "/v1/events", Permission.ADMIN),  # 405 for any key but an admin's
        (None, "GET", "/v1/events/stream", Permission.ADMIN),
        (None, "GET", "/v1/eventsx", Permission.ADMIN),
        (None, "GET", "/v1/whatever", Permission.ADMIN),
        ("apikeys.list", "GET", "/v1/apikeys", Permission.ADMIN),
    ],
)
def test_the_permission_each_request_needs(endpoint, method, path, needed):
    assert permissions.required(endpoint, method) == needed  # `path`: what such a request looks like
