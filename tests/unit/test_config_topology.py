"""Configuration of the Redis topology (single, Cluster, Sentinel) and of replica acknowledgement."""

import pytest

from core.config import SINGLE, Config, ConfigError, RedisTopology
from tests.unit.test_config import GOOD


def test_single_redis_stays_the_default():
    config = Config.from_env(GOOD)
    assert config.redis_topology == SINGLE == RedisTopology("single")
    assert (config.redis_wait_replicas, config.redis_wait_timeout) == (1, 500)


@pytest.mark.parametrize("url", ["redis://node1:7000", "rediss://:pw@node1:7000/0"])
def test_cluster_with_any_node(url):
    config = Config.from_env({**GOOD, "REDIS_CLUSTER": "true", "REDIS_URL": url})
    assert config.redis_topology.kind == "cluster"
    assert config.redis_url == url


def test_sentinel_with_master_name():
    config = Config.from_env(
        {
            **GOOD,
            "REDIS_URL": "rediss://:pw@ignored:6379/2",
            "REDIS_SENTINELS": "s1:26379, s2 ,[::1]:26380",
            "REDIS_SENTINEL_MASTER": "mymaster",
        }
    )
    topology = config.redis_topology
    assert topology.kind == "sentinel"
    assert topology.sentinels == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert topology.sentinel_master == "mymaster"
    assert topology.sentinel_password is None  # the sentinels use REDIS_URL's password


def test_sentinel_password_own_or_none():
    env = {**GOOD, "REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "m"}
    own = Config.from_env({**env, "REDIS_SENTINEL_PASSWORD": "sentinel-secret-1"})
    assert own.redis_topology.sentinel_password == "sentinel-secret-1"
    assert "sentinel-secret-1" in own.secrets  # the logging redaction net knows it
    assert "sentinel-secret-1" not in repr(own)
    assert Config.from_env({**env, "REDIS_SENTINEL_PASSWORD": ""}).redis_topology.sentinel_password == ""


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"REDIS_CLUSTER": "true", "REDIS_SENTINELS": "s1:26379"}, "REDIS_CLUSTER=true and REDIS_SENTINELS"),
        ({"REDIS_CLUSTER": "true", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_CLUSTER=true and REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER is missing"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is missing"),
        ({"REDIS_SENTINEL_PASSWORD": "x"}, "REDIS_SENTINEL_PASSWORD is set but REDIS_SENTINELS"),
        ({"REDIS_CLUSTER": "true", "REDIS_URL": "unix:///tmp/redis.sock"}, "REDIS_CLUSTER=true needs REDIS_URL"),
        ({"REDIS_CLUSTER": "true", "REDIS_URL": "redis://node1:7000/3"}, "database 0 only"),
        ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER must be true or false"),
        (
            {"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "unix:///tmp/r.sock"},
            "REDIS_SENTINELS needs REDIS_URL",
        ),
        ({"REDIS_SENTINELS": "s1:port", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS entry 1"),
        ({"REDIS_SENTINELS": "s1:1,user:pw@s2:2", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS entry 2"),
        ({"REDIS_SENTINELS": "s1:1,s1:1", "REDIS_SENTINEL_MASTER": "m"}, "same sentinel"),
        ({"REDIS_SENTINELS": " , ", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS is empty"),
        ({"REDIS_SENTINELS": "s1:1", "REDIS_SENTINEL_MASTER": "bad name"}, "REDIS_SENTINEL_MASTER must be"),
        ({"REDIS_WAIT_REPLICAS": "-1"}, "REDIS_WAIT_REPLICAS must be at least 0"),
        ({"REDIS_WAIT_REPLICAS": "one"}, "REDIS_WAIT_REPLICAS must be a whole number of replicas"),
        ({"REDIS_WAIT_REPLICAS": "17"}, "REDIS_WAIT_REPLICAS must be at most 16"),
        ({"REDIS_WAIT_TIMEOUT": "0"}, "REDIS_WAIT_TIMEOUT must be at least 1"),  # 0 would make WAIT block for ever
        ({"REDIS_WAIT_TIMEOUT": "1501"}, "REDIS_WAIT_TIMEOUT must be at most 1500"),
        ({"REDIS_WAIT_TIMEOUT": "0.5s"}, "REDIS_WAIT_TIMEOUT must be a whole number of milliseconds"),
    ],
)
def test_bad_combinations_stop_with_one_line(overrides, named):
    with pytest.raises(ConfigError, match=named.replace("=", "=").replace("(", r"\(")) as raised:
        Config.from_env({**GOOD, **overrides})
    assert "\n" not in str(raised.value)
    assert "pw" not in str(raised.value)


def test_wait_settings():
    config = Config.from_env({**GOOD, "REDIS_WAIT_REPLICAS": "0", "REDIS_WAIT_TIMEOUT": "200"})
    assert (config.redis_wait_replicas, config.redis_wait_timeout) == (0, 200)
