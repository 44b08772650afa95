"""Managed API keys in one process: the CLI (create prints the key once, list, revoke), lookup, expiry, "last used".

A real redis-server; the app's own invalidation listener tells it of changes, as in a worker.
"""

from __future__ import annotations

import json
import time

import pytest

from auth.memory.keycache import MISSING
from core import tunables
from tests.integration.test_metrics import sample, scrape
from tests.support.constants import ACCOUNT, OLD_KEY, VAULT_KEY
from tests.support.flows import wait_for
from tests.support.rotation import NEW_ID, OLD_ID
from vault.apikeys import PREFIX

TOKEN = f"/v1/accounts/{ACCOUNT}/token"


def cli(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def create(app, name: str, *options: str) -> str:
    result = cli(app, "apikeys", "create", name, *options)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith(PREFIX) and len(key) > 40
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


READERS = {
    "hash": lambda r, name: r.hgetall(name),
    "string": lambda r, name: r.get(name),
    "list": lambda r, name: r.lrange(name, 0, -1),
    "set": lambda r, name: r.smembers(name),
    "zset": lambda r, name: r.zrange(name, 0, -1),
    "stream": lambda r, name: r.xrange(name),
}


def everything_in(redis_client) -> str:
    """Every key name and value in Redis, as text (hashes, strings, lists, sets, sorted sets, streams)."""
    parts = []
    for name in redis_client.scan_iter("*"):
        parts += [name.decode(errors="replace"), repr(READERS[redis_client.type(name).decode()](redis_client, name))]
    return "\n".join(parts)


def test_create_prints_the_key_once_and_stores_only_a_digest(app, client, installer, redis_client):
    installer.install()
    result = cli(
        app, "apikeys", "create", "sync", "--allow", "token:read", "--scopes", "asset.view", "--rate", "50/second"
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith(PREFIX) and "\n" not in key
    assert "not shown again" in result.stderr
    assert key not in everything_in(redis_client)

    response = client.get(TOKEN, headers=bearer(key))
    assert response.status_code == 200 and response.get_json()["scope"] == "asset.view"
    assert client.get("/v1/accounts", headers=bearer(key)).status_code == 403

    listed = cli(app, "apikeys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (shown,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert shown["name"] == "sync" and shown["permissions"] == "token:read"
    assert (shown["scopes"], shown["rate"], shown["expires"]) == ("asset.view", "50/second", None)
    assert shown["created"].endswith("Z") and shown["last_used"].endswith("Z")  # the request above used it
    table = cli(app, "apikeys", "list")
    assert table.exit_code == 0 and "sync" in table.stdout and "token:read" in table.stdout
    digest = app.extensions["vault"].managed_keys.digests.current(key)[1]
    assert result.output.count(key) == 1 and digest not in result.output  # printed once, at creation
    for output in (listed.output, table.output, response.get_data(as_text=True)):
        assert key not in output and digest not in output


def test_a_name_is_taken_once_and_never_that_of_an_env_key(app):
    create(app, "sync", "--allow", "proxy:read")
    again = cli(app, "apikeys", "create", "sync", "--allow", "proxy:read")
    assert again.exit_code == 1 and "exists" in again.output
    env_name = cli(app, "apikeys", "create", "ops", "--allow", "proxy:read")  # conftest's API_KEYS entry
    assert env_name.exit_code == 1 and "API_KEYS" in env_name.output
    assert cli(app, "apikeys", "create", "no spaces", "--allow", "proxy:read").exit_code == 2


@pytest.mark.parametrize(
    "options, message",
    [
        (["--allow", "root"], "'root' is not a permission"),
        (["--allow", "proxy:read", "--rate", "lots"], "is not a rate"),
        (["--allow", "proxy:read", "--scopes", "asset.edit"], "not in APP_SCOPES"),
    ],
)
def test_bad_options_are_refused_with_one_line(app, redis_client, options, message):
    result = cli(app, "apikeys", "create", "sync", *options)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output
    assert redis_client.keys("test:{apikeys}*") == []


def test_revoked_is_refused_at_once_and_its_retries_cost_no_store_read(app, client, redis_client, monkeypatch):
    memory = app.extensions["vault"].memory
    store = app.extensions["vault"].managed_keys
    key = create(app, "reporting", "--allow", "accounts:read")
    wait_for(memory.listener.fresh)  # the worker trusts its memory from here on
    assert client.get("/v1/accounts", headers=bearer(key)).status_code == 200
    assert memory.keys.get(store.digests.current(key)[1]) is not MISSING  # remembered: no Redis read next time

    result = cli(app, "apikeys", "revoke", "reporting")
    assert result.exit_code == 0 and "revoked key reporting" in result.output
    bound = tunables.INVALIDATION_MAX_STALENESS + 0.5
    wait_for(lambda: client.get("/v1/accounts", headers=bearer(key)).status_code == 401, timeout=bound)
    assert redis_client.keys("test:{apikeys}*") == []
    finds = []
    monkeypatch.setattr(store, "find", lambda presented: finds.append(1))
    for _ in range(5):  # a job retrying with its revoked key
        assert client.get("/v1/accounts", headers=bearer(key)).status_code == 401
    assert finds == []
    assert cli(app, "apikeys", "revoke", "reporting").exit_code == 1
    assert cli(app, "apikeys", "list").stdout == ""


def test_an_unknown_managed_key_is_401_and_a_plain_unknown_key_never_reaches_redis(app, client, redis_client):
    before = redis_client.info("stats")["total_commands_processed"]
    for _ in range(5):
        assert client.get("/v1/accounts", headers=bearer("not-managed-0123456789abcdef")).status_code == 401
    # INFO itself is one command; the 401s were decided without Redis.
    assert redis_client.info("stats")["total_commands_processed"] - before == 1
    assert client.get("/v1/accounts", headers=bearer(PREFIX + "x" * 43)).status_code == 401


def test_an_expired_key_is_401_and_counted_as_expired(app, client):
    store = app.extensions["vault"].managed_keys
    from core.permissions import KeyPolicy, parse_permissions

    key = store.create("shortlived", KeyPolicy(parse_permissions("accounts:read")), expires=int(time.time()) + 2)
    assert client.get("/v1/accounts", headers=bearer(key)).status_code == 200  # remembered from here on
    before = scrape(client)
    wait_for(lambda: client.get("/v1/accounts", headers=bearer(key)).status_code == 401, timeout=5)
    after = scrape(client)
    assert sample(after, "itv_api_key_refusals_total", reason="expired") > sample(
        before, "itv_api_key_refusals_total", reason="expired"
    )
    days = cli(app, "apikeys", "create", "week", "--allow", "accounts:read", "--expires", "7")
    assert days.exit_code == 0
    (week,) = [json.loads(line) for line in cli(app, "apikeys", "list", "--json").stdout.splitlines() if "week" in line]
    created = time.mktime(time.strptime(week["created"], "%Y-%m-%dT%H:%M:%SZ"))
    expires = time.mktime(time.strptime(week["expires"], "%Y-%m-%dT%H:%M:%SZ"))
    assert expires - created == 7 * 86400


def test_last_used_is_written_at_most_once_an_interval_per_process(app, client, monkeypatch):
    store = app.extensions["vault"].managed_keys
    writes = []
    real_touch = store.touch
    monkeypatch.setattr(store, "touch", lambda digest, now: (writes.append(now), real_touch(digest, now)))
    key = create(app, "sync", "--allow", "accounts:read")
    for _ in range(20):
        assert client.get("/v1/accounts", headers=bearer(key)).status_code == 200
    assert len(writes) == 1
    monkeypatch.setattr(tunables, "APIKEY_LAST_USED_INTERVAL", 0.2)
    time.sleep(0.25)
    for _ in range(5):
        assert client.get("/v1/accounts", headers=bearer(key)).status_code == 200
    assert len(writes) == 2


def test_a_key_made_before_a_vault_key_rotation_moves_to_the_new_key_on_first_use(make_app):
    before = make_app(VAULT_KEY=OLD_KEY)
    used, unused = (
        create(before, "used", "--allow", "accounts:read"),
        create(before, "unused", "--allow", "accounts:read"),
    )
    rotated = make_app(VAULT_KEY=VAULT_KEY, VAULT_PREVIOUS_KEYS=OLD_KEY)
    for _ in range(2):  # found under the old key, moved; then found under the new one
        assert rotated.test_client().get("/v1/accounts", headers=bearer(used)).status_code == 200
    kids = {
        item["name"]: item["vault_key_id"]
        for item in map(json.loads, cli(rotated, "apikeys", "list", "--json").stdout.splitlines())
    }
    assert kids == {"used": NEW_ID, "unused": OLD_ID}  # what an operator checks before dropping the old key
    dropped = make_app(VAULT_KEY=VAULT_KEY).test_client()
    assert dropped.get("/v1/accounts", headers=bearer(used)).status_code == 200
    assert dropped.get("/v1/accounts", headers=bearer(unused)).status_code == 401


def test_a_managed_key_is_redacted_from_this_process_logs_once_created(app, caplog):
    import logging

    key = create(app, "sync", "--allow", "accounts:read")
    with caplog.at_level("INFO"):
        logging.getLogger("itv.test").info("oops %s", key[:4] + key[4:])
    assert key not in caplog.text and "[redacted]" in caplog.text


# Redis down -------------------------------------------------------------------------------------


def assert_store_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_with_redis_down_a_managed_key_not_remembered_is_503_never_let_through(client, redis_server):
    assert client.get("/readyz").status_code == 200
    redis_server.stop()
    assert_store_unavailable(client.get("/v1/accounts", headers=bearer(PREFIX + "y" * 43)))


def test_with_redis_down_a_rate_limited_key_is_503_never_let_through(make_app, redis_server):
    """On a path that needs no Redis after the guard (no route: 404), so only the rate limit can answer 503."""
    client = make_app(API_KEYS="limited:limited-key-0123456789 allow=admin rate=1000/second").test_client()
    auth = bearer("limited-key-0123456789")
    assert client.get("/v1/not-a-route", headers=auth).status_code == 404
    redis_server.stop()
    assert_store_unavailable(client.get("/v1/not-a-route", headers=auth))


def test_a_rate_limited_key_is_429_with_retry_after_then_served_again(make_app, redis_client):
    client = make_app(API_KEYS="limited:limited-key-0123456789 allow=accounts:read rate=3/second").test_client()
    auth = bearer("limited-key-0123456789")
    started = time.monotonic()
    statuses = [client.get("/v1/accounts", headers=auth).status_code for _ in range(5)]
    if time.monotonic() - started < 0.9:  # all within one window (a busy machine may take longer)
        assert statuses == [200, 200, 200, 429, 429]
    refused = client.get("/v1/accounts", headers=auth)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after == 1  # the window is a second
    assert redis_client.keys("test:ratelimit:*")  # the window lives in Redis, under the deployment's prefix
    time.sleep(retry_after + 0.05)
    assert client.get("/v1/accounts", headers=auth).status_code == 200
