"""api.hotproxy: a proxied call whose key and token the worker remembers is made before Flask,
and answered exactly as the view answers it; everything else still reaches the view.

Over real HTTP as in test_proxy (the vault in a thread, the simulator, a real redis-server). Each
test first makes the token this worker's memory (a fetch, then a Redis look that remembers it),
then counts which calls the early path answered (`early`), and compares with the view's answer
by turning the early path off (`view_only`).
"""

from __future__ import annotations

import hashlib
import logging

import pytest
from prometheus_client import REGISTRY

from api import hotproxy
from api.hotproxy import ProxyCalls
from simulator.state import large_body
from tests.integration.test_proxy import Answer, from_upstream, proxy, refused, send, token_of
from tests.support.constants import ACCOUNT, API_KEY

pytestmark = pytest.mark.topologies("single")

KEY = {"Authorization": f"Bearer {API_KEY}"}
CEILING_KEY = "ceiling-key-0123456789"
LIMITED_KEY = "limited-key-0123456789"
TOKENS_KEY = "tokens-only-0123456789"
READER_KEY = "proxy-reader-0123456789"
ASSETS = "api/asset/v1/assets"
UNKNOWN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
VARIES = frozenset({"x-request-id", "date", "server"})


@pytest.fixture
def env(env):
    keys = (
        f"ops:{API_KEY},ceiling:{CEILING_KEY} allow=proxy:read scopes=asset.view,"
        f"limited:{LIMITED_KEY} allow=proxy:read rate=1000/second,tokens:{TOKENS_KEY} allow=token:read,"
        f"reader:{READER_KEY} allow=proxy:read"
    )
    return {**env, "API_KEYS": keys}


@pytest.fixture
def account(install, vault_server, sim):
    install(ACCOUNT, scopes=("asset.view", "account.view"))
    remember(vault_server, KEY)
    sim.reset()  # counters and the API log from here; accounts and tokens are kept
    return ACCOUNT


def remember(server, headers: dict[str, str]) -> None:
    """Two calls: the first fetches the token, the second reads it back from Redis and keeps it in memory."""
    for _ in range(2):
        from_upstream(proxy(server, "GET", ASSETS, headers), 200)


@pytest.fixture
def early(monkeypatch):
    """The paths of the calls the early path answered."""
    answered: list[str] = []
    real = ProxyCalls._send

    def spy(self, environ, *args):
        answered.append(environ["RAW_URI"])
        return real(self, environ, *args)

    monkeypatch.setattr(ProxyCalls, "_send", spy)
    return answered


@pytest.fixture
def view_only(monkeypatch):
    """`view_only()`: from now on the view answers every call."""
    return lambda: monkeypatch.setattr(ProxyCalls, "_prepare", lambda self, environ, path: None)


def shape(answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
    """An answer without what differs from one request to the next."""
    headers = sorted((k.lower(), v) for k, v in answer.headers.items() if k.lower() not in VARIES)
    return answer.status, headers, answer.body


def line_of(record: logging.LogRecord) -> dict[str, object]:
    fields = ("event", "method", "route", "account_id", "status", "key_name", "path", "upstream_status")
    return {name: getattr(record, name, None) for name in fields}


def counted(label: str) -> float:
    return REGISTRY.get_sample_value("itv_proxy_requests_total", {"status": label}) or 0.0


# The call itself --------------------------------------------------------------------------------


def test_a_remembered_call_is_made_before_flask_and_answered_as_the_view_answers_it(
    vault_server, sim, account, early, view_only, caplog
):
    caplog.set_level(logging.INFO, logger="itv.audit")
    target = f"/v1/accounts/{ACCOUNT}/proxy/{ASSETS}?page=2&q=a%20b"
    headers = {**KEY, "Accept": "application/json", "X-Request-ID": "call-1", "Cookie": "c=1"}
    before = counted("2xx")
    fast = send(vault_server, "GET", target, headers)
    assert early == [target]
    view_only()
    slow = send(vault_server, "GET", target, headers)
    assert early == [target]  # the second went to the view
    assert shape(fast) == shape(slow)
    from_upstream(fast, 200)
    assert fast.headers["X-Request-ID"] == slow.headers["X-Request-ID"] == "call-1"
    assert counted("2xx") - before == 2
    first, second = sim.api_log
    assert (first.method, first.path, first.query) == (second.method, second.path, second.query)
    assert first.headers == second.headers  # the same allow-listed headers and token; never the cookie
    assert first.header("Cookie") is None and first.header("Authorization") == f"Bearer {token_of(sim)}"
    lines = [r for r in caplog.records if getattr(r, "event", "") == "proxy_call"]
    assert [line_of(r) for r in lines] == [line_of(lines[1])] * 2
    assert lines[0].request_id == "call-1" and isinstance(lines[0].duration_ms, float)


def test_a_call_without_a_body_of_every_method_is_made_early(vault_server, sim, account, early):
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        answer = proxy(vault_server, method, f"{ASSETS}/a-1", {**KEY, "Content-Length": "0"})
        assert answer.vault_error is None, answer.body
    assert len(early) == 5
    assert sim.api_requests_by_method == {"GET": 1, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 1}


def test_a_large_answer_streams_through_intact(vault_server, sim, account, early):
    size = 5 * 1024 * 1024 + 7
    answer = proxy(vault_server, "GET", f"api/test/v1/large?bytes={size}")
    from_upstream(answer, 200)
    assert answer.headers.get("Transfer-Encoding") == "chunked"  # passed on as it comes, not buffered whole
    assert hashlib.sha256(answer.body).digest() == hashlib.sha256(large_body(size)).digest()
    assert len(early) == 1


def test_a_401_to_the_remembered_token_refreshes_it_once_and_retries_once(vault_server, sim, account, early):
    refused_token = token_of(sim)
    sim.reject_token(refused_token)
    from_upstream(proxy(vault_server, "GET", ASSETS), 200)
    assert len(early) == 1
    assert sim.token_requests == 1
    assert [r.header("Authorization") for r in sim.api_log] == [f"Bearer {refused_token}", f"Bearer {token_of(sim)}"]


def test_a_refresh_refused_after_a_401_is_the_views_error_and_frees_the_connection(
    app, vault_server, sim, sim_server, account, early
):
    sim.revoke(ACCOUNT, revoke_tokens=True)  # the token gets a 401, the credentials invalid_client
    answer = proxy(vault_server, "GET", ASSETS, {**KEY, "X-Request-ID": "revoked-1"})
    refused(answer, 410, "credentials_revoked")
    assert len(early) == 1
    assert answer.headers["X-Request-ID"] == "revoked-1"
    assert answer.headers["Cache-Control"] == "no-store"
    pool = app.extensions["vault"].trackunit_api.pool.connection_from_url(sim_server.url)
    assert pool.pool.qsize() == pool.pool.maxsize


def test_an_unreachable_api_is_the_views_503_with_retry_after_its_line_and_its_count(
    vault_server, sim_server, account, early, view_only, caplog
):
    caplog.set_level(logging.INFO, logger="itv.request")
    sim_server.shutdown()  # Trackunit goes away
    before = counted("upstream_unavailable")
    fast = proxy(vault_server, "GET", ASSETS)
    assert len(early) == 1
    view_only()
    slow = proxy(vault_server, "GET", ASSETS)
    assert shape(fast) == shape(slow)
    refused(fast, 503, "upstream_unavailable")
    assert fast.headers["Retry-After"] == "5"
    assert counted("upstream_unavailable") - before == 2
    lines = [r for r in caplog.records if r.name == "itv.request" and getattr(r, "route", "") == hotproxy.ROUTE]
    assert [(r.getMessage(), r.status, r.key_name, r.account_id) for r in lines] == [
        (f"GET {hotproxy.ROUTE} 503", 503, "ops", ACCOUNT)
    ] * 2


def test_an_unexpected_error_once_the_call_is_made_is_a_500_that_quotes_nothing(
    vault_server, sim, account, early, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("do-not-" + "quote-me")  # the source line a traceback shows is not the text

    monkeypatch.setattr(hotproxy, "exchange", broken)
    answer = proxy(vault_server, "GET", ASSETS)
    refused(answer, 500, "internal_error")
    assert len(early) == 1
    assert "do-not-quote-me" not in answer.body.decode() and "do-not-quote-me" not in caplog.text
    assert "unhandled RuntimeError" in caplog.text


def test_a_failure_before_the_call_leaves_the_call_to_the_view(vault_server, sim, account, early, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("do-not-" + "quote-me")  # the source line a traceback shows is not the text

    monkeypatch.setattr(hotproxy, "upstream_url", broken)
    from_upstream(proxy(vault_server, "GET", ASSETS), 200)
    assert early == []
    assert sim.api_requests == 1  # sent once, by the view
    assert "proxy call path failed (RuntimeError)" in caplog.text and "do-not-quote-me" not in caplog.text


# What the early path leaves to the view -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [
        ("POST", ASSETS, KEY, b'{"name": "x"}', 403, None),  # a body (bounded reads are the view's); 403 upstream
        ("HEAD", ASSETS, KEY, None, 200, None),
        ("OPTIONS", ASSETS, KEY, None, 200, None),
        ("GET", ASSETS, {**KEY, "Upgrade": "websocket", "Connection": "Upgrade"}, None, 400, "bad_request"),
        # A token not in memory (for another scope: Trackunit then refuses the call, 403).
        ("GET", ASSETS, {**KEY, "Trackunit-Scope": "account.view"}, None, 403, None),
        ("GET", ASSETS, {**KEY, "Trackunit-Scope": "not.in.manifest"}, None, 400, "invalid_scope"),
        ("GET", "api/../../v1/accounts", KEY, None, 400, "invalid_path"),
        ("GET", "", KEY, None, 400, "invalid_path"),
        ("GET", ASSETS, {"Authorization": "Bearer wrong-key-0123456789"}, None, 401, "unauthorized"),
        ("GET", ASSETS, {}, None, 401, "unauthorized"),
        ("GET", ASSETS, {"Authorization": f"Bearer {TOKENS_KEY}"}, None, 403, "forbidden"),
        ("DELETE", f"{ASSETS}/a-1", {"Authorization": f"Bearer {READER_KEY}"}, None, 403, "forbidden"),
        ("GET", ASSETS, {"Authorization": f"Bearer {LIMITED_KEY}"}, None, 200, None),  # a rate limit
    ],
)
def test_what_memory_cannot_decide_goes_to_the_view(
    vault_server, sim, account, early, method, path, headers, body, status, code
):
    answer = proxy(vault_server, method, path, headers, body)
    assert early == []
    assert answer.status == status, answer.body
    if code is not None:
        refused(answer, status, code)


def test_an_account_not_installed_goes_to_the_view(vault_server, sim, account, early):
    refused(proxy(vault_server, "GET", ASSETS, account_id=UNKNOWN), 404, "account_not_found")
    refused(proxy(vault_server, "GET", ASSETS, account_id="bad%20id"), 404, "account_not_found")
    assert early == []
    assert (sim.token_requests, sim.api_requests) == (0, 0)


def test_a_keys_scope_ceiling_holds_before_flask_too(vault_server, sim, account, early):
    ceiling = {"Authorization": f"Bearer {CEILING_KEY}"}
    remember(vault_server, ceiling)  # its token: the required scopes within its ceiling (asset.view)
    early.clear()
    from_upstream(proxy(vault_server, "GET", ASSETS, ceiling), 200)
    assert len(early) == 1
    answer = proxy(vault_server, "GET", ASSETS, {**ceiling, "Trackunit-Scope": "asset.view account.view"})
    assert answer.status == 403 and answer.json()["error"]["code"] == "scope_not_allowed"
    assert len(early) == 1  # refused by the view


def test_without_a_raw_target_or_under_a_mount_point_the_view_answers(app, account, early):
    client = app.test_client()
    for overrides in ({"RAW_URI": ""}, {"SCRIPT_NAME": "/base"}):
        answer = client.get(f"/v1/accounts/{ACCOUNT}/proxy/{ASSETS}", headers=KEY, environ_overrides=overrides)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    assert early == []
