"""One endpoint's delivery state in Redis (vault.deliveries), step by step, against a real redis-server."""

from __future__ import annotations

import itertools
import time

from vault.deliveries import EndpointState, Outcome
from vault.layout import GROUPS, KeySpace
from vault.outbox import Outbox

KEYS = KeySpace("test")


_appended = itertools.count(1)


def append(redis_client, account_id: str) -> str:
    """An event of the account appended to its group's stream, with an id as the scripts make them (unique
    across groups: Redis's own `*` ids of two groups' streams collide within a millisecond)."""
    group = KEYS.group_of(account_id)
    event_id = f"{int(time.time() * 1000)}-{group + GROUPS * next(_appended)}"
    return redis_client.xadd(
        KEYS.events(group), {"type": "account.installed", "account_id": account_id}, id=event_id
    ).decode()


def test_consumers_of_gone_processes_are_forgotten_unless_they_hold_entries(redis_client):
    state = EndpointState(redis_client, KEYS, "ep")
    state.ensure_group()
    append(redis_client, "a1")
    assert len(state.read_new("host:1", 10)) == 1  # host:1 holds it (pending)
    events = KEYS.events(KEYS.group_of("a1"))
    for name in ("host:2", "me"):  # host:2 read nothing, and is gone
        redis_client.xgroup_createconsumer(events, state.group, name)
    # (host:1 may also have idle consumers, holding nothing, on the other groups' streams it read.)
    assert state.forget_consumers("me", 0) >= 1
    names = {c["name"] for c in redis_client.xinfo_consumers(events, state.group)}
    assert names == {b"host:1", b"me"}
    assert [e.fields["account_id"] for e in state.claim_stale("me", 0, 10)] == ["a1"]


def test_a_later_event_waits_behind_the_undelivered_one_of_its_account(redis_client):
    state = EndpointState(redis_client, KEYS, "ep")
    outbox = Outbox(redis_client, KEYS)
    state.ensure_group()
    first, other, second = append(redis_client, "a1"), append(redis_client, "a2"), append(redis_client, "a1")
    events = {e.id: e for e in state.read_new("me", 10)}
    assert not state.defer_if_held(events[first])
    state.settle(first, "a1", Outcome.RETRY, due=0.0, failures=1)  # a failed attempt: a1 is held
    assert not state.defer_if_held(events[other])  # another account does not wait
    assert state.defer_if_held(events[second])  # a1's next one waits, acknowledged
    assert [(d.event_id, d.attempts) for d in state.due(10)] == [(first, 1)]
    state.settle(first, "a1", Outcome.DELIVERED)
    assert [(d.event_id, d.account_id, d.attempts) for d in state.due(10)] == [(second, "a1", 0)]
    state.settle(second, "a1", Outcome.DELIVERED)
    state.settle(other, "a2", Outcome.DELIVERED)
    assert state.due(10) == [] and state.stats().held_accounts == 0 and state.stats().pending == 0
    assert outbox.info().length == 3  # delivery never deletes events: the feed still has them


def test_giving_up_a_lease_never_deletes_another_holders(redis_client):
    state = EndpointState(redis_client, KEYS, "ep-lease")
    assert state.hold_lease("old", 5)
    assert not state.hold_lease("new", 5)  # still the old one's
    redis_client.delete(KEYS.endpoint("ep-lease", "lease"))  # it expired: the old holder stalled past it
    assert state.hold_lease("new", 5)
    state.release_lease("old")  # the stalled one shuts down late
    assert not state.hold_lease("third", 5)  # the new holder keeps it
    state.release_lease("new")
    assert state.hold_lease("third", 5)


def test_a_round_retakes_its_own_unsettled_entries_first(redis_client):
    state = EndpointState(redis_client, KEYS, "ep-own")
    state.ensure_group()
    first = append(redis_client, "acct-own")
    assert [e.id for e in state.read_new("me", 10)] == [first]  # read, then its settle failed
    later = append(redis_client, "acct-own")
    assert [e.id for e in state.read_own_pending("me", 10)] == [first]  # found again at once, not after idling
    assert [e.id for e in state.read_new("me", 10)] == [later]
