"""Redis stopped: every endpoint that needs it answers 503 store_unavailable; restarted: the same app recovers.

The test Redis is a real redis-server process; `redis_client` starts it again after each test.
"""

from __future__ import annotations

import pytest

from tests.support.constants import ACCOUNT

# Helpers ---------------------------------------------------------------------------------------


def assert_store_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


@pytest.fixture
def redis_down(client, redis_server, auth_headers):
    """Stop Redis after the app has a live pooled connection (the restart is left to `redis_client`)."""
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/accounts", headers=auth_headers).status_code == 200
    redis_server.stop()


CALLS = {
    "list_accounts": lambda client, installer, auth: client.get("/v1/accounts", headers=auth),
    "show_account": lambda client, installer, auth: client.get(f"/v1/accounts/{ACCOUNT}", headers=auth),
    "delete_account": lambda client, installer, auth: client.delete(f"/v1/accounts/{ACCOUNT}", headers=auth),
    "get_token": lambda client, installer, auth: client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth),
    "install_callback": lambda client, installer, auth: installer.post(installer.message()),
    "readyz": lambda client, installer, auth: client.get("/readyz"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_redis_stopped_is_503_store_unavailable_with_retry_after(call, client, installer, auth_headers, redis_down):
    assert_store_unavailable(call(client, installer, auth_headers))


def test_healthz_is_200_with_redis_stopped(client, redis_down):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.is_json


def test_the_same_app_serves_again_once_redis_is_back(client, installer, auth_headers, redis_server, redis_down):
    assert_store_unavailable(installer.post(installer.message()))
    redis_server.start()
    response = installer.post(installer.message())  # the first request after the restart, on the stale pool
    assert response.status_code == 200, response.get_data(as_text=True)
    assert client.get("/readyz").status_code == 200
    assert [a["account_id"] for a in client.get("/v1/accounts", headers=auth_headers).get_json()["accounts"]] == [
        ACCOUNT
    ]
    assert client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).status_code == 200
    assert client.delete(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 204


def test_token_path_recovers_after_redis_restarts_under_a_cached_token(client, installer, auth_headers, redis_server):
    assert installer.post(installer.message()).status_code == 200
    assert client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).status_code == 200
    redis_server.stop()
    assert_store_unavailable(client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers))
    redis_server.start()  # an empty Redis: the account is gone with it, and that is what the API says
    response = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "account_not_found"


def test_every_pooled_connection_busy_is_503_within_the_pool_timeout_then_it_serves(env, auth_headers, monkeypatch):
    """REDIS_MAX_CONNECTIONS bounds what a worker opens; a request that finds them all busy waits
    REDIS_POOL_TIMEOUT at most, then answers store_unavailable (never waits on and on)."""
    from app import create_app
    from core import tunables

    monkeypatch.setattr(tunables, "REDIS_POOL_TIMEOUT", 0.2)
    app = create_app({**env, "REDIS_MAX_CONNECTIONS": "2"})
    client = app.test_client()
    try:
        pool = app.extensions["vault"].redis.connection_pool
        assert pool.max_connections == 2
        busy = [pool.get_connection() for _ in range(2)]  # e.g. the subscription and a slow command
        assert_store_unavailable(client.get("/v1/accounts", headers=auth_headers))
        for connection in busy:
            pool.release(connection)
        assert client.get("/v1/accounts", headers=auth_headers).status_code == 200
    finally:
        app.extensions["vault"].close()


def test_a_command_that_timed_out_is_never_sent_again(redis_server, redis_client):
    """A script whose answer timed out may have run: sending it again would repeat its change (and its event)."""
    import redis as redis_lib

    from core import tunables
    from vault.store import connect

    client = connect(redis_server.url)
    slow = (  # one INCR, then longer than the client waits for the answer
        "redis.call('INCR', KEYS[1]) local t = redis.call('TIME') local stop = t[1] + ARGV[1] "
        "while tonumber(redis.call('TIME')[1]) < stop do end return 1"
    )
    try:
        with pytest.raises(redis_lib.exceptions.TimeoutError):
            client.eval(slow, 1, "test:timed-out-runs", int(tunables.REDIS_SOCKET_TIMEOUT) + 2)
    finally:
        client.close()
    assert redis_client.get("test:timed-out-runs") == b"1"  # answered once the script is over
