"""Shared reads: the requests of one worker that miss memory for the same key at once share one Redis read.

A worker holds many requests at once (gevent), and all of them miss memory together: when it
starts, when an account changes, or whenever memory is not trusted (the invalidation feed has not
proven itself recently, as on a saturated worker). Without sharing, each would take a pooled Redis
connection (`REDIS_MAX_CONNECTIONS`, a handful) for the same answer, and the rest would queue for
one until the pool's timeout refused them.

A request joins a read only if it began at most `window` seconds ago (the staleness memory itself
is trusted for, `INVALIDATION_MAX_STALENESS`) and nothing was invalidated in this process since
(`epoch`), so a shared answer is never older than what memory could have served. The service's
own errors are shared too (the requests that waited get the same error, not one pool timeout
each); a read that ended otherwise (stopped, or a bug) shares nothing: each joiner reads itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from core.errors import StoreUnavailable, VaultError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Read(Generic[V]):
    __slots__ = ("done", "epoch", "error", "ok", "started", "value")

    def __init__(self, epoch: int, started: float) -> None:
        self.epoch = epoch
        self.started = started
        self.done = threading.Event()
        self.ok = False  # the load answered (its value may be None)
        self.value: V | None = None
        self.error: VaultError | None = None  # the load failed with the service's own error


class SharedReads(Generic[K, V]):
    def __init__(self, window: float, wait: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window  # a read older than this is not joined
        self.wait = wait  # the longest a joiner waits (the read itself is bounded by Redis's timeouts)
        self.clock = clock
        self._reads: dict[K, _Read[V]] = {}
        self._lock = threading.Lock()

    def read(self, key: K, epoch: int, load: Callable[[], V]) -> V:
        """`load()`'s answer, or that of the same key's read another request began moments ago."""
        now = self.clock()
        with self._lock:
            current = self._reads.get(key)
            if current is not None and current.epoch == epoch and now - current.started <= self.window:
                joined = current
            else:
                joined = None
                mine: _Read[V] = _Read(epoch, now)
                self._reads[key] = mine
        if joined is not None:
            return self._result(joined, load)
        try:
            mine.value = value = load()
            mine.ok = True
            return value
        except VaultError as exc:
            mine.error = exc
            raise
        finally:
            with self._lock:
                if self._reads.get(key) is mine:
                    del self._reads[key]
            mine.done.set()

    def _result(self, read: _Read[V], load: Callable[[], V]) -> V:
        if not read.done.wait(self.wait):
            raise StoreUnavailable("A Redis read in progress took too long.")
        if read.ok:
            return read.value  # type: ignore[return-value]  # set whenever ok is
        if read.error is not None:
            raise _copy(read.error) from None
        # The reader was stopped (its greenlet killed, its own timeout) or met a bug: nothing to share.
        return load()

    def __len__(self) -> int:
        """Reads in progress (for tests)."""
        return len(self._reads)


def _copy(error: VaultError) -> VaultError:
    """The error for one more request: a copy (its own traceback), made without calling `__init__` again."""
    copied = type(error).__new__(type(error))
    copied.__dict__.update(error.__dict__)
    copied.args = error.args
    return copied
