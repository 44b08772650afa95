"""vault.rotation against a real redis-server: re-seal every record, lose none, clobber none."""

from __future__ import annotations

import base64
import time

import pytest
import redis

from cli.vault_commands import report_dict
from tests.support.constants import APP_ID, OLD_KEY, VAULT_KEY
from tests.support.records import read_sealed, write_sealed
from tests.support.rotation import (
    KEYS,
    NEW_ID,
    OLD_ID,
    SLOT,
    THIRD_KEY,
    account,
    cached,
    creds,
    generation,
    install_many,
    repository,
    rotation,
    token_cache,
    token_key,
)
from vault.accounts import Credentials, join_sealed
from vault.keys import key_id, parse_key
from vault.layout import Field, KeySpace
from vault.rotation import (
    CHANGED,
    CREDENTIALS,
    CURRENT,
    FAILED,
    MAX_ATTEMPTS,
    OPENS,
    RESEALED,
    SKIPPED,
    TOKEN,
)
from vault.seal import Sealer

# Issue 18: every test here runs on a single Redis and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.topologies("single", "cluster")

# Helpers ---------------------------------------------------------------------------------------


def dump_all(r) -> dict[bytes, bytes]:
    return {key: r.dump(key) for key in r.scan_iter(count=1000)}


def without_pieces(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """An account hash without its sealed credentials."""
    return {name: value for name, value in fields.items() if not name.startswith(Field.CRED_PIECE.encode())}


def totals(report) -> dict[str, int]:
    return report_dict(report)["totals"]


def count(report, outcome: str, kind: str, key_id: str) -> int:
    return report.total(outcome, kind=kind, key_id=key_id)


# Rotation ----------------------------------------------------------------------------------------


def test_rotate_reseals_credentials_and_tokens_and_changes_nothing_else(redis_client):
    install_many(redis_client, 30, tokens_every=3)
    repository(redis_client, OLD_KEY).revoke(account(4), generation(redis_client, 4), int(time.time()) + 60)
    hashes = {account(i): redis_client.hgetall(KEYS.key_for(account(i))) for i in range(30)}
    others = {
        key: redis_client.dump(key)
        for key in redis_client.scan_iter(count=1000)
        if (parsed := KEYS.parse(key)) is None or parsed.kind not in (None, "token")
    }  # index and cache sets
    started = time.monotonic()
    ttl_before = {i: redis_client.pttl(token_key(i)) for i in range(0, 30, 3)}

    report = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate(batch=7)

    ttl_after = {i: redis_client.pttl(token_key(i)) for i in range(0, 30, 3)}
    elapsed_ms = (time.monotonic() - started) * 1000
    assert count(report, RESEALED, CREDENTIALS, OLD_ID) == 30 and count(report, RESEALED, TOKEN, OLD_ID) == 10
    assert totals(report) == {RESEALED: 40, CURRENT: 0, CHANGED: 0, SKIPPED: 0, FAILED: 0}
    assert report.complete and not report.problems

    new_only_repo, new_only_cache = repository(redis_client, VAULT_KEY), token_cache(redis_client, VAULT_KEY)
    for i in range(30):
        record, opened = new_only_repo.load(account(i))
        assert opened == creds(i) and opened.client_secret == creds(i).client_secret
        after = redis_client.hgetall(KEYS.key_for(account(i)))
        assert join_sealed(after) != join_sealed(hashes[account(i)])
        assert without_pieces(after) == without_pieces(
            hashes[account(i)]
        )  # status, gen, timestamps, revoked_until untouched
        assert Sealer.key_id_of(read_sealed(redis_client, KEYS.key_for(account(i)))) == NEW_ID
    assert new_only_repo.get(account(4)).status == "revoked"
    for i in range(0, 30, 3):
        assert new_only_cache.get(account(i), SLOT).access_token == f"token-{i}-v0"
        # The remaining TTL is kept: never reset, never dropped (only time passing lowers it).
        assert ttl_before[i] - elapsed_ms - 1 <= ttl_after[i] <= ttl_before[i]
    assert others == {key: redis_client.dump(key) for key in others}


def test_a_second_run_reseals_nothing_and_writes_nothing(redis_client):
    install_many(redis_client, 50, tokens_every=5)
    first = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate()
    assert totals(first)[RESEALED] == 60
    snapshot = dump_all(redis_client)

    second = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate()
    assert totals(second) == {RESEALED: 0, CURRENT: 60, CHANGED: 0, SKIPPED: 0, FAILED: 0}
    assert count(second, CURRENT, CREDENTIALS, NEW_ID) == 50 and count(second, CURRENT, TOKEN, NEW_ID) == 10
    assert dump_all(redis_client) == snapshot
    # Without the old key too: the records do not need it any more.
    assert totals(rotation(redis_client, VAULT_KEY).rotate())[CURRENT] == 60


def test_records_changed_while_rotating_are_never_clobbered_nor_brought_back(redis_client):
    install_many(redis_client, 40, tokens_every=1)
    web = repository(redis_client, VAULT_KEY, OLD_KEY)  # the web process, already on the new key
    web_tokens = token_cache(redis_client, VAULT_KEY, OLD_KEY)
    lagging = repository(redis_client, OLD_KEY)  # a web process that still seals with the old key
    calls: list[int] = []

    def web_process_meanwhile(records):
        calls.append(len(records))
        if len(calls) > 1:
            return
        assert len(records) == 80  # the whole keyspace in the first batch, so the counts below are exact
        for i in range(0, 5):
            web.install(account(i), APP_ID, creds(i, 1))  # re-install: new credentials, tokens dropped
        for i in range(5, 10):
            web.delete(account(i))
        for i in range(10, 15):
            assert web_tokens.put(
                account(i), generation(redis_client, i), SLOT, cached(f"token-{i}-v1", 20_000)
            )  # a refresh
        for i in range(15, 20):
            redis_client.delete(token_key(i))  # a token expiring
        lagging.install(account(20), APP_ID, creds(20, 2))  # changed, but still under the old key

    report = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate(batch=1000, before_write=web_process_meanwhile)

    assert calls == [80, 1]  # then once more: the lagging re-install, still under the old key, re-sealed again.
    # Changed: credentials of 5 re-installed and 5 deleted accounts; tokens of 5 re-installed, 5 deleted,
    # 5 refreshed, 5 expired accounts and of the lagging re-install (which dropped it).
    assert count(report, CHANGED, CREDENTIALS, OLD_ID) == 10 and count(report, CHANGED, TOKEN, OLD_ID) == 21
    assert count(report, RESEALED, CREDENTIALS, OLD_ID) == 30 and count(report, RESEALED, TOKEN, OLD_ID) == 19
    assert totals(report)[SKIPPED] == 0 and totals(report)[FAILED] == 0

    new_only = repository(redis_client, VAULT_KEY)
    new_tokens = token_cache(redis_client, VAULT_KEY)
    for i in range(40):
        loaded = new_only.load(account(i))
        if 5 <= i < 10:
            assert loaded is None and not list(redis_client.scan_iter(KEYS.pattern(account(i))))
            assert redis_client.zscore(KEYS.index(KEYS.group_of(account(i))), account(i)) is None
            continue
        expected = creds(i, 1) if i < 5 else creds(i, 2) if i == 20 else creds(i)
        assert loaded[1] == expected and loaded[1].client_secret == expected.client_secret
        token = new_tokens.get(account(i), SLOT)
        if i < 5 or 15 <= i <= 20:
            assert token is None and not redis_client.exists(token_key(i))  # not brought back
        else:
            assert token.access_token == (f"token-{i}-v1" if 10 <= i < 15 else f"token-{i}-v0")


def test_a_record_that_changes_on_every_attempt_is_skipped_and_left_as_written(redis_client):
    install_many(redis_client, 3)
    lagging = repository(redis_client, OLD_KEY)
    versions = iter(range(1, 100))
    last: list[Credentials] = []

    def reinstall_every_time(records):
        if any(r.account_id == account(0) and r.kind == CREDENTIALS for r in records):
            last.append(creds(0, next(versions)))
            lagging.install(account(0), APP_ID, last[-1])

    report = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate(before_write=reinstall_every_time)

    assert len(last) == MAX_ATTEMPTS
    assert count(report, SKIPPED, CREDENTIALS, OLD_ID) == 1 and count(report, RESEALED, CREDENTIALS, OLD_ID) == 2
    assert repository(redis_client, OLD_KEY).load(account(0))[1] == last[-1]
    rerun = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate()
    assert count(rerun, RESEALED, CREDENTIALS, OLD_ID) == 1 and count(rerun, CURRENT, CREDENTIALS, NEW_ID) == 2
    assert repository(redis_client, VAULT_KEY).load(account(0))[1] == last[-1]


class Interrupted(Exception):
    pass


def test_an_interrupted_rotation_is_finished_by_running_it_again(redis_client):
    install_many(redis_client, 600, tokens_every=10)
    batches: list[int] = []

    def crash_on_the_third_batch(records):
        batches.append(len(records))
        if len(batches) == 3:
            raise Interrupted()

    with pytest.raises(Interrupted):
        rotation(redis_client, VAULT_KEY, OLD_KEY).rotate(batch=100, before_write=crash_on_the_third_batch)

    midway = rotation(redis_client, VAULT_KEY, OLD_KEY).check()
    done, left = midway.total(OPENS, key_id=NEW_ID), midway.total(OPENS, key_id=OLD_ID)
    assert done == sum(batches[:2]) and done > 0 and left > 0 and done + left == 660
    assert not midway.problems

    rerun = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate(batch=100)
    assert totals(rerun) == {RESEALED: left, CURRENT: done, CHANGED: 0, SKIPPED: 0, FAILED: 0}
    final = rotation(redis_client, VAULT_KEY).check()
    assert final.total(OPENS, kind=CREDENTIALS, key_id=NEW_ID) == 600
    assert final.total(OPENS, kind=TOKEN, key_id=NEW_ID) == 60 and not final.problems


def test_limit_stops_a_rotation_after_that_many_records(redis_client):
    install_many(redis_client, 300)
    partial = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate(batch=64, limit=123)
    assert totals(partial)[RESEALED] == 123 and not partial.complete
    rest = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate(batch=64)
    assert totals(rest)[RESEALED] == 177 and totals(rest)[CURRENT] == 123 and rest.complete


# Records that do not open ----------------------------------------------------------------------------


def test_records_that_do_not_open_are_reported_by_account_and_left_untouched(redis_client):
    install_many(redis_client, 6, tokens_every=1)
    repository(redis_client, THIRD_KEY).install(account(0), APP_ID, creds(0))  # a key nobody configured
    tampered = bytearray(read_sealed(redis_client, KEYS.key_for(account(1))))
    tampered[-1] ^= 0x01
    write_sealed(redis_client, KEYS.key_for(account(1)), bytes(tampered))
    write_sealed(redis_client, KEYS.key_for(account(2)), read_sealed(redis_client, KEYS.key_for(account(3))))
    bad_token = bytearray(redis_client.get(token_key(4)))
    bad_token[40] ^= 0x80
    redis_client.set(token_key(4), bytes(bad_token), keepttl=True)
    broken = {
        key: redis_client.dump(key)
        for key in (KEYS.key_for(account(0)), KEYS.key_for(account(1)), KEYS.key_for(account(2)), token_key(4))
    }

    report = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate()

    assert count(report, FAILED, CREDENTIALS, OLD_ID) == 2 and count(report, FAILED, TOKEN, OLD_ID) == 1
    third_id = key_id(parse_key(THIRD_KEY, "third")).hex()
    assert count(report, FAILED, CREDENTIALS, third_id) == 1
    # (re-installing account 0 dropped its token: tokens of accounts 1-5 remain)
    assert count(report, RESEALED, CREDENTIALS, OLD_ID) == 3 and count(report, RESEALED, TOKEN, OLD_ID) == 4
    problems = {(p.account_id, p.record) for p in report.problems}
    assert problems == {
        (account(0), "credentials"),
        (account(1), "credentials"),
        (account(2), "credentials"),
        (account(4), f"token {SLOT}"),
    }
    assert {key: redis_client.dump(key) for key in broken} == broken
    text = " ".join(map(str, report.problems)) + repr(report_dict(report))
    for raw in [bytes(tampered), bytes(bad_token)]:
        assert raw.hex()[10:] not in text and base64.b64encode(raw).decode()[8:] not in text

    checked = rotation(redis_client, VAULT_KEY, OLD_KEY).check()
    assert {(p.account_id, p.record) for p in checked.problems} == problems
    assert checked.total(OPENS) == 7 and checked.total(FAILED) == 4


# Scope of a rotation ---------------------------------------------------------------------------------


def test_only_records_of_this_deployment_are_touched(redis_client):
    install_many(redis_client, 10)
    repository(redis_client, OLD_KEY, prefix="test2").install(account(0), APP_ID, creds(0))
    repository(redis_client, OLD_KEY, prefix="tes").install(account(1), APP_ID, creds(1))
    foreign = {key: redis_client.dump(key) for key in redis_client.scan_iter("tes*") if not key.startswith(b"test:")}
    theirs = {KeySpace("test2").key_for(account(0)).encode(), KeySpace("tes").key_for(account(1)).encode()}
    assert theirs <= set(foreign)

    report = rotation(redis_client, VAULT_KEY, OLD_KEY).rotate()

    assert totals(report)[RESEALED] == 10 and report.records == 10
    assert {key: redis_client.dump(key) for key in foreign} == foreign


@pytest.mark.topologies("single")  # an ACL user on one server
def test_rotate_and_check_walk_the_keyspace_with_scan_never_keys(redis_server, redis_client):
    install_many(redis_client, 20, tokens_every=2)
    redis_client.acl_setuser(
        "rotator", enabled=True, passwords=["+rotator-pw"], keys=["*"], channels=["*"], commands=["+@all", "-keys"]
    )
    client = redis.Redis(port=redis_server.port, username="rotator", password="rotator-pw", socket_timeout=5)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.keys("test:*")
        assert totals(rotation(client, VAULT_KEY, OLD_KEY).rotate())[RESEALED] == 30
        assert rotation(client, VAULT_KEY).check().total(OPENS, key_id=NEW_ID) == 30
    finally:
        client.close()
        redis_client.acl_deluser("rotator")
