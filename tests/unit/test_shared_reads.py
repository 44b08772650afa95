"""SharedReads: requests that miss memory for one key at once share one read, within its window and epoch."""

from __future__ import annotations

import threading

import pytest

from auth.memory.shared import SharedReads
from core.errors import Forbidden, StoreUnavailable

READERS = 20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now

    def wait_for_calls(self, count: int) -> None:
        for _ in range(1000):
            if self.calls >= count:
                return
            threading.Event().wait(0.005)
        raise AssertionError("the clock was not read")


class BlockingLoad:
    """A load that counts its calls and answers only when released."""

    def __init__(self, value: object = "token", error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> object:
        self.calls += 1
        self.started.set()
        assert self.release.wait(10)
        if self.error is not None:
            raise self.error
        return self.value


class CountingReads(SharedReads):
    """SharedReads that counts the readers that joined another's read, so a test can wait for them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.joined = 0

    def _result(self, read, load):
        self.joined += 1
        return super()._result(read, load)

    def wait_for_joined(self, count: int) -> None:
        for _ in range(2000):
            if self.joined >= count:
                return
            threading.Event().wait(0.005)
        raise AssertionError(f"{self.joined} of {count} readers joined")


def start_readers(reads: SharedReads, load, count: int, *, key: str = "k", epoch: int = 0):
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            value = reads.read(key, epoch, load)
            with lock:
                results.append(value)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, results, errors


def leader_and_joiners(reads: CountingReads, load: BlockingLoad, joiners: int, joiner_load=None):
    """One reader held in `load`, then `joiners` more that join its read; then `load` answers.
    (every reader's result, every reader's error), once all are done."""
    leader, results, errors = start_readers(reads, load, 1)
    assert load.started.wait(5)
    followers, more, more_errors = start_readers(reads, joiner_load or load, joiners)
    reads.wait_for_joined(joiners)
    load.release.set()
    join_all(leader + followers)
    return results + more, errors + more_errors


def join_all(threads) -> None:
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def test_readers_of_one_key_at_once_share_one_load():
    reads = CountingReads(window=5, wait=10)
    load = BlockingLoad()
    results, errors = leader_and_joiners(reads, load, READERS - 1)
    assert load.calls == 1
    assert results == ["token"] * READERS and errors == []
    assert len(reads) == 0  # nothing kept once the read is done: the next miss reads Redis again
    assert reads.read("k", 0, lambda: "newer") == "newer"


def test_another_key_is_read_on_its_own():
    reads = SharedReads(window=5, wait=10)
    first, second = BlockingLoad("one"), BlockingLoad("two")
    a, ra, _ = start_readers(reads, first, 1, key="a")
    assert first.started.wait(5)
    b, rb, _ = start_readers(reads, second, 1, key="b")
    assert second.started.wait(5)
    first.release.set()
    second.release.set()
    join_all(a + b)
    assert (first.calls, second.calls, ra, rb) == (1, 1, ["one"], ["two"])


def test_a_read_begun_before_an_invalidation_is_not_joined():
    reads = SharedReads(window=5, wait=10)
    old = BlockingLoad("before")
    leader, results, _ = start_readers(reads, old, 1, epoch=1)
    assert old.started.wait(5)
    assert reads.read("k", 2, lambda: "after") == "after"  # epoch 2: something changed since the read began
    old.release.set()
    join_all(leader)
    assert results == ["before"]


def test_a_read_older_than_the_window_is_not_joined():
    clock = Clock()
    reads = CountingReads(window=0.8, wait=10, clock=clock)
    old = BlockingLoad("old")
    leader, _, _ = start_readers(reads, old, 1)
    assert old.started.wait(5)
    clock.now += 0.7
    joined, results, _ = start_readers(reads, lambda: "fresh", 1)
    reads.wait_for_joined(1)  # 0.7 s in, it was still young enough to join
    clock.now += 0.2  # 0.9 s after the read began
    assert reads.read("k", 0, lambda: "fresh") == "fresh"
    old.release.set()
    join_all(leader + joined)
    assert results == ["old"]


def test_a_failure_is_shared_each_reader_getting_its_own_error():
    reads = CountingReads(window=5, wait=10)
    load = BlockingLoad(error=StoreUnavailable("Redis said no.", retry_after=7))
    results, errors = leader_and_joiners(reads, load, READERS - 1)
    assert load.calls == 1
    assert results == [] and len(errors) == READERS
    assert all(
        type(e) is StoreUnavailable and (e.retry_after, e.message, e.args) == (7, "Redis said no.", ("Redis said no.",))
        for e in errors
    )
    assert len({id(e) for e in errors}) == READERS
    assert len(reads) == 0


def test_a_joiner_waits_at_most_its_bound():
    reads = SharedReads(window=5, wait=0.2)
    load = BlockingLoad()
    leader, results, _ = start_readers(reads, load, 1)
    assert load.started.wait(5)
    with pytest.raises(StoreUnavailable):
        reads.read("k", 0, load)
    load.release.set()
    join_all(leader)
    assert results == ["token"] and load.calls == 1


class Stopped(BaseException):
    """Like GreenletExit or gevent's Timeout: ends the reader, is not an error to hand anyone else."""


@pytest.mark.parametrize("stop", [Stopped(), RuntimeError("a bug")], ids=["stopped", "bug"])
def test_a_read_that_ends_otherwise_shares_nothing_each_joiner_reads_itself(stop):
    reads = CountingReads(window=5, wait=10)
    own_reads = []
    results, errors = leader_and_joiners(
        reads, BlockingLoad(error=stop), 3, joiner_load=lambda: own_reads.append(1) or "own"
    )
    assert errors == [stop]
    assert results == ["own"] * 3 and len(own_reads) == 3


def test_a_shared_error_is_copied_without_calling_its_init_again():
    """Forbidden builds its message from an argument: copy.copy would build it again from the message."""
    reads = CountingReads(window=5, wait=10)
    original = Forbidden("token:read")
    _, errors = leader_and_joiners(reads, BlockingLoad(error=original), 2)
    assert [type(e) for e in errors] == [Forbidden] * 3
    assert all((e.args, str(e), e.message) == (original.args, str(original), original.message) for e in errors)
