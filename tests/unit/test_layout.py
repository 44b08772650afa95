"""The key layout: slot groups, their hash tags, and the one parser of account keys."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from vault.layout import GROUP_TAGS, GROUPS, AccountKey, KeySpace, group_of

KEYS = KeySpace("itv")
ACCOUNT_IDS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=128
)


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_each_group_tag_falls_in_its_own_share_of_the_slots():
    width = REDIS_CLUSTER_HASH_SLOTS // GROUPS
    assert [slot("{" + tag + "}") // width for tag in GROUP_TAGS] == list(range(GROUPS))


def test_three_masters_splitting_the_slots_evenly_hold_five_or_six_groups_each():
    # `redis-cli --cluster create` with 3 masters: 0-5460, 5461-10922, 10923-16383.
    bounds = [5461, 10923, REDIS_CLUSTER_HASH_SLOTS]
    per_master = collections.Counter(
        next(i for i, b in enumerate(bounds) if slot(KEYS.tag(g)) < b) for g in KEYS.groups
    )
    assert sorted(per_master.values()) == [5, 5, 6]


@given(ACCOUNT_IDS)
def test_every_key_an_account_change_touches_is_on_one_slot(account_id):
    group = group_of(account_id)
    keys = [
        KEYS.key_for(account_id),
        KEYS.key_for(account_id, "token", "scope set"),
        KEYS.key_for(account_id, "cache"),
        KEYS.index(group),
        KEYS.revoked(group),
        KEYS.generation(group),
        KEYS.events(group),
        KEYS.event_counts(group),
        KEYS.endpoint("e1", "retry", group),
        KEYS.waiting("e1", account_id),
    ]
    assert len({slot(key) for key in keys}) == 1


def test_accounts_spread_over_every_group():
    counts = collections.Counter(group_of(f"account-{i}") for i in range(4000))
    assert set(counts) == set(range(GROUPS))
    assert max(counts.values()) < 1.3 * 4000 / GROUPS


@given(ACCOUNT_IDS, st.sampled_from([(None, None), ("token", "a b:c"), ("cache", None), ("lock", "x")]))
def test_parse_names_what_key_for_built(account_id, below):
    kind, slot_name = below
    parts = [p for p in (kind, slot_name) if p is not None]
    assert KEYS.parse(KEYS.key_for(account_id, *parts).encode()) == AccountKey(account_id, kind, slot_name)


@pytest.mark.parametrize(
    "key",
    [
        b"itv:account:{acme}",  # the single-Redis layout of earlier releases
        b"itv:{g00.63}:account:acme",  # a real tag, but not acme's group
        b"itv:{g99.1}:account:acme",
        b"other:{g14.13}:account:acme",  # another deployment's prefix
        b"itv:{g14.13}:accounts",
    ],
)
def test_parse_refuses_keys_this_layout_never_wrote(key):
    assert group_of("acme") == 14  # the cases above assume it
    assert KEYS.parse(key) is None


def test_a_group_outside_the_range_is_refused():
    with pytest.raises(ValueError):
        KEYS.tag(GROUPS)
