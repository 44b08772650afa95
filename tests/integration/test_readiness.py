"""/readyz warns when Redis could evict credential records."""


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
