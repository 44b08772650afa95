"""Configuration: validated once; every missing or malformed variable named in one line."""

import base64

import pytest

from core.config import AppScopes, Config, ConfigError

GOOD = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "VAULT_KEY": base64.b64encode(bytes(32)).decode(),
    "API_KEYS": "ops:0123456789abcdef,fedcba9876543210fedc",
    "IRIS_APP_ID": "@organization/appname",
    "APP_SCOPES": "asset.view account.alert.view? account.view",
}


def test_good_config_and_defaults():
    config = Config.from_env(GOOD)
    assert config.token_url == "https://auth.trackunit.com/apptoken"
    assert config.jwks_url == "https://iris.trackunit.com/api/marketplace/jwks"
    assert config.api_url == "https://iris.trackunit.com"
    assert config.token_expiry_margin == 300
    assert config.revoked_retry_after == 60
    assert config.app_scopes == AppScopes(("account.view", "asset.view"), ("account.alert.view",))
    assert [k.name for k in config.api_keys] == ["ops", "key2"]
    assert config.redis_tls_verify is True
    assert config.max_in_flight == 1000
    assert config.redis_max_connections == 8


def test_repr_hides_secrets():
    text = repr(Config.from_env({**GOOD, "REDIS_URL": "rediss://:hunter2pass@host:6380"}))
    assert "hunter2pass" not in text and "0123456789abcdef" not in text


@pytest.mark.parametrize("name", ["REDIS_URL", "VAULT_KEY", "API_KEYS", "IRIS_APP_ID", "APP_SCOPES"])
def test_each_required_variable_is_named_when_missing(name):
    env = {k: v for k, v in GOOD.items() if k != name}
    with pytest.raises(ConfigError, match=name):
        Config.from_env(env)


@pytest.mark.parametrize(
    "name,value",
    [
        ("VAULT_KEY", base64.b64encode(bytes(16)).decode()),
        ("VAULT_PREVIOUS_KEYS", "abc"),
        ("REDIS_URL", "http://localhost"),
        ("API_KEYS", "short"),
        ("APP_SCOPES", "bad scope!"),
        ("TOKEN_EXPIRY_MARGIN", "-1"),
        ("TOKEN_EXPIRY_MARGIN", "ten"),
        ("REDIS_TLS_VERIFY", "maybe"),
        ("TRACKUNIT_TOKEN_URL", "ftp://x"),
        ("MAX_IN_FLIGHT", "0"),
        ("MAX_IN_FLIGHT", "many"),
        ("MAX_IN_FLIGHT", "1000000"),
        ("REDIS_MAX_CONNECTIONS", "1"),  # the invalidation subscription keeps one for itself
        ("REDIS_MAX_CONNECTIONS", "eight"),
        ("FORCE_REFRESH_FLOOR", "-1"),
        ("FORCE_REFRESH_FLOOR", "5s"),
        ("PROXY_DEADLINE", "0"),
        ("PROXY_DEADLINE", "99999"),
    ],
)
def test_malformed_values_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({**GOOD, name: value})


def test_the_forced_refresh_floor_and_proxy_deadline_have_defaults_and_can_be_set():
    default = Config.from_env(GOOD)
    assert (default.force_refresh_floor, default.proxy_deadline) == (5, 60)
    config = Config.from_env({**GOOD, "FORCE_REFRESH_FLOOR": "0", "PROXY_DEADLINE": "25"})
    assert (config.force_refresh_floor, config.proxy_deadline) == (0, 25)


def test_tls_verify_can_be_turned_off_explicitly():
    assert Config.from_env({**GOOD, "REDIS_TLS_VERIFY": "false"}).redis_tls_verify is False


def test_limits_can_be_set():
    config = Config.from_env({**GOOD, "MAX_IN_FLIGHT": "50", "REDIS_MAX_CONNECTIONS": "4"})
    assert (config.max_in_flight, config.redis_max_connections) == (50, 4)


def test_a_count_is_refused_as_a_count_not_as_seconds():
    with pytest.raises(ConfigError, match="MAX_IN_FLIGHT must be a whole number of requests"):
        Config.from_env({**GOOD, "MAX_IN_FLIGHT": "many"})
