"""What the service reads of the servers' own reports: eviction policies and the replicas worth waiting for."""

from __future__ import annotations

import pytest

import vault.health
from vault.health import StoreHealth
from vault.replicas import Replicas


class FakeServer:
    def __init__(self, answer: dict) -> None:
        self.answer = answer

    def info(self, section: str, **_options: object) -> dict:
        return self.answer


@pytest.mark.parametrize(
    ("answer", "policy"),
    [
        ({"maxmemory_policy": "allkeys-lru", "used_memory": 1}, "allkeys-lru"),  # one master: its INFO itself
        ({"a:1": {"maxmemory_policy": "noeviction"}, "b:2": {"maxmemory_policy": "volatile-lru"}}, "volatile-lru"),
        ({"a:1": {"maxmemory_policy": "noeviction"}, "b:2": {"maxmemory_policy": "noeviction"}}, "noeviction"),
        ({}, None),
    ],
    ids=["one_master", "one_of_two_may_evict", "none_may_evict", "unknown"],
)
def test_a_cluster_reports_the_policy_of_a_master_that_may_evict(monkeypatch, answer, policy):
    monkeypatch.setattr(vault.health, "is_cluster", lambda client: True)
    assert StoreHealth(FakeServer(answer)).eviction_policy() == policy


def replication(*replicas: dict) -> dict:
    return {"role": "master", **{f"slave{i}": r for i, r in enumerate(replicas)}}


@pytest.mark.parametrize(
    ("replicas", "counted"),
    [
        ([{"state": "online", "lag": 0}, {"state": "online", "lag": 1}], 2),
        ([{"state": "online", "lag": 0}, {"state": "online", "lag": 30}], 1),  # frozen or cut off
        ([{"state": "wait_bgsave", "lag": 0}], 0),  # still in its first sync
    ],
    ids=["both", "one_silent", "syncing"],
)
def test_only_replicas_that_acknowledge_are_waited_for(replicas, counted):
    server = FakeServer(replication(*replicas))
    assert Replicas(server, wanted=5, timeout_ms=100)._connected(server, "master") == counted
