"""Releasing a slot's lock never raises: it expires by itself after LOCK_TIMEOUT if the release cannot run."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from auth.singleflight import release


class FailingLock:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def release(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.LockNotOwnedError("expired, taken by another"),
        redis.ConnectionError("down"),
        redis.TimeoutError("stalled"),
        SlotNotCoveredError("a cluster slot without a master"),  # not a RedisError
        RedisClusterException("cluster down"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_release_swallows_every_store_error(error):
    release(FailingLock(error))  # type: ignore[arg-type]


def test_release_lets_a_bug_through():
    with pytest.raises(AttributeError):
        release(FailingLock(AttributeError("a bug")))  # type: ignore[arg-type]
