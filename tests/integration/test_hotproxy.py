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
import time

import pytest
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder

from api import hotproxy, requestlog
from api import proxy as proxy_view
from api.admission import OVERLOADED
from api.hotproxy import ProxyCalls
from core.deadline import FetchDeadline
from proxy.upstream import TrackunitApi
from simulator.state import large_body
from tests.integration.test_proxy import Answer, from_upstream, proxy, refused, send, token_of
from tests.support.constants import ACCOUNT, API_KEY
from tests.support.elsewhere import Elsewhere

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
def account(app, install, vault_server, sim):
    install(ACCOUNT, scopes=("asset.view", "account.view"))
    remember(app, vault_server, KEY)
    sim.reset()  # counters and the API log from here; accounts and tokens are kept
    return ACCOUNT


def remember(app, server, headers: dict[str, str], scope: str | None = None) -> None:
    """Calls until the worker's memory holds the token: the first fetches it, the next reads it back
    from Redis and keeps it (once the invalidation feed has been heard: under gevent, a few switches)."""
    for _ in range(50):
        from_upstream(proxy(server, "GET", ASSETS, headers), 200)
        if app.extensions["vault"].tokens.remembered(ACCOUNT, scope) is not None:
            return
        time.sleep(0.02)
    raise AssertionError("the token never reached the worker's memory")


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


@pytest.fixture
def deadlines(monkeypatch):
    """The FetchDeadlines started and not yet closed (a call's deadline is closed with its connection)."""
    started: set[int] = set()
    start, close = FetchDeadline.start, FetchDeadline.close

    def tracked_start(self):
        started.add(id(self))
        start(self)

    def tracked_close(self):
        started.discard(id(self))
        close(self)

    monkeypatch.setattr(FetchDeadline, "start", tracked_start)
    monkeypatch.setattr(FetchDeadline, "close", tracked_close)
    return started


@pytest.fixture
def connections(monkeypatch):
    """One entry per upstream answer received: whether its connection was closed (back in the pool or dropped)."""
    closed: list[bool] = []
    real = TrackunitApi.send

    def send_tracked(self, *args, **kwargs):
        upstream = real(self, *args, **kwargs)
        index, close = len(closed), upstream.close
        closed.append(False)

        def tracked_close():
            closed[index] = True
            close()

        upstream.close = tracked_close
        return upstream

    monkeypatch.setattr(TrackunitApi, "send", send_tracked)
    return closed


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


def test_a_keys_scope_ceiling_holds_before_flask_too(app, vault_server, sim, account, early):
    ceiling = {"Authorization": f"Bearer {CEILING_KEY}"}
    remember(app, vault_server, ceiling, "asset.view")  # its token: the required scopes within its ceiling
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


def test_a_chunked_body_is_left_to_the_view_and_reaches_trackunit(vault_server, sim, account, early):
    body = b'{"name": "chunked"}'
    headers = {**KEY, "Content-Type": "application/json"}
    answer = proxy(vault_server, "POST", f"{ASSETS}/a-1", headers, body, chunked=True)
    assert early == []
    assert sim.api_log[-1].body == body, answer.body


def test_a_request_over_the_in_flight_limit_is_refused_not_proxied(app, sim, account, early):
    answer = app.test_client().get(
        f"/v1/accounts/{ACCOUNT}/proxy/{ASSETS}", headers=KEY, environ_overrides={OVERLOADED: True}
    )
    assert early == []
    assert answer.status_code == 503 and answer.json["error"]["code"] == "overloaded"
    assert sim.api_requests == 0


@pytest.mark.parametrize(
    ("target", "status"),
    [
        # The raw target has "proxy" in the fifth place, the decoded path (what Flask routes) does not.
        (f"/v1/accounts/{ACCOUNT}%2Ftoken%2Fx/proxy/{ASSETS}", 404),
        # A target gunicorn and werkzeug accept as absolute-form; its path is a token path, not the proxy's.
        (f"x:/v1/accounts/{ACCOUNT}/token/a://h/v1/accounts/{ACCOUNT}/proxy/{ASSETS}", 404),
        # Routed as ACCOUNT's proxy with the path "api/proxy/api/...": an encoded "/" must not shift it.
        (f"/v1/accounts/{ACCOUNT}%2Fproxy%2Fapi/proxy/{ASSETS}", 400),
        (f"/v1/accounts%2F{ACCOUNT}/proxy/proxy/{ASSETS}", 400),
    ],
)
def test_a_target_whose_route_is_not_its_raw_path_is_not_proxied(vault_server, sim, account, early, target, status):
    answer = send(vault_server, "GET", target, KEY)
    assert answer.status == status, answer.body
    assert early == [] and sim.api_requests == 0


# The end of a call that was made -------------------------------------------------------------


def call_through(app, start_response):
    """One proxied call straight into the WSGI app, as a server would make it; its body read and closed."""
    target = f"/v1/accounts/{ACCOUNT}/proxy/{ASSETS}"
    environ = EnvironBuilder(path=target, headers=KEY).get_environ()
    environ["RAW_URI"] = target
    answer = app.wsgi_app(environ, start_response)
    body = b"".join(answer)
    answer.close()
    return body


@pytest.mark.parametrize("path", ["early", "view"])
def test_an_answer_the_server_refuses_to_start_closes_its_call(
    app, sim, account, early, view_only, deadlines, connections, path
):
    if path == "view":
        view_only()

    def refusing(status, headers, exc_info=None):
        raise ValueError("the server refuses these headers")

    with pytest.raises(ValueError, match="refuses"):
        call_through(app, refusing)
    assert len(early) == (1 if path == "early" else 0)
    assert connections == [True], "the upstream connection was left open"
    assert not deadlines, "the call's deadline was left open"
    assert sim.api_requests == 1


class _Killed(BaseException):
    """What gevent raises into a greenlet it kills (GreenletExit is a BaseException too)."""


@pytest.mark.parametrize("path", ["early", "view"])
@pytest.mark.parametrize("failure", [RuntimeError, _Killed])
def test_a_failure_after_the_call_was_made_closes_the_call(
    app, sim, account, early, view_only, deadlines, connections, monkeypatch, path, failure
):
    """An error is the view's 500; a greenlet killed (a BaseException) goes on up, its call closed all the same."""
    if path == "view":
        view_only()

    def broken(*args, **kwargs):
        raise failure("answer failed")

    monkeypatch.setattr(proxy_view, "answer", broken)
    statuses: list[str] = []
    if failure is RuntimeError:
        body = call_through(app, lambda status, headers, exc_info=None: statuses.append(status))
        assert statuses == ["500 INTERNAL SERVER ERROR"] and b'"internal_error"' in body, body
    else:
        with pytest.raises(_Killed):
            call_through(app, lambda status, headers, exc_info=None: statuses.append(status))
    assert len(early) == (1 if path == "early" else 0)
    assert connections == [True] and not deadlines


def test_an_after_request_hook_that_fails_still_closes_the_views_call(
    app, sim, account, view_only, deadlines, connections, monkeypatch
):
    view_only()

    def failing(*args, **kwargs):
        raise RuntimeError("the request line could not be written")

    monkeypatch.setattr(requestlog, "log_audit", failing)  # called by the after_request hook (_finish)
    statuses: list[str] = []
    call_through(app, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["500 INTERNAL SERVER ERROR"]
    assert connections == [True] and not deadlines


def test_an_upstream_header_that_cannot_be_passed_on_is_dropped(make_app, account, early):
    api = Elsewhere(
        headers=(("Link", "<a>; rel=next\x01"), ("X-Total-Count", "3"), ("Content-Length", "2, 2"), ("ETag", "\t\x80é"))
    )
    answers = []
    try:
        client = make_app(TRACKUNIT_API_URL=api.url).test_client()
        # Through the view until this new app's memory holds the token (its feed must be heard first:
        # under gevent that takes a few switches), then once before Flask.
        while not early and len(answers) < 50:
            answers.append(client.get(f"/v1/accounts/{ACCOUNT}/proxy/{ASSETS}", headers=KEY))
            time.sleep(0.02)
    finally:
        api.stop()
    assert len(early) == 1 and len(answers) >= 3, len(answers)  # fetched, read from Redis, then from memory
    for answer in answers:
        assert answer.status_code == 200
        assert "Link" not in answer.headers and answer.headers["X-Total-Count"] == "3"
        assert answer.headers.getlist("Content-Length") in ([], ["2"])  # never "2, 2"
        assert answer.headers["ETag"] == "\t\x80é".strip()  # obs-text passes
        assert answer.get_data() == b"{}"


def test_a_target_that_is_not_absolute_form_cannot_smuggle_a_second_route(vault_server, sim, account, early):
    # Routed as the proxy of ACCOUNT with the path "a://h/...": the path sent upstream must be that one, or none.
    target = f"x:/v1/accounts/{ACCOUNT}/proxy/a://h/v1/accounts/{ACCOUNT}/proxy/{ASSETS}"
    refused(send(vault_server, "GET", target, KEY), 400, "invalid_path")
    assert early == [] and sim.api_requests == 0
