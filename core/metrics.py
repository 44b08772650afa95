"""Prometheus metrics (prometheus-client), correct under gunicorn with several workers.

When PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py sets it), each worker
writes its samples to files there and `/metrics` merges them; otherwise the
process's own registry is served. Metric objects are module-level, as
prometheus-client expects; label values are fixed vocabularies, never ids.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

TOKEN_REQUESTS = Counter(
    "itv_token_requests_total",
    "Token requests answered, by outcome (cache_hit, fetched, or an error code).",
    ["outcome"],
)
REFRESH_AHEAD = Counter(
    "itv_token_refresh_ahead_total", "Background refreshes started ahead of expiry, by result.", ["result"]
)
TRACKUNIT_CALLS = Counter(
    "itv_trackunit_token_calls_total",
    "Calls to Trackunit's token endpoint, by outcome (ok or an error code).",
    ["outcome"],
)
TRACKUNIT_SECONDS = Histogram(
    "itv_trackunit_token_seconds",
    "Duration of a token fetch from Trackunit, retries included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15),
)
SINGLE_FLIGHT_WAITS = Counter(
    "itv_single_flight_waits_total",
    "Token requests that waited on another request's fetch, by result.",
    ["result"],
)
CALLBACKS = Counter(
    "itv_callbacks_total", "Install callbacks, by outcome (stored, deleted, ignored, or an error code).", ["outcome"]
)
IDENTITY_WITHOUT_JTI = Counter(
    "itv_identity_without_jti_total",
    "Install callbacks whose verified identity token had no jti, so no replay binding applied.",
)
VERIFICATIONS = Counter(
    "itv_verifications_total",
    "Verification fetches with stored credentials (after UNINSTALLED), by result.",
    ["result"],
)
FORCED_REFRESHES = Counter(
    "itv_forced_refreshes_total",
    "force_refresh requests (and proxied 401s): fetched from Trackunit, or served the token a forced"
    " refresh fetched within FORCE_REFRESH_FLOOR.",
    ["outcome"],
)
PROXY_REQUESTS = Counter(
    "itv_proxy_requests_total", "Proxied API calls, by upstream status class or error code.", ["status"]
)
OVERLOADED = Counter(
    "itv_overloaded_total", "Requests answered 503 overloaded: their worker had MAX_IN_FLIGHT in flight."
)
CLIENT_TIMEOUTS = Counter(
    "itv_client_body_timeouts_total", "Requests answered 408: the client's body did not arrive within the deadline."
)

API_KEY_REFUSALS = Counter(
    "itv_api_key_refusals_total",
    "/v1 requests refused by the API key check, by reason "
    "(unauthorized, expired, forbidden, scope_not_allowed, rate_limited).",
    ["reason"],
)


class AccountsCollector:
    """`itv_accounts{status}` computed at scrape time from two O(1) Redis counts."""

    def __init__(self, accounts) -> None:
        self.accounts = accounts

    def collect(self):
        family = GaugeMetricFamily("itv_accounts", "Installed accounts by status.", labels=["status"])
        try:
            total, revoked = self.accounts.counts()
        except Exception:  # Redis down: scrape the rest
            return
        family.add_metric(["active"], total - revoked)
        family.add_metric(["revoked"], revoked)
        yield family


def render(accounts) -> tuple[bytes, str]:
    """The exposition text for one scrape."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Delegate(REGISTRY))
    registry.register(AccountsCollector(accounts))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Delegate:
    def __init__(self, registry) -> None:
        self.registry = registry

    def collect(self):
        return self.registry.collect()
