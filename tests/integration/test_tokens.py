"""GET /v1/accounts/<id>/token through the Flask test client, against a real Redis and the simulator over HTTP.

Trackunit's side is observed through the simulator's counters (`sim.token_requests`,
`sim.last_token_request`); the cache through the real Redis keyspace.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis
import requests

from auth.singleflight import Look
from core import tunables
from core.errors import AuthUnavailable
from tests.support.constants import ACCOUNT, APP_ID
from tests.support.flows import get_token, ok_token, wait_for
from tests.support.installer import Installer
from vault.layout import KeySpace
from vault.tokencache import Failure

# Issue 18: every test here runs on a single Redis and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.topologies("single", "cluster")

OTHER = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
PREFIX = "test"  # KEY_PREFIX of the env fixture
TOKEN_FIELDS = {"access_token", "token_type", "expires_in", "scope", "account_id"}


# Helpers ---------------------------------------------------------------------------------------


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def token_keys(r, account_id: str = ACCOUNT) -> list[bytes]:
    return r.keys(KeySpace(PREFIX).key_for(account_id, "token", "*"))


def account_keys(r, account_id: str = ACCOUNT) -> list[bytes]:
    return r.keys(KeySpace(PREFIX).pattern(account_id))


def only_token_key(r, account_id: str = ACCOUNT) -> bytes:
    keys = token_keys(r, account_id)
    assert len(keys) == 1, keys
    return keys[0]


def every_stored_byte_string(r) -> list[bytes]:
    """Every value Redis holds: strings, hash fields and values, set and sorted-set members."""
    values: list[bytes] = []
    for key in r.keys("*"):
        kind = r.type(key)
        if kind == b"string":
            values.append(r.get(key))
        elif kind == b"hash":
            for field, value in r.hgetall(key).items():
                values += [field, value]
        elif kind == b"set":
            values += list(r.smembers(key))
        elif kind == b"zset":
            values += list(r.zrange(key, 0, -1))
        else:
            values.append(r.dump(key))
    return values


# Shape of the answer ---------------------------------------------------------------------------


def test_token_answer_shape_and_no_store(installer, client, auth_headers, sim, sim_server, redis_client):
    installer.install(ACCOUNT)
    response = get_token(client, auth_headers)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == TOKEN_FIELDS
    assert body["token_type"] == "Bearer"
    assert body["account_id"] == ACCOUNT
    assert body["scope"] == "account.view asset.view"
    assert isinstance(body["expires_in"], int) and 3290 <= body["expires_in"] <= 3300
    assert response.headers["Cache-Control"] == "no-store"
    assert sim.token_requests == 1
    # The token is one Trackunit accepts for this account.
    assets = requests.get(
        f"{sim_server.url}/api/asset/v1/assets", headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=10
    )
    assert assets.status_code == 200
    assert {a["accountId"] for a in assets.json()["content"]} == {ACCOUNT}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-the-key-0123456789"}, {"Authorization": "Basic dGVzdA=="}]
)
def test_api_key_required(installer, client, sim, headers):
    installer.install(ACCOUNT)
    response = get_token(client, headers)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert "access_token" not in response.get_data(as_text=True)
    assert sim.token_requests == 0


def test_exactly_the_seeds_request(installer, client, auth_headers, sim):
    creds = installer.install(ACCOUNT)
    ok_token(client, auth_headers, scope="asset.view,account.view")
    assert sim.last_token_request == {
        "grant_type": "client_credentials",
        "client_id": creds["clientId"],
        "scope": "account.view asset.view",
        "content_type": "application/x-www-form-urlencoded",
    }


def test_no_scope_asks_for_the_required_app_scopes(installer, client, auth_headers, sim):
    installer.install(ACCOUNT, scopes=("asset.view", "account.view", "account.alert.view"))
    body = ok_token(client, auth_headers)
    assert sim.last_token_request["scope"] == "account.view asset.view"  # not the optional account.alert.view
    assert body["scope"] == "account.view asset.view"
    # An optional scope the account granted is available when asked for.
    body = ok_token(client, auth_headers, scope="account.alert.view")
    assert sim.last_token_request["scope"] == "account.alert.view"
    assert body["scope"] == "account.alert.view"
    assert sim.token_requests == 2


@pytest.mark.parametrize("scope", ["account.user.manage", "asset.view account.user.manage", "asset.view,bogus?"])
def test_scope_outside_the_manifest_is_400_without_calling_trackunit(installer, client, auth_headers, sim, scope):
    installer.install(ACCOUNT)
    response = get_token(client, auth_headers, scope=scope)
    assert response.status_code == 400
    assert error_code(response) == "invalid_scope"
    assert sim.token_requests == 0


def test_optional_scope_not_granted_is_403(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT, scopes=("asset.view", "account.view"))
    response = get_token(client, auth_headers, scope="account.alert.view")
    assert response.status_code == 403
    assert error_code(response) == "scope_not_granted"
    assert sim.token_requests == 1
    assert sim.last_token_request["scope"] == "account.alert.view"
    assert token_keys(redis_client) == []
    # The required scopes still work for the account.
    ok_token(client, auth_headers)
    assert sim.token_requests == 2


def test_unknown_account_is_404(installer, client, auth_headers, sim):
    installer.install(ACCOUNT)
    for account_id in (OTHER, "no such account!"):
        response = get_token(client, auth_headers, account_id)
        assert response.status_code == 404
        assert error_code(response) == "account_not_found"
    assert sim.token_requests == 0


@pytest.mark.topologies("single")  # counts one server's commands
def test_a_refused_token_request_takes_no_lock(app, installer, client, auth_headers, redis_client, sim):
    """An unknown or revoked account is refused before the slot's lock is tried: nothing is written."""
    installer.install(ACCOUNT)
    sets = lambda: int(redis_client.info("commandstats").get("cmdstat_set", {}).get("calls", 0))  # noqa: E731
    before = sets()
    assert get_token(client, auth_headers, OTHER).status_code == 404
    assert sets() == before
    accounts = app.extensions["vault"].accounts
    accounts.revoke(ACCOUNT, accounts.get(ACCOUNT).generation, int(time.time()) + 60)
    before = sets()
    assert error_code(get_token(client, auth_headers)) == "credentials_revoked"
    assert sets() == before and sim.token_requests == 0
    installer.install(ACCOUNT)  # a re-install makes it active
    ok_token(client, auth_headers)  # a fetch takes the lock: the count can move
    assert sets() > before


def lock_keys(r, account_id: str = ACCOUNT) -> list[bytes]:
    return r.keys(KeySpace(PREFIX).key_for(account_id, "lock", "*"))


LOCK_ROUND_TRIP = 5  # the replies of SingleFlight._try_lock's pipeline: SET, GET, the slot's 2 GETs, HGETALL


def break_the_lock_round_trip(monkeypatch, app, *, resend: bool) -> None:
    """The next lock round trip runs on Redis, then its reply is lost: raised as a dropped connection,
    or (`resend`) the pipeline is sent again, as redis-py's retry does after a dropped connection."""
    client = app.extensions["vault"].tokens.cache.redis
    real = client.pipeline
    armed = [True]

    def pipeline(*args, **kwargs):
        pipe = real(*args, **kwargs)
        execute = pipe.execute

        def lossy(*a, **k):
            sent = list(getattr(pipe, "command_stack", []))  # redis.client.Pipeline's queue (resend: single only)
            replies = execute(*a, **k)
            if armed[0] and len(replies) == LOCK_ROUND_TRIP:
                armed[0] = False
                if not resend:
                    raise redis.ConnectionError("the reply was lost")
                pipe.command_stack = sent
                return execute(*a, **k)
            return replies

        pipe.execute = lossy
        return pipe

    monkeypatch.setattr(client, "pipeline", pipeline)


def test_a_lost_reply_of_the_lock_round_trip_leaves_no_lock(
    monkeypatch, app, installer, client, auth_headers, redis_client, sim
):
    installer.install(ACCOUNT)
    break_the_lock_round_trip(monkeypatch, app, resend=False)
    response = get_token(client, auth_headers)
    assert (response.status_code, error_code(response)) == (503, "store_unavailable")
    assert lock_keys(redis_client) == []  # freed, not left to block every process until it expires
    ok_token(client, auth_headers)
    assert sim.token_requests == 1


@pytest.mark.topologies("single")  # resends redis.client.Pipeline's queue
def test_a_lock_round_trip_sent_twice_still_finds_the_lock_its_own(
    monkeypatch, app, installer, client, auth_headers, redis_client, sim
):
    installer.install(ACCOUNT)
    break_the_lock_round_trip(monkeypatch, app, resend=True)
    started = time.monotonic()
    ok_token(client, auth_headers)
    assert time.monotonic() - started < tunables.TOKEN_REQUEST_BUDGET  # it did not wait on its own lock
    assert sim.token_requests == 1 and lock_keys(redis_client) == []


def test_the_lock_holder_takes_a_token_stored_since_its_look(app, installer, client, auth_headers, sim):
    """What `_try_lock` read with the lock decides: a token stored after the caller's look is served."""
    installer.install(ACCOUNT)
    stored = ok_token(client, auth_headers)
    tokens = app.extensions["vault"].tokens
    scopes, slot = tokens._slot(None)
    seen = Look(token=None, failure=None, record=app.extensions["vault"].accounts.get(ACCOUNT))
    token, fetched = tokens.single_flight.fetch_once(ACCOUNT, scopes, slot, seen=seen)
    assert (token.access_token, fetched) == (stored["access_token"], False)
    assert sim.token_requests == 1


def test_the_lock_holder_gets_a_failure_shared_since_its_look(app, installer, sim):
    installer.install(ACCOUNT)
    services = app.extensions["vault"]
    scopes, slot = services.tokens._slot(None)
    record = services.accounts.get(ACCOUNT)
    services.tokens.cache.put_failure(ACCOUNT, record.generation, slot, Failure("auth_unavailable", 5), 5)
    with pytest.raises(AuthUnavailable):
        services.tokens.single_flight.fetch_once(ACCOUNT, scopes, slot, seen=Look(None, None, record))
    assert sim.token_requests == 0


def test_force_refresh_must_be_a_boolean(installer, client, auth_headers, sim):
    installer.install(ACCOUNT)
    response = get_token(client, auth_headers, force_refresh="maybe")
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert sim.token_requests == 0


# The cache ----------------------------------------------------------------------------------------


def test_one_slot_per_normalised_scope_set(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)
    spellings = [
        "asset.view account.view",
        "account.view,asset.view",
        "asset.view, account.view asset.view",
        "account.view  account.view,asset.view",
    ]
    tokens = {ok_token(client, auth_headers, scope=s)["access_token"] for s in spellings}
    assert len(tokens) == 1
    assert sim.token_requests == 1
    only_token_key(redis_client)
    # The default scope set is the same set, so the same slot.
    assert ok_token(client, auth_headers)["access_token"] in tokens
    assert sim.token_requests == 1
    # A different set is a different slot; another account is another slot.
    ok_token(client, auth_headers, scope="asset.view")
    assert sim.token_requests == 2
    assert len(token_keys(redis_client)) == 2


def test_accounts_do_not_share_tokens(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)
    installer.install(OTHER)
    first = ok_token(client, auth_headers, ACCOUNT)
    second = ok_token(client, auth_headers, OTHER)
    assert first["access_token"] != second["access_token"]
    assert second["account_id"] == OTHER
    assert sim.token_requests == 2
    only_token_key(redis_client, ACCOUNT)
    only_token_key(redis_client, OTHER)


def test_cached_token_is_sealed_in_redis(installer, client, auth_headers, sim, redis_client):
    creds = installer.install(ACCOUNT, scopes=("asset.view", "account.view", "account.alert.view"))
    tokens = [
        ok_token(client, auth_headers)["access_token"],
        ok_token(client, auth_headers, scope="account.alert.view")["access_token"],
    ]
    assert len(token_keys(redis_client)) == 2
    stored = every_stored_byte_string(redis_client)
    assert stored
    for secret in [*tokens, creds["clientSecret"]]:
        needle = secret.encode()
        assert not any(needle in value for value in stored), "a secret is stored in clear in Redis"


def test_cache_ttl_is_expires_in_minus_margin(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)  # simulator: expires_in 3600; env: TOKEN_EXPIRY_MARGIN default 300
    body = ok_token(client, auth_headers)
    pttl = redis_client.pttl(only_token_key(redis_client))
    assert 3_290_000 < pttl <= 3_300_000
    assert body["expires_in"] <= pttl / 1000 + 1


def test_short_lifetime_shrinks_the_margin_to_half(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)
    sim.configure(expires_in=100)  # margin 300 cannot apply: at most half, so 50 s of cache
    body = ok_token(client, auth_headers)
    pttl = redis_client.pttl(only_token_key(redis_client))
    assert 45_000 < pttl <= 50_000
    assert 45 <= body["expires_in"] <= 50


def test_missing_expires_in_is_treated_as_300_seconds(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)
    sim.configure(omit_expires_in=True)  # 300 s with margin 300 → margin 150
    body = ok_token(client, auth_headers)
    pttl = redis_client.pttl(only_token_key(redis_client))
    assert 145_000 < pttl <= 150_000
    assert 145 <= body["expires_in"] <= 150


def test_expires_in_is_the_remaining_cache_ttl(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)
    first = ok_token(client, auth_headers)
    key = only_token_key(redis_client)
    before = redis_client.pttl(key)
    second = ok_token(client, auth_headers)
    after = redis_client.pttl(key)
    assert second["access_token"] == first["access_token"]
    # Never more than Redis still holds it, and within a second of it.
    assert after / 1000 - 1 <= second["expires_in"] <= before / 1000 + 0.01
    time.sleep(1.1)
    later = ok_token(client, auth_headers)
    assert later["access_token"] == first["access_token"]
    assert later["expires_in"] < second["expires_in"]
    assert later["expires_in"] <= redis_client.pttl(key) / 1000 + 0.01
    assert sim.token_requests == 1


def test_force_refresh_replaces_the_cached_token(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)
    old = ok_token(client, auth_headers)["access_token"]
    assert ok_token(client, auth_headers)["access_token"] == old
    assert sim.token_requests == 1
    new = ok_token(client, auth_headers, force_refresh="true")["access_token"]
    assert new != old
    assert sim.token_requests == 2
    # The new token replaced the old one in the same slot.
    assert ok_token(client, auth_headers)["access_token"] == new
    assert ok_token(client, auth_headers, scope="account.view,asset.view")["access_token"] == new
    assert sim.token_requests == 2
    only_token_key(redis_client)
    # force_refresh=false is a plain cached read.
    assert ok_token(client, auth_headers, force_refresh="false")["access_token"] == new
    assert sim.token_requests == 2


def test_a_forced_refresh_within_the_floor_hands_out_the_forced_token(installer, client, auth_headers, sim):
    installer.install(ACCOUNT)
    plain = ok_token(client, auth_headers)["access_token"]
    forced = [ok_token(client, auth_headers, force_refresh="true")["access_token"] for _ in range(100)]
    assert plain not in forced  # a token obtained normally is always replaced
    assert set(forced) == {forced[0]}
    assert sim.token_requests == 2  # the plain fetch and one forced fetch, not 101


def test_a_forced_refresh_replaces_a_token_fetched_normally_even_just_now(installer, client, auth_headers, sim):
    installer.install(ACCOUNT)
    ok_token(client, auth_headers, force_refresh="true")
    installer.install(ACCOUNT)  # new credentials: the forced token is dropped, the next one is a plain fetch
    plain = ok_token(client, auth_headers)["access_token"]
    assert ok_token(client, auth_headers, force_refresh="true")["access_token"] != plain
    assert sim.token_requests == 3


def test_after_the_floor_a_forced_refresh_fetches_again(installer, make_app, auth_headers, sim):
    client = make_app(FORCE_REFRESH_FLOOR="1").test_client()
    installer.to(client).install(ACCOUNT)
    first = ok_token(client, auth_headers, force_refresh="true")["access_token"]
    assert ok_token(client, auth_headers, force_refresh="true")["access_token"] == first
    time.sleep(1.1)
    assert ok_token(client, auth_headers, force_refresh="true")["access_token"] != first
    assert sim.token_requests == 2


def test_a_floor_of_zero_makes_every_forced_refresh_a_call(installer, make_app, auth_headers, sim):
    client = make_app(FORCE_REFRESH_FLOOR="0").test_client()
    installer.to(client).install(ACCOUNT)
    tokens = {ok_token(client, auth_headers, force_refresh="true")["access_token"] for _ in range(3)}
    assert len(tokens) == 3
    assert sim.token_requests == 3


def test_an_uninstall_verification_fetches_even_right_after_a_forced_refresh(installer, client, auth_headers, sim):
    installer.install(ACCOUNT)
    ok_token(client, auth_headers, force_refresh="true")
    sim.revoke(ACCOUNT)  # Trackunit revoked the client, then sent UNINSTALLED
    body = {"type": "UNINSTALLED", "irisAppId": APP_ID, "accountId": ACCOUNT}
    assert installer.post(body).status_code == 202
    wait_for(lambda: client.get(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).get_json()["status"] == "revoked")
    assert sim.token_requests == 2


def test_deleting_the_account_drops_its_tokens(installer, client, auth_headers, sim, redis_client):
    installer.install(ACCOUNT)
    installer.install(OTHER)
    ok_token(client, auth_headers, ACCOUNT)
    ok_token(client, auth_headers, ACCOUNT, scope="asset.view")
    kept = ok_token(client, auth_headers, OTHER)["access_token"]
    assert len(token_keys(redis_client)) == 2
    response = client.delete(f"/v1/accounts/{ACCOUNT}", headers=auth_headers)
    assert response.status_code == 204
    assert account_keys(redis_client) == []
    response = get_token(client, auth_headers, ACCOUNT)
    assert response.status_code == 404
    assert error_code(response) == "account_not_found"
    assert sim.token_requests == 3
    # The other account keeps its cached token.
    assert ok_token(client, auth_headers, OTHER)["access_token"] == kept
    assert sim.token_requests == 3


def test_reinstalling_the_account_drops_its_tokens(installer, client, auth_headers, sim, redis_client):
    first = installer.install(ACCOUNT)
    old = ok_token(client, auth_headers)["access_token"]
    ok_token(client, auth_headers, scope="asset.view")
    assert len(token_keys(redis_client)) == 2
    second = installer.install(ACCOUNT)
    assert second["clientId"] != first["clientId"]
    assert token_keys(redis_client) == []
    new = ok_token(client, auth_headers)["access_token"]
    assert new != old
    assert sim.token_requests == 3
    assert sim.last_token_request["client_id"] == second["clientId"]


# Refresh ahead ---------------------------------------------------------------------------------


def test_refresh_ahead_serves_the_old_token_while_one_background_refresh_runs(make_app, auth_headers, sim):
    """expires_in 8 s, margin 0: cached 8 s, refreshed ahead in the last 0.32 s (4% of the lifetime)."""
    app = make_app(TOKEN_EXPIRY_MARGIN="0")
    client = app.test_client()
    Installer(sim, client).install(ACCOUNT)
    sim.configure(expires_in=8, delay=0.2)  # the refresh takes a while, so it is observably in flight
    tokens = [ok_token(client, auth_headers)["access_token"]]
    assert sim.token_requests == 1
    observations = []  # (calls before the request, index of the token served, calls after)
    deadline = time.monotonic() + 30
    while len(tokens) < 3 and time.monotonic() < deadline:
        before = sim.token_requests
        token = ok_token(client, auth_headers)["access_token"]
        after = sim.token_requests
        if token != tokens[-1]:
            assert token not in tokens, "an older token was served again"
            tokens.append(token)
        observations.append((before, tokens.index(token), after))
        time.sleep(0.02)
    assert len(tokens) == 3, "the token never rolled over twice"
    for index in (0, 1):
        # While the refresh was in flight at Trackunit, requests were answered with the old token.
        in_flight = [o for o in observations if o[1] == index and o[0] == index + 2]
        assert in_flight, f"no request got token {index} while its refresh was in flight: {observations}"
    # One Trackunit call per rollover, never more.
    assert all(after <= index + 2 for _, index, after in observations), observations
    time.sleep(0.5)
    assert sim.token_requests == 3


# Caps on Redis calls ---------------------------------------------------------------------------------


def test_hits_in_the_refresh_window_ask_redis_for_the_refresh_lock_at_most_once_per_interval(
    installer, app, client, auth_headers, sim, redis_client, monkeypatch
):
    monkeypatch.setattr(tunables, "REFRESH_ATTEMPT_INTERVAL", 0.5)
    installer.install(ACCOUNT)
    first = ok_token(client, auth_headers)["access_token"]
    tokens = app.extensions["vault"].tokens
    slot = only_token_key(redis_client).decode().rsplit(":token:", 1)[1]
    cached = tokens.cache.get(ACCOUNT, slot)
    generation = redis_client.hget(KeySpace(PREFIX).key_for(ACCOUNT), "gen").decode()
    # Put the cached token in its refresh-ahead window while "another process" holds the slot's lock.
    assert tokens.cache.put(ACCOUNT, generation, slot, dataclasses.replace(cached, refresh_from=time.time() - 1))
    held = tokens.cache.lock(ACCOUNT, slot)
    assert held.acquire(blocking=False)
    attempts = []
    real_lock = tokens.cache.lock
    monkeypatch.setattr(tokens.cache, "lock", lambda *a, **k: attempts.append(a) or real_lock(*a, **k))

    served = {ok_token(client, auth_headers)["access_token"] for _ in range(20)}
    assert served == {first} and len(attempts) == 1 and sim.token_requests == 1

    held.release()
    time.sleep(0.6)
    assert ok_token(client, auth_headers)["access_token"] == first  # the refresh runs in the background
    assert len(attempts) == 2
    deadline = time.monotonic() + 10
    while sim.token_requests < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.token_requests == 2
