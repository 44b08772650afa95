"""The events' configuration: webhook endpoints and secret, retry schedule, retention, delivery mode."""

import base64

import pytest

from core.config import DEFAULT_WEBHOOK_RETRY_SCHEDULE, Config, ConfigError
from events.signing import generate_secret
from tests.unit.test_config import GOOD

SECRET = generate_secret()


def test_defaults():
    config = Config.from_env(GOOD)
    assert config.webhook_urls == () and config.webhook_secret is None
    assert config.webhook_retry_schedule == DEFAULT_WEBHOOK_RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert config.event_retention == 7 * 86400 and config.event_max_count == 100_000
    assert config.event_delivery == "web" and config.verify_on_install is True


def test_webhooks_are_read():
    config = Config.from_env(
        {
            **GOOD,
            "WEBHOOK_URL": "https://a.example/hook, http://b.example:8080/x",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_RETRY_SCHEDULE": "0.5,2,10",
            "EVENT_RETENTION": "2d",
            "EVENT_DELIVERY": "worker",
            "VERIFY_ON_INSTALL": "false",
        }
    )
    assert config.webhook_urls == ("https://a.example/hook", "http://b.example:8080/x")
    assert config.webhook_secret == base64.b64decode(SECRET.removeprefix("whsec_"))
    assert config.webhook_retry_schedule == (0.5, 2.0, 10.0)
    assert config.event_retention == 2 * 86400 and config.event_delivery == "worker"
    assert config.verify_on_install is False


def test_the_secret_and_url_passwords_are_redacted_and_hidden():
    env = {**GOOD, "WEBHOOK_URL": "https://user:urlpass123@a.example/hook", "WEBHOOK_SECRET": SECRET}
    config = Config.from_env(env)
    assert SECRET in config.secrets and SECRET.removeprefix("whsec_") in config.secrets
    assert "urlpass123" in config.secrets
    assert SECRET not in repr(config) and "urlpass123" not in repr(config)


@pytest.mark.parametrize(
    "env,name",
    [
        ({"WEBHOOK_URL": "https://a.example/hook"}, "WEBHOOK_SECRET is missing"),
        ({"WEBHOOK_URL": "ftp://a.example", "WEBHOOK_SECRET": SECRET}, "WEBHOOK_URL entry 1"),
        ({"WEBHOOK_URL": "https://a.example,https://a.example", "WEBHOOK_SECRET": SECRET}, "WEBHOOK_URL"),
        ({"WEBHOOK_SECRET": "abc"}, "WEBHOOK_SECRET must start with whsec_"),
        ({"WEBHOOK_SECRET": "whsec_%%%"}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"short").decode()}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_RETRY_SCHEDULE": "5,soon"}, "WEBHOOK_RETRY_SCHEDULE"),
        ({"WEBHOOK_RETRY_SCHEDULE": "-1"}, "WEBHOOK_RETRY_SCHEDULE"),
        ({"EVENT_RETENTION": "7 days"}, "EVENT_RETENTION"),
        ({"EVENT_RETENTION": "10"}, "EVENT_RETENTION"),
        ({"EVENT_MAX_COUNT": "5"}, "EVENT_MAX_COUNT"),
        ({"EVENT_DELIVERY": "sometimes"}, "EVENT_DELIVERY"),
        ({"VERIFY_ON_INSTALL": "perhaps"}, "VERIFY_ON_INSTALL"),
        ({"EVENT_FEED_MAX_WAIT": "31"}, "EVENT_FEED_MAX_WAIT"),
    ],
)
def test_malformed_values_are_refused_by_name(env, name):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({**GOOD, **env})
