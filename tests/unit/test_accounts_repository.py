"""The Redis data model on fakeredis (fast); the integration tests repeat the contract on a real Redis."""

import fakeredis
import pytest

from api.accounts import decode_cursor, encode_cursor
from core.errors import InvalidRequest, RecordUnreadable
from tests.support.records import read_sealed, write_sealed
from vault.accounts import AccountRepository, Credentials, Dropped, Installed
from vault.health import StoreHealth
from vault.keys import KeyRing
from vault.layout import KeySpace
from vault.seal import Sealer
from vault.tokencache import CachedToken, TokenCache

KEY = bytes(range(32))


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def repo(redis):
    return AccountRepository(redis, Sealer(KeyRing(KEY)), KeySpace("t"), clock=lambda: 1_700_000_000)


@pytest.fixture
def cache(redis):
    return TokenCache(redis, Sealer(KeyRing(KEY)), KeySpace("t"), "@org/app", clock=lambda: 1_700_000_000)


def token(until=1_700_003_300) -> CachedToken:
    return CachedToken("tok", "Bearer", "asset.view", cached_until=until, refresh_from=until - 30)


def test_install_get_load(repo, redis):
    assert repo.install("a1", "@org/app", Credentials("cid", "csecret")) is Installed.NEW
    record, creds = repo.load("a1")
    assert (record.status, record.installed_at, record.generation) == ("active", 1_700_000_000, "1")
    assert creds == Credentials("cid", "csecret") and creds.client_secret == "csecret"
    assert "csecret" not in repr(creds)
    assert all(b"csecret" not in (redis.dump(k) or b"") for k in redis.keys())
    assert repo.install("a1", "@org/app", Credentials("cid", "new")) is Installed.REPLACED
    assert repo.load("a1")[0].generation == "2"


def test_install_and_delete_drop_cached_tokens(repo, cache, redis):
    repo.install("a1", "@org/app", Credentials("cid", "s"))
    assert cache.put("a1", "1", "slot", token())
    assert cache.get("a1", "slot").access_token == "tok"
    repo.install("a1", "@org/app", Credentials("cid", "s"))
    assert cache.get("a1", "slot") is None
    assert cache.put("a1", "2", "slot", token())
    assert repo.delete("a1") is True
    # The group's counter and outbox (the events of the account's life); nothing of the account.
    tag = KeySpace("t").tag(KeySpace("t").group_of("a1"))
    assert sorted(redis.keys("*")) == [
        f"{tag}:{name}".encode() for name in ("events", "events:counts", "events:last", "generation")
    ]
    assert repo.delete("a1") is False


def test_generations_are_never_reused_after_delete(repo, cache):
    repo.install("a1", "@org/app", Credentials("cid", "s"))
    old = repo.get("a1").generation
    repo.delete("a1")
    repo.install("a1", "@org/app", Credentials("cid", "s2"))
    assert repo.get("a1").generation != old
    assert cache.put("a1", old, "slot", token()) is False  # a fetch from before the delete


def test_put_is_refused_for_an_old_generation(repo, cache):
    repo.install("a1", "@org/app", Credentials("cid", "s"))
    repo.install("a1", "@org/app", Credentials("cid", "s2"))
    assert cache.put("a1", "1", "slot", token()) is False
    assert cache.get("a1", "slot") is None


def test_revoke_then_put_reactivates(repo, cache):
    repo.install("a1", "@org/app", Credentials("cid", "s"))
    cache.put("a1", "1", "slot", token())
    assert repo.revoke("a1", "1", until=1_700_000_060)
    assert repo.get("a1").status == "revoked" and cache.get("a1", "slot") is None
    # A fetch that was in flight with the refused credentials does not bring the account back...
    assert cache.put("a1", "1", "slot", token()) is False
    assert repo.get("a1").status == "revoked"
    # ...the probe after the cool-down (which read the new generation) does.
    assert cache.put("a1", repo.get("a1").generation, "slot", token())
    assert repo.get("a1").status == "active" and repo.get("a1").revoked_until is None


def test_paging_visits_every_account_once(repo):
    ids = [f"acc-{i:03d}" for i in range(23)]
    for account_id in reversed(ids):
        repo.install(account_id, "@org/app", Credentials("c", "s"))
    seen, cursor = [], None
    while True:
        page, cursor = repo.page(5, cursor)
        seen += [r.account_id for r in page]
        if cursor is None:
            break
    assert seen == ids


def test_bad_cursor_is_a_request_error():
    with pytest.raises(InvalidRequest):
        decode_cursor("%%%")


def test_a_cursor_names_the_account_to_go_on_after():
    assert decode_cursor(encode_cursor("acc-1_Z")) == "acc-1_Z"


def test_swapped_record_does_not_open(repo, redis):
    repo.install("a1", "@org/app", Credentials("c1", "s1"))
    repo.install("a2", "@org/app", Credentials("c2", "s2"))
    keys = KeySpace("t")
    write_sealed(redis, keys.key_for("a2"), read_sealed(redis, keys.key_for("a1")))
    with pytest.raises(RecordUnreadable):
        repo.load("a2")


def test_a_store_without_info_is_ready_with_an_unknown_policy(redis):
    # fakeredis (the ephemeral store of `make run`) has no INFO: unknown, not unavailable.
    assert StoreHealth(redis).eviction_policy() is None


def test_an_install_issued_before_the_stored_one_is_stale_and_writes_nothing(repo, redis):
    assert repo.install("a1", "@org/app", Credentials("cid", "new"), issued_at=200) is Installed.NEW
    before = {key: redis.dump(key) for key in redis.keys("*")}
    assert repo.install("a1", "@org/app", Credentials("cid", "old"), issued_at=199) is Installed.STALE
    assert {key: redis.dump(key) for key in redis.keys("*")} == before
    assert repo.load("a1")[1].client_secret == "new"


@pytest.mark.parametrize("issued_at", [200, 201, None], ids=["same_second", "later", "unknown"])
def test_an_install_not_older_replaces_and_the_newest_iat_is_kept(issued_at, repo, redis):
    repo.install("a1", "@org/app", Credentials("cid", "first"), issued_at=200)
    assert repo.install("a1", "@org/app", Credentials("cid", "second"), issued_at=issued_at) is Installed.REPLACED
    assert repo.load("a1")[1].client_secret == "second"
    assert int(redis.hget(KeySpace("t").key_for("a1"), "iat")) == max(200, issued_at or 0)


def test_an_install_with_iat_after_one_without_is_taken(repo):
    repo.install("a1", "@org/app", Credentials("cid", "first"))
    assert repo.install("a1", "@org/app", Credentials("cid", "second"), issued_at=5) is Installed.REPLACED


def test_drop_tokens_keeps_the_credentials_and_claims_one_verification(repo, redis):
    assert repo.drop_tokens("a1", verify_interval=10) is Dropped.NOT_INSTALLED
    assert redis.keys("*") == []
    repo.install("a1", "@org/app", Credentials("cid", "s"))
    redis.set(KeySpace("t").key_for("a1", "token", "x"), b"sealed")
    redis.sadd(KeySpace("t").key_for("a1", "cache"), KeySpace("t").key_for("a1", "token", "x"))
    assert repo.drop_tokens("a1", verify_interval=10) is Dropped.VERIFY
    assert repo.drop_tokens("a1", verify_interval=10) is Dropped.RECENTLY_VERIFIED
    assert redis.get(KeySpace("t").key_for("a1", "token", "x")) is None and repo.load("a1")[1].client_secret == "s"
    assert 0 < redis.ttl(KeySpace("t").key_for("a1", "verifying")) <= 10
