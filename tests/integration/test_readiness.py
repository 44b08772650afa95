"""/readyz warns when Redis could evict credential records (on a cluster: when any master could)."""

import pytest

pytestmark = pytest.mark.topologies("single", "cluster")


def test_noeviction_is_ready_without_warning(client, redis_client):
    redis_client.config_set("maxmemory-policy", "noeviction")
    body = client.get("/readyz").get_json()
    assert body == {"status": "ready"}


def test_allkeys_policy_is_reported(client, redis_client):
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert "allkeys-lru" in response.get_json()["warnings"][0]
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")


def test_volatile_policy_only_evicts_tokens_and_is_fine(client, redis_client):
    redis_client.config_set("maxmemory-policy", "volatile-lru")
    try:
        assert "warnings" not in client.get("/readyz").get_json()
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")


@pytest.mark.topologies("cluster")
def test_one_master_that_may_evict_is_reported(client, redis_client, redis_server):
    redis_client.config_set("maxmemory-policy", "noeviction")
    master = redis_server.master_servers()[1].client()
    master.config_set("maxmemory-policy", "allkeys-lfu")
    try:
        assert "allkeys-lfu" in client.get("/readyz").get_json()["warnings"][0]
    finally:
        master.config_set("maxmemory-policy", "noeviction")
        master.close()
