"""/metrics counts what happened, in one process and across gunicorn workers."""

import re

import pytest
import requests

from tests.support.gunicorn import GunicornServer

ACCOUNT = "acc-metrics"


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return 0.0


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return response.get_data(as_text=True)


def test_counts_match_what_the_test_did(client, install, auth_headers):
    before = scrape(client)
    install(ACCOUNT)
    for _ in range(3):
        assert client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).status_code == 200
    assert client.get(f"/v1/accounts/{ACCOUNT}/token?scope=nope", headers=auth_headers).status_code == 400
    assert client.get("/v1/accounts/missing/token", headers=auth_headers).status_code == 404
    after = scrape(client)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("itv_callbacks_total", outcome="stored") == 1
    assert delta("itv_token_requests_total", outcome="fetched") == 1
    assert delta("itv_token_requests_total", outcome="cache_hit") == 2
    assert delta("itv_token_requests_total", outcome="invalid_scope") == 1
    assert delta("itv_token_requests_total", outcome="account_not_found") == 1
    assert delta("itv_trackunit_token_calls_total", outcome="ok") == 1
    assert delta("itv_trackunit_token_seconds_count") == 1
    assert sample(after, "itv_accounts", status="active") == 1
    assert sample(after, "itv_accounts", status="revoked") == 0


def test_revoked_accounts_are_counted(client, install, auth_headers, sim_server):
    install(ACCOUNT)
    requests.post(f"{sim_server.url}/_sim/accounts/{ACCOUNT}/revoke", timeout=5)
    assert client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers).status_code == 410
    text = scrape(client)
    assert sample(text, "itv_accounts", status="revoked") == 1
    assert sample(text, "itv_accounts", status="active") == 0
    install(ACCOUNT)
    assert sample(scrape(client), "itv_accounts", status="revoked") == 0


def test_metrics_token_protects_the_endpoint(make_app):
    client = make_app(METRICS_TOKEN="metrics-secret-123456").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-123456"}).status_code == 200


@pytest.mark.slow
def test_counts_are_merged_across_gunicorn_workers(env, install, sim_server, auth_headers):
    server = GunicornServer(env, workers=3).start()
    try:
        install(ACCOUNT)  # through the thread server; same Redis
        for _ in range(30):  # new connections spread over the workers
            r = requests.get(f"{server.url}/v1/accounts/{ACCOUNT}/token", headers=auth_headers, timeout=20)
            assert r.status_code == 200
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        total = sample(text, "itv_token_requests_total", outcome="cache_hit") + sample(
            text, "itv_token_requests_total", outcome="fetched"
        )
        assert total == 30
        assert sample(text, "itv_token_requests_total", outcome="fetched") == 1
    finally:
        server.stop()
