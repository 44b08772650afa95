"""The outbox spread over the slot groups: ids, merged reads, expiry, the settle horizon, the watcher, deliveries.

Each test runs on a single Redis and on a Redis Cluster of 3 masters (where every script and command
may touch one slot only): the same code, the same expectations.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
import time

import pytest
from redis.cluster import RedisCluster

from core import tunables
from core.errors import EventsExpired
from events.delivery import EndpointDeliverer
from events.feed import EventFeed
from events.signing import generate_secret
from events.watch import StreamWatcher
from tests.support.flows import wait_for
from tests.support.receiver import Receiver
from vault.accounts import AccountRepository, Credentials
from vault.deliveries import EndpointState, Outcome, endpoint_id
from vault.keys import KeyRing
from vault.layout import GROUPS, KeySpace
from vault.outbox import Outbox, group_of_id, parse_id
from vault.seal import Sealer

KEYS = KeySpace("evt")
APP_ID = "@org/app"


def accounts_of_group(group: int, count: int) -> list[str]:
    """`count` account ids whose slot group is `group`."""
    found, n = [], 0
    while len(found) < count:
        if KEYS.group_of(f"acct-{n}") == group:
            found.append(f"acct-{n}")
        n += 1
    return found


@pytest.fixture(params=["single", "cluster"])
def store(request):
    """A client of a single Redis, or of a Redis Cluster: flushed before each test."""
    if request.param == "single":
        return request.getfixturevalue("redis_client")
    return request.getfixturevalue("cluster_client")  # every master flushed around the test


def repository(client, outbox: Outbox) -> AccountRepository:
    return AccountRepository(client, Sealer(KeyRing(bytes(range(32)))), KEYS, outbox=outbox)


def install(repo: AccountRepository, account_id: str, n: int = 0) -> None:
    repo.install(account_id, APP_ID, Credentials(f"client-{n}", f"secret-{n}"))


def stream_ids(client, group: int) -> list[str]:
    return [raw.decode() for raw, _ in client.xrange(KEYS.events(group))]


# Ids ---------------------------------------------------------------------------------------------


def test_ids_are_unique_ordered_and_name_their_group(store):
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    accounts = [f"acct-{n}" for n in range(64)]
    for account_id in accounts:
        install(repo, account_id)
    for account_id in accounts[::2]:
        install(repo, account_id, 1)  # account.reinstalled, in the same group as its install
    used = [group for group in KEYS.groups if stream_ids(store, group)]
    assert len(used) >= 8  # the accounts are spread over the groups
    for group in used:
        ids = stream_ids(store, group)
        assert all(parse_id(i)[1] % GROUPS == group for i in ids)  # the sequence names the group
    everything = outbox.after(None, 1000)
    ids = [e.id for e in everything]
    assert len(ids) == len(set(ids)) == 64 + 32  # never a collision across groups
    assert ids == sorted(ids, key=parse_id)  # merged in (ms, seq) order
    for account_id in accounts[::2]:  # each account's events in the order they were made
        assert [e.fields["type"] for e in everything if e.fields["account_id"] == account_id] == [
            "account.installed",
            "account.reinstalled",
        ]
    assert outbox.counts() == {"account.installed": 64, "account.reinstalled": 32}  # summed over the groups
    info = outbox.info()
    assert (info.length, info.added, info.trimmed) == (96, 96, False)
    assert info.first_id == ids[0] and info.last_id == ids[-1] and outbox.newest_id() == ids[-1]
    assert [e.id for e in outbox.last(5)] == ids[-5:]
    assert outbox.get([ids[0], ids[-1], "1-0"]).keys() == {ids[0], ids[-1]}


def test_an_id_never_goes_below_its_groups_newest(store):
    """ms = max(the server's time, the group's newest ms); seq then goes up by GROUPS in that millisecond."""
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    first, second = accounts_of_group(5, 2)
    ahead = int(time.time() * 1000) + 600_000  # the group's newest id is ten minutes ahead (a clock stepped back)
    store.set(KEYS.event_last(5), f"{ahead}-{5 + 3 * GROUPS}")
    install(repo, first)
    install(repo, second)
    assert stream_ids(store, 5) == [f"{ahead}-{5 + 4 * GROUPS}", f"{ahead}-{5 + 5 * GROUPS}"]
    assert store.get(KEYS.event_last(5)).decode() == f"{ahead}-{5 + 5 * GROUPS}"
    (other,) = accounts_of_group(6, 1)
    install(repo, other)  # another group keeps its own clock: its id is now, with its own sequence
    (mine,) = stream_ids(store, 6)
    assert parse_id(mine)[0] < ahead and parse_id(mine)[1] == 6 and group_of_id(mine) == 6


# The feed ----------------------------------------------------------------------------------------


def test_the_feed_pages_across_groups_in_id_order_visiting_each_event_once(store):
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    for n in range(40):
        install(repo, f"acct-{n}")
    time.sleep(0.002)  # all below the horizon (a page with wait=0 ends early when it is empty)
    feed = EventFeed(outbox, StreamWatcher(outbox), settle_ms=0)
    seen: list[str] = []
    cursor = None
    while True:
        page, following = feed.page(cursor, 3, 0)
        if not page:
            assert following == cursor
            break
        seen += [e.id for e in page]
        cursor = following
    assert seen == sorted(seen, key=parse_id) and len(seen) == len(set(seen)) == 40
    assert seen == [e.id for e in outbox.after(None, 100)]


def test_expiry_is_judged_per_group(store):
    """A cursor is expired when some group's trims removed events after it, whatever other groups hold;
    `oldest`, the newest id a trim removed, is where a reader goes on without missing a retained event."""
    outbox = Outbox(store, KEYS, max_count=2 * GROUPS)  # each group keeps its newest 2
    repo = repository(store, outbox)
    feed = EventFeed(outbox, StreamWatcher(outbox), settle_ms=0)
    (quiet,) = accounts_of_group(3, 1)
    busy = accounts_of_group(9, 5)
    install(repo, quiet)
    (quiet_id,) = stream_ids(store, 3)
    busy_ids = []
    for n, account_id in enumerate(busy):
        time.sleep(0.002)  # later milliseconds than the quiet group's event
        install(repo, account_id, n)
        busy_ids.append(stream_ids(store, 9)[-1])
    time.sleep(0.002)  # all below the horizon
    kept = stream_ids(store, 9)
    assert kept == busy_ids[3:]  # 3 of the busy group's 5 were trimmed; the quiet group was not
    info = outbox.info()
    assert info.first_id == quiet_id and info.parts[9].trimmed and not info.parts[3].trimmed
    # The quiet group's event is the oldest retained, but the busy group's events after it are gone.
    with pytest.raises(EventsExpired) as expired:
        feed.page(quiet_id, 10, 0)
    assert expired.value.oldest == busy_ids[2]  # the newest trimmed
    events, _ = feed.page(busy_ids[2], 10, 0)  # where it says to go on, it reads every event retained after it
    assert [e.id for e in events] == kept
    assert [e.id for e in feed.page(None, 10, 0)[0]] == [quiet_id, *kept]  # from the oldest retained on


class ShiftedOutbox(Outbox):
    """An outbox whose servers' time is `shift_ms` ahead of theirs (the feed's sleeps move it on)."""

    shift_ms = 0

    def window(self, after, limit):
        window = super().window(after, limit)
        return dataclasses.replace(window, now_ms=window.now_ms + self.shift_ms)


def test_the_settle_horizon_holds_back_events_until_they_are_old_enough(store):
    outbox = ShiftedOutbox(store, KEYS)
    repo = repository(store, outbox)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the servers' clocks move on as the feed sleeps
        slept.append(seconds)
        outbox.shift_ms += int(seconds * 1000)

    feed = EventFeed(outbox, StreamWatcher(outbox), max_wait=120, settle_ms=60_000, sleep=sleep)
    install(repo, "acct-1")
    assert feed.page(None, 10, 0) == ([], "0-0")  # younger than the horizon: not handed out yet
    events, following = feed.page(None, 10, 120)  # a long-poll waits until it is past the horizon
    assert [e.fields["account_id"] for e in events] == ["acct-1"] and following == events[0].id
    assert 59 < sum(slept) <= 61 and len(slept) <= 2  # it slept once until then (no polling)
    install(repo, "acct-2")
    outbox.shift_ms += 61_000
    assert [e.fields["account_id"] for e in feed.page(following, 10, 0)[0]] == ["acct-2"]
    # By default the margin is there only on a cluster, where a group may move to another master's clock.
    expected = tunables.EVENT_FEED_SETTLE_MS if isinstance(store, RedisCluster) else 0
    assert EventFeed(outbox, StreamWatcher(outbox)).settle_ms == expected


def test_a_read_right_after_a_write_sees_it(store):
    """Even with `wait=0` the feed waits the millisecond until a committed event is below the horizon."""
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    feed = EventFeed(outbox, StreamWatcher(outbox), settle_ms=0)
    for n in range(20):
        install(repo, f"acct-{n}")
        page, _ = feed.page(None, 100, 0)
        assert len(page) == n + 1


# The watcher -------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [0, 7, GROUPS - 1])
def test_the_watcher_wakes_for_an_event_of_any_group(store, group):
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    install(repo, accounts_of_group((group + 1) % GROUPS, 1)[0])  # something in another group first
    watcher = StreamWatcher(outbox)
    start = outbox.newest_id()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(watcher.wait_beyond(start, 20)))
    waiter.start()
    try:
        wait_for(lambda: watcher.waiting == 1 and watcher._last is not None)  # watching from `start`
        install(repo, accounts_of_group(group, 1)[0])
        waiter.join(10)
        assert woke == [True]
    finally:
        watcher.stop()
        waiter.join(10)


# Deliveries --------------------------------------------------------------------------------------


def test_delivery_state_is_kept_per_group_and_read_over_all_of_them(store):
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    state = EndpointState(store, KEYS, "ep")
    state.ensure_group()
    a, b = accounts_of_group(2, 1)[0], accounts_of_group(12, 1)[0]
    install(repo, a)
    install(repo, b)
    install(repo, a, 1)  # a's second event: it waits behind the first once that fails
    new = state.read_new("me", 10)
    assert new == sorted(new, key=lambda e: e.order)  # merged in id order (which is commit order per group only)
    first, second = [e for e in new if e.fields["account_id"] == a]
    (other,) = [e for e in new if e.fields["account_id"] == b]
    assert [e.fields["type"] for e in (first, second)] == ["account.installed", "account.reinstalled"]
    assert state.read_own_pending("me", 10) == new  # pending in both groups' streams until settled
    assert not state.defer_if_held(first)
    state.settle(first.id, a, Outcome.RETRY, due=0.0, failures=1)
    assert state.defer_if_held(second)  # it waits behind the first, in a's group
    state.settle(other.id, b, Outcome.FAILED)
    stats = state.stats()
    assert (stats.pending, stats.retrying, stats.held_accounts, stats.failed, stats.lag) == (0, 1, 1, 1, 0)
    assert [(d.event_id, d.attempts) for d in state.due(10)] == [(first.id, 1)]
    assert [i for i, _ in state.failed(10)] == [other.id]
    state.settle(first.id, a, Outcome.DELIVERED)
    assert [(d.event_id, d.account_id, d.attempts) for d in state.due(10)] == [(second.id, a, 0)]
    state.settle(second.id, a, Outcome.DELIVERED)
    assert state.next_due() is None
    # An operator's replay, of events of both groups: due now, each in its account's group.
    assert state.replay(new) == 3
    due = state.due(10)
    assert sorted(d.event_id for d in due) == sorted(e.id for e in new) and state.stats().failed == 0
    assert all(d.account_id == e.fields["account_id"] for d in due for e in new if e.id == d.event_id)
    assert outbox.get([d.event_id for d in due], group=KEYS.group_of(a)).keys() == {first.id, second.id}


def test_a_dead_consumers_entries_of_every_group_are_claimed(store):
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    state = EndpointState(store, KEYS, "ep")
    state.ensure_group()
    accounts = [accounts_of_group(g, 1)[0] for g in (1, 8, 15)]
    for account_id in accounts:
        install(repo, account_id)
    assert len(state.read_new("dead", 10)) == 3
    claimed = state.claim_stale("me", 0, 10)
    assert [e.fields["account_id"] for e in claimed] == accounts
    assert [e.id for e in state.read_own_pending("me", 10)] == [e.id for e in claimed]
    assert state.forget_consumers("me", 0) >= 3  # "dead" holds nothing now, on each of the three streams
    for event in claimed:
        state.settle(event.id, event.fields["account_id"], Outcome.DELIVERED)
    assert state.stats().pending == 0


def test_a_delivery_loop_delivers_every_groups_events_in_order_per_account(store):
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    secret = generate_secret()
    failing = set()  # each account's first event fails once: its later ones wait behind it, in its group

    def answer(n: int, webhook_id: str) -> int:
        if webhook_id in failing:
            return 200
        failing.add(webhook_id)
        return 503

    receiver = Receiver(secret, answer)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    url = receiver.url
    watcher = StreamWatcher(outbox)
    deliverer = EndpointDeliverer(url, EndpointState(store, KEYS, endpoint_id(url)), outbox, key, [0.1] * 3, watcher)
    deliverer.state.ensure_group()
    stop = threading.Event()
    loop = threading.Thread(target=deliverer.run, args=(stop,))
    loop.start()
    accounts = [accounts_of_group(g, 1)[0] for g in (0, 4, 11, 15)]
    try:
        for account_id in accounts:
            install(repo, account_id)
            install(repo, account_id, 1)
            repo.delete(account_id)
        for account_id in accounts:
            got = receiver.wait_for_types(account_id, ["account.installed", "account.reinstalled", "account.deleted"])
            assert len(got) == 3  # each delivered once, in the order the account's changes were made
        wait_for(lambda: (s := deliverer.state.stats()).pending == 0 and s.retrying == 0 and s.lag == 0)
    finally:
        stop.set()
        loop.join(10)
        watcher.stop()
        receiver.close()
    assert receiver.rejected == [] and len(receiver.delivered()) == 12


def test_on_a_single_redis_a_read_of_all_groups_is_one_snapshot(redis_client, monkeypatch):
    """One MULTI: no script can append to a group already read and then to one not read yet (its id would
    be below the one handed out after it, and a reader past that would never see it)."""
    made: list[bool] = []
    pipeline = redis_client.pipeline

    def spy(transaction: bool = True, shard_hint=None):
        made.append(transaction)
        return pipeline(transaction=transaction, shard_hint=shard_hint)

    monkeypatch.setattr(redis_client, "pipeline", spy)
    outbox = Outbox(redis_client, KEYS)
    outbox.after(None, 10)
    outbox.last(10)
    outbox.newest_id()
    outbox.window(None, 10)  # the feed's read, with the server's TIME in the same MULTI: its horizon
    assert made == [True, True, True, True]


# Commit order: the feed's horizon ---------------------------------------------------------------


def read_to_the_end(feed: EventFeed, outbox: Outbox, cursor: str | None, timeout: float = 15) -> tuple[list[str], str]:
    """Page from `cursor` until the cursor is the newest id of all groups: the ids handed out, and the cursor."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    newest = outbox.newest_id()
    while (cursor or "0-0") != newest and time.monotonic() < deadline:
        page, cursor = feed.page(cursor, 100, 2)
        seen += [e.id for e in page]
    return seen, cursor or "0-0"


def test_an_event_stamped_ahead_is_not_handed_out_before_the_time_passes_it(store):
    """Group 5's newest id is a minute ahead of the server's clock (the clock stepped back), so its next
    event is stamped a minute ahead; group 0's event, committed after it, is stamped now: below it. Had
    the feed handed out group 5's event, a reader after it would never see group 0's."""
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    feed = EventFeed(outbox, StreamWatcher(outbox))
    ahead = int(time.time() * 1000) + 60_000
    store.set(KEYS.event_last(5), f"{ahead}-5")
    install(repo, accounts_of_group(5, 1)[0])  # stamped `ahead`
    page, cursor = feed.page(None, 10, 0)
    assert page == [] and cursor == "0-0"  # a commit in another group may still get an id below it
    (late,) = accounts_of_group(0, 1)
    install(repo, late)  # stamped now
    page, cursor = feed.page(cursor, 10, 5)
    assert [e.fields["account_id"] for e in page] == [late] and parse_id(cursor)[0] < ahead


def test_concurrent_writers_in_several_groups_and_a_polling_reader(store):
    """Every event is handed out exactly once and in id order, however commits in different groups interleave
    with the reader's reads (without the horizon, a commit in a group of a lower number within the same
    millisecond as an event already handed out got an id below it and was skipped for good)."""
    outbox = Outbox(store, KEYS)
    repo = repository(store, outbox)
    feed = EventFeed(outbox, StreamWatcher(outbox))
    writers = [
        threading.Thread(target=lambda accounts=accounts: [install(repo, a) for a in accounts])
        for accounts in (accounts_of_group(group, 150) for group in (0, 6, 13))
    ]
    seen: list[str] = []
    cursor = None
    for writer in writers:
        writer.start()
    try:
        while any(writer.is_alive() for writer in writers):
            page, cursor = feed.page(cursor, 50, 0)
            seen += [e.id for e in page]
    finally:
        for writer in writers:
            writer.join(60)
    rest, _ = read_to_the_end(feed, outbox, cursor)
    seen += rest
    everything = [e.id for e in outbox.after(None, 1000)]
    assert len(everything) == 450
    assert len(seen) == len(set(seen))  # none twice
    assert seen == sorted(seen, key=parse_id)  # in order
    assert sorted(set(everything) - set(seen), key=parse_id) == []  # none skipped
    assert seen == everything


# Trimming: the newest id a trim removed --------------------------------------------------------


@pytest.fixture
def small_nodes(store):
    """Stream macro nodes of 4 entries, so that a trim by MINID ~ drops a whole node of a quiet group."""
    target = {"target_nodes": RedisCluster.PRIMARIES} if isinstance(store, RedisCluster) else {}
    before = store.config_get("stream-node-max-entries", **target)
    if isinstance(store, RedisCluster):
        before = next(iter(before.values())) if "stream-node-max-entries" not in before else before
    store.config_set("stream-node-max-entries", 4, **target)
    yield
    store.config_set("stream-node-max-entries", before["stream-node-max-entries"], **target)


def test_a_reader_up_to_date_is_not_refused_when_a_quiet_groups_old_events_are_trimmed(store, small_nodes):
    """The reviewer's case: a trim drops a quiet group's whole old node, leaving only the new event; a
    reader that has every event up to the newest has lost nothing, so it reads on (no 410)."""
    shift = [0.0]
    outbox = Outbox(store, KEYS, retention=60, clock=lambda: time.time() + shift[0])
    repo = repository(store, outbox)
    feed = EventFeed(outbox, StreamWatcher(outbox), settle_ms=0)
    quiet, (busy,) = accounts_of_group(3, 5), accounts_of_group(9, 1)
    for account_id in quiet[:4]:
        install(repo, account_id)  # one full node of the quiet group's stream
    time.sleep(0.003)
    install(repo, busy)  # a later event of another group: the newest
    seen, cursor = read_to_the_end(feed, outbox, None)
    assert len(seen) == 5 and cursor == stream_ids(store, 9)[-1]
    time.sleep(0.1)
    shift[0] = 60 - 0.05  # the retention now ends 50 ms ago: the quiet group's old events are past it
    install(repo, quiet[4])
    (new,) = stream_ids(store, 3)  # only the new event is left in the quiet group
    page, following = feed.page(cursor, 10, 2)
    assert [e.id for e in page] == [new] and following == new


def test_a_reader_that_lost_events_is_refused_with_where_to_resume_without_a_gap(store, small_nodes):
    """A cursor below the newest id a trim removed has lost events: 410, with that id as `oldest`; from
    there on nothing is missing (before the fix: the trimmed group's first retained id, past itself)."""
    shift = [0.0]
    outbox = Outbox(store, KEYS, retention=60, clock=lambda: time.time() + shift[0])
    repo = repository(store, outbox)
    feed = EventFeed(outbox, StreamWatcher(outbox), settle_ms=0)
    quiet, busy = accounts_of_group(3, 5), accounts_of_group(9, 2)
    for account_id in (quiet[0], quiet[1], quiet[2], busy[0], quiet[3], busy[1]):
        install(repo, account_id)
        time.sleep(0.003)
    q0, _, _, q3 = stream_ids(store, 3)
    b0, b1 = stream_ids(store, 9)
    time.sleep(0.1)
    shift[0] = 60 - 0.05  # the retention now ends 50 ms ago
    install(repo, quiet[4])  # trims q0..q3 of group 3; group 9 keeps b0 and b1 (nothing appended there)
    (q4,) = stream_ids(store, 3)
    assert stream_ids(store, 9) == [b0, b1]
    for lost in (q0, b0):  # q1..q3 were after it, and are gone
        with pytest.raises(EventsExpired) as expired:
            feed.page(lost, 10, 2)
        assert expired.value.oldest == q3  # the newest id a trim removed
    # From there on nothing is missing: every event retained after it is handed out.
    assert [e.id for e in feed.page(q3, 10, 2)[0]] == [b1, q4]
    assert [e.id for e in feed.page(b1, 10, 2)[0]] == [q4]  # after the newest removed: nothing lost, no 410


def test_a_long_poll_answers_right_after_the_commit(redis_client):
    """On a single Redis the event is below the horizon from the next millisecond: the long-poll, woken by
    the watcher, waits that millisecond and answers, not a watcher block or a settle margin later."""
    outbox = Outbox(redis_client, KEYS)
    repo = repository(redis_client, outbox)
    watcher = StreamWatcher(outbox)
    feed = EventFeed(outbox, watcher)
    answered: list[tuple[list, float]] = []
    poll = threading.Thread(target=lambda: answered.append((feed.page(None, 10, 20)[0], time.monotonic())))
    poll.start()
    try:
        wait_for(lambda: watcher.waiting == 1 and watcher._last is not None)
        install(repo, accounts_of_group(4, 1)[0])
        committed = time.monotonic()
        poll.join(10)
        ((events, at),) = answered
        assert len(events) == 1 and at - committed < 0.25
    finally:
        watcher.stop()
        poll.join(10)
