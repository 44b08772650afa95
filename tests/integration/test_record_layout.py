"""How an account hash is laid out in a real Redis: compact, and with no piece of an earlier install left."""

from __future__ import annotations

import secrets
import uuid

import pytest
import redis

from tests.support.constants import APP_ID, OLD_KEY, VAULT_KEY
from tests.support.records import read_sealed
from tests.support.rotation import KEYS, NEW_ID, repository, rotation
from vault.accounts import CRED_PIECE, Credentials, credentials_aad
from vault.layout import Field
from vault.rotation import RESEALED
from vault.seal import Sealer

RECORD_BUDGET = 512  # bytes of Redis memory per credential record: the target the benchmark reports against


def trackunit_like_credentials() -> Credentials:
    """Shaped like Trackunit's example: an Okta client id of 20 characters and a 43-character secret."""
    return Credentials("0oa" + secrets.token_hex(9)[:17], secrets.token_urlsafe(32))


def pieces(r, account_id: str) -> list[bytes]:
    return sorted(name for name in r.hkeys(KEYS.key_for(account_id)) if name.startswith(b"cred"))


def test_a_record_is_a_listpack_within_the_memory_budget_on_a_default_redis(redis_client):
    assert redis_client.config_get("hash-max-listpack-value")["hash-max-listpack-value"] == "64"  # Redis's default
    repo = repository(redis_client, VAULT_KEY)
    account_id = str(uuid.uuid4())  # Trackunit's account ids are UUIDs
    repo.install(account_id, "@trackunit-examples/fleet-insights-app", trackunit_like_credentials())

    key = KEYS.key_for(account_id)
    assert redis_client.object("encoding", key) == b"listpack"
    assert redis_client.memory_usage(key, samples=0) <= RECORD_BUDGET
    assert len(read_sealed(redis_client, key)) > CRED_PIECE  # so the pieces are what keeps it compact
    assert all(len(redis_client.hget(key, name)) <= CRED_PIECE for name in pieces(redis_client, account_id))


def test_a_reinstall_with_a_shorter_secret_leaves_no_piece_of_the_longer_one(redis_client):
    repo = repository(redis_client, VAULT_KEY)
    repo.install("acc-1", APP_ID, Credentials("client", "s" * 1000))
    assert len(pieces(redis_client, "acc-1")) > 16
    repo.revoke("acc-1", repo.get("acc-1").generation, 2**31)

    repo.install("acc-1", APP_ID, Credentials("client", "short"))

    assert pieces(redis_client, "acc-1") == [b"cred.0", b"cred.1"]
    record, opened = repo.load("acc-1")
    assert opened == Credentials("client", "short") and opened.client_secret == "short"
    assert record.status == "active" and record.revoked_until is None
    assert redis_client.hget(KEYS.key_for("acc-1"), "revoked_until") is None


def test_a_record_written_as_one_field_still_opens_and_rotation_moves_it_to_pieces(redis_client):
    """Hashes written before the pieces keep working, and `vault rotate` rewrites them in the new layout."""
    repository(redis_client, OLD_KEY).install("acc-1", APP_ID, Credentials("client-1", "secret-1"))
    key = KEYS.key_for("acc-1")
    sealed = read_sealed(redis_client, key)
    redis_client.hdel(key, *pieces(redis_client, "acc-1"))
    redis_client.hset(key, "cred", sealed)

    assert repository(redis_client, VAULT_KEY, OLD_KEY).load("acc-1")[1] == Credentials("client-1", "secret-1")
    report = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate()

    assert report.total(RESEALED) == 1
    assert pieces(redis_client, "acc-1") == [
        f"{Field.CRED_PIECE}{n}".encode() for n in range(len(pieces(redis_client, "acc-1")))
    ]
    assert b"cred" not in redis_client.hkeys(key)
    assert Sealer.key_id_of(read_sealed(redis_client, key)) == NEW_ID
    assert repository(redis_client, VAULT_KEY).load("acc-1")[1] == Credentials("client-1", "secret-1")


def test_a_one_field_write_by_an_older_release_wins_over_the_pieces_beside_it(redis_client):
    """During a rolling deploy a release from before the pieces re-installs by setting `cred` alone.

    Its write is the newer one: the pieces left beside it must not be read, and rotation must keep it.
    """
    repo = repository(redis_client, OLD_KEY)
    repo.install("acc-1", APP_ID, Credentials("client-old", "secret-old" * 20))  # more pieces than the newer value
    stale = len(pieces(redis_client, "acc-1"))
    newer = repo.sealer.seal(b'{"id": "client-new", "secret": "secret-new"}', aad=credentials_aad(APP_ID, "acc-1"))
    redis_client.hset(KEYS.key_for("acc-1"), "cred", newer)  # what the older release's install writes

    assert repo.load("acc-1")[1] == Credentials("client-new", "secret-new")
    report = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate()

    assert report.total(RESEALED) == 1
    names = pieces(redis_client, "acc-1")
    assert b"cred" not in names and 0 < len(names) < stale
    assert names == sorted(f"{Field.CRED_PIECE}{n}".encode() for n in range(len(names)))
    assert repository(redis_client, VAULT_KEY).load("acc-1")[1] == Credentials("client-new", "secret-new")


def test_a_record_of_thousands_of_pieces_installs_opens_and_rotates(redis_client):
    """The scripts set the pieces one by one: Lua's unpack() of ~8000 values would overflow its stack."""
    secret = "s" * 400_000
    repository(redis_client, OLD_KEY).install("acc-1", APP_ID, Credentials("client", secret))
    assert len(pieces(redis_client, "acc-1")) > 6000

    assert rotation(redis_client, VAULT_KEY, OLD_KEY).rotate().total(RESEALED) == 1
    assert repository(redis_client, VAULT_KEY).load("acc-1")[1].client_secret == secret


def test_rotation_rewrites_a_one_field_record_as_pieces_even_under_the_current_key(redis_client):
    """An older release re-installing during the deploy seals with the current key, in one field."""
    repo = repository(redis_client, VAULT_KEY)
    repo.install("acc-1", APP_ID, Credentials("client-old", "secret-old" * 20))
    newer = repo.sealer.seal(b'{"id": "client-new", "secret": "secret-new"}', aad=credentials_aad(APP_ID, "acc-1"))
    redis_client.hset(KEYS.key_for("acc-1"), "cred", newer)

    first = rotation(redis_client, VAULT_KEY).rotate()
    second = rotation(redis_client, VAULT_KEY).rotate()

    assert first.total(RESEALED) == 1 and second.total(RESEALED) == 0
    assert b"cred" not in pieces(redis_client, "acc-1")
    assert redis_client.object("encoding", KEYS.key_for("acc-1")) == b"listpack"
    assert repo.load("acc-1")[1] == Credentials("client-new", "secret-new")


@pytest.mark.parametrize("values", [[], [b"cred.0"], [b"cred.0", b"x", b"cred.1"]])
def test_the_scripts_refuse_an_odd_or_empty_list_of_pieces_and_change_nothing(redis_client, values):
    repo = repository(redis_client, VAULT_KEY)
    repo.install("acc-1", APP_ID, Credentials("client", "secret"))
    key = KEYS.key_for("acc-1")
    before = redis_client.hgetall(key)
    swap = rotation(redis_client, VAULT_KEY)._swap_credentials
    install = repo._install

    with pytest.raises(redis.ResponseError, match="expected field, value pairs"):
        swap(account=key, app=APP_ID, sealed=read_sealed(redis_client, key), pieces=values)
    with pytest.raises(redis.ResponseError, match="expected field, value pairs"):
        install(
            account=key,
            cache=KEYS.key_for("acc-1", "cache"),
            index=KEYS.index(KEYS.group_of("acc-1")),
            revoked=KEYS.revoked(KEYS.group_of("acc-1")),
            generation=KEYS.generation(KEYS.group_of("acc-1")),
            app=APP_ID,
            now=1,
            account_id="acc-1",
            channel=KEYS.channel,
            iat="",
            pieces=values,
            **repo.outbox.script_args("acc-1"),
        )

    assert redis_client.hgetall(key) == before
