"""Prometheus metrics (prometheus-client), correct under gunicorn with several workers.

When PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py sets it), each worker
writes its samples to files there and `/metrics` merges them; otherwise the
process's own registry is served. Metric objects are module-level, as
prometheus-client expects; label values are fixed vocabularies, never ids.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
# Account lifecycle events (events/): the count by type is read from Redis at scrape time (EventsCollector).
DELIVERIES = Counter(
    "itv_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome (delivered, status_4xx, status_5xx, timeout, unreachable, error).",
    ["outcome"],
)
DELIVERY_LAG = Histogram(
    "itv_webhook_delivery_lag_seconds",
    "Seconds from an event to its 2xx at a webhook endpoint (retries included).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 86400),
)
EVENTS_FAILED = Counter(
    "itv_webhook_events_failed_total", "Events marked failed for an endpoint: out of retries, or no longer retained."
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


class EventsCollector:
    """`itv_events_total{type}`: events ever appended, counted in Redis by the appending scripts (all processes)."""

    def __init__(self, outbox) -> None:
        self.outbox = outbox

    def collect(self):
        family = CounterMetricFamily(
            "itv_events", "Account lifecycle events appended to the outbox, by type.", labels=["type"]
        )
        try:
            counts = self.outbox.counts()
        except Exception:  # Redis down: scrape the rest
            return
        for kind, count in sorted(counts.items()):
            family.add_metric([kind], count)
        yield family


def render(accounts, outbox=None) -> tuple[bytes, str]:
    """The exposition text for one scrape."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Delegate(REGISTRY))
    registry.register(AccountsCollector(accounts))
    if outbox is not None:
        registry.register(EventsCollector(outbox))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Delegate:
    def __init__(self, registry) -> None:
        self.registry = registry

    def collect(self):
        return self.registry.collect()
