"""What one run measures and how hard: the settings, the full and smoke presets, the section names."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Settings:
    smoke: bool
    accounts: int
    callback_installs: int
    install_concurrency: int
    rounds: int
    duration: int
    workers: int
    connections: int
    wrk_threads: int
    stampede: int
    stampede_delay: float
    rollovers: int
    rollover_expires_in: int
    rollover_delay: float
    margin: int
    economy_accounts: int
    economy_seconds: int
    economy_expires_in: int
    page_size: int
    install_wrk: bool
    python_load: bool
    budget: float
    # issue 13: many calls in flight
    inflight_rounds: int
    inflight_duration: int
    inflight_connections: int
    api_delay: float
    many_connections: int
    many_seconds: int
    fanout: int
    fanout_delay: float
    overhead_rounds: int
    overhead_duration: int
    # issue 16: webhook delivery lag at a steady install rate
    events_rate: int
    events_seconds: int
    tls: bool = True
    redis: str = "single"  # or "cluster": 3 masters + 3 replicas (issue 18)
    sections: frozenset[str] = frozenset()
    service_env: dict[str, str] = dataclasses.field(default_factory=dict)


FULL = dict(
    accounts=100_000,
    callback_installs=1000,
    rounds=9,
    duration=2,
    stampede=200,
    stampede_delay=0.5,
    rollovers=2,
    rollover_expires_in=20,
    rollover_delay=0.3,
    margin=2,
    economy_accounts=10,
    economy_seconds=60,
    economy_expires_in=6,
    page_size=1000,
    budget=1800.0,
    # runs longer than wrk's timeout, so that a request stuck past it is seen as a timeout
    inflight_rounds=5,
    inflight_duration=12,
    inflight_connections=256,
    api_delay=0.5,
    many_connections=1000,
    many_seconds=20,
    fanout=500,
    fanout_delay=0.5,
    overhead_rounds=7,
    overhead_duration=2,
    events_rate=100,
    events_seconds=10,
)
# The smoke run asserts counts only: a short proxied run without errors (few connections, so
# that any worker model passes), a tiny cold fan-out (N accounts -> N token calls, all 200).
SMOKE = dict(
    accounts=300,
    callback_installs=60,
    rounds=1,
    duration=1,
    stampede=200,
    stampede_delay=0.5,
    rollovers=1,
    rollover_expires_in=6,
    rollover_delay=0.05,
    margin=2,
    economy_accounts=2,
    economy_seconds=4,
    economy_expires_in=4,
    page_size=50,
    budget=240.0,
    inflight_rounds=1,
    inflight_duration=2,
    inflight_connections=8,
    api_delay=0.1,
    many_connections=0,
    many_seconds=0,
    fanout=20,
    fanout_delay=0.5,
    overhead_rounds=1,
    overhead_duration=1,
    events_rate=20,
    events_seconds=2,
)
#: Sections, in the order they run; --sections picks some (the accounts are always installed).
SECTIONS = ("paging", "hit", "stampede", "fanout", "rollover", "economy", "proxy", "tls", "overhead", "many", "events")
#: The variable the service is told to trust a CA bundle with (for Trackunit's URLs), see bench/README.md.
CA_BUNDLE_VARIABLE = "TRACKUNIT_CA_BUNDLE"
