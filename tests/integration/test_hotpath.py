"""The token hit answered before Flask (api.hotpath): the same answer as the app's, and only when it is a plain hit.

Each test compares the service's answer with the Flask app's own (the WSGI app beneath the hot
path, called directly), and counts the requests that reached Flask: a hit held in memory must not,
everything else must, and must then be answered exactly as before the hot path existed.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest
from werkzeug.test import Client

from api.hotpath import TokenHits
from core.permissions import KeyPolicy, parse_permissions, parse_rate, parse_scopes
from tests.integration.test_metrics import sample, scrape
from tests.support.constants import ACCOUNT, API_KEY
from vault.apikeys import ApiKeyStore
from vault.layout import KeySpace

TOKEN = f"/v1/accounts/{ACCOUNT}/token"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CEILING_KEY = "ceiling-key-0123456789"
NO_TOKEN_READ_KEY = "proxy-only-0123456789"
OPTIONAL_ONLY_KEY = "optional-only-0123456789"
KEYS = (
    f"ops:{API_KEY},sync:{CEILING_KEY} allow=token:read scopes=asset.view,"
    f"proxy:{NO_TOKEN_READ_KEY} allow=proxy:read,alerts:{OPTIONAL_ONLY_KEY} allow=token:read scopes=account.alert.view"
)


class Service:
    """The app under test, its hot path, and the Flask app beneath it (counted, and callable on its own)."""

    def __init__(self, app) -> None:
        self.app = app
        self.hot: TokenHits = app.wsgi_app.app  # Admission -> TokenHits -> Flask's wsgi_app
        assert isinstance(self.hot, TokenHits)
        self.reached_flask = 0
        flask_wsgi = self.hot.app

        def counted(environ, start_response):
            self.reached_flask += 1
            return flask_wsgi(environ, start_response)

        self.hot.app = counted
        self.client = app.test_client()
        self.flask = Client(flask_wsgi)  # the app's own answer, with no hot path in front

    def warm(self, path: str = TOKEN, headers: dict | None = None) -> None:
        """Until this worker holds the token and trusts its memory (the feed subscribed): a hit skips Flask."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            before = self.reached_flask
            assert self.client.get(path, headers=headers or AUTH).status_code == 200
            if self.reached_flask == before:
                return
            time.sleep(0.02)
        raise AssertionError("the hot path never answered")


@pytest.fixture(autouse=True)
def no_hot_path_failure(request, caplog):
    """A hot path that crashed would still look right (the app answers): every test also checks it did not."""
    caplog.set_level(logging.ERROR, logger="api.hotpath")
    yield
    if "expects_hot_path_failure" not in request.keywords:
        assert not [r for r in caplog.records if r.name == "api.hotpath"], "the hot path failed"


@pytest.fixture
def service(make_app, installer):
    app = make_app(API_KEYS=KEYS)
    installer.to(app.test_client()).install()
    return Service(app)


def test_a_hit_held_in_memory_skips_flask_and_answers_as_flask_does(service, sim, caplog):
    service.warm()
    before = scrape(service.client)
    hits = sample(before, "itv_token_requests_total", outcome="cache_hit")
    with caplog.at_level(logging.INFO, logger="itv.audit"):
        caplog.clear()
        fast = service.client.get(TOKEN, headers={**AUTH, "X-Request-ID": "req-fast"})
        reached = service.reached_flask
        slow = service.flask.get(TOKEN, headers={**AUTH, "X-Request-ID": "req-slow"})
    assert service.reached_flask == reached  # the test's own Flask call is not counted: the first one skipped it
    assert fast.status_code == slow.status_code == 200
    assert {k: v for k, v in fast.headers.items() if k != "X-Request-ID"} == {
        k: v for k, v in slow.headers.items() if k != "X-Request-ID"
    }
    assert (fast.headers["X-Request-ID"], slow.headers["X-Request-ID"]) == ("req-fast", "req-slow")
    assert fast.headers["Cache-Control"] == "no-store" and fast.headers["Pragma"] == "no-cache"
    fast_body, slow_body = fast.get_json(), slow.get_json()
    assert abs(fast_body.pop("expires_in") - slow_body.pop("expires_in")) <= 1
    assert fast_body == slow_body
    assert list(fast.get_json()) == list(slow.get_json())  # the same keys, in the same order
    lines = [r for r in caplog.records if r.name == "itv.audit"]
    assert len(lines) == 2
    shown = [
        {
            k: v
            for k, v in vars(r).items()
            if k
            not in (
                "request_id",
                "duration_ms",
                "created",
                "msecs",
                "relativeCreated",
                "thread",
                "threadName",
                "lineno",
                "funcName",
                "pathname",
                "filename",
                "module",
                "process",
                "processName",
                "taskName",
                "args",
                "msg",
                "stack_info",
                "exc_info",
                "exc_text",
            )
        }
        for r in lines
    ]
    assert shown[0] == shown[1]
    assert shown[0]["key_name"] == "ops" and shown[0]["source"] == "cache" and shown[0]["status"] == 200
    assert (lines[0].request_id, lines[1].request_id) == ("req-fast", "req-slow")
    after = scrape(service.client)
    assert sample(after, "itv_token_requests_total", outcome="cache_hit") - hits == 2
    assert sim.token_requests == 1


def test_a_new_request_id_is_made_when_none_or_a_bad_one_is_sent(service):
    service.warm()
    reached = service.reached_flask
    ids = {service.client.get(TOKEN, headers=AUTH).headers["X-Request-ID"] for _ in range(3)}
    bad = service.client.get(TOKEN, headers={**AUTH, "X-Request-ID": "bad id\u00e9"}).headers["X-Request-ID"]
    assert service.reached_flask == reached
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)
    assert bad != "bad id\u00e9" and len(bad) == 32


def test_a_key_with_a_ceiling_gets_its_default_scope_from_memory(service, sim):
    headers = {"Authorization": f"Bearer {CEILING_KEY}"}
    service.warm(headers=headers)
    reached = service.reached_flask
    body = service.client.get(TOKEN, headers=headers).get_json()
    assert service.reached_flask == reached
    assert body["scope"] == "asset.view"


def test_a_managed_key_remembered_by_this_worker_skips_flask(service, make_app):
    config = service.app.extensions["vault"].config
    store = ApiKeyStore(service.app.extensions["vault"].redis, config.keyring, KeySpace(config.key_prefix))
    key = store.create("reader", KeyPolicy(parse_permissions("token:read"), parse_scopes("asset.view account.view")))
    headers = {"Authorization": f"Bearer {key}"}
    service.warm(headers=headers)
    reached = service.reached_flask
    answer = service.client.get(TOKEN, headers=headers)
    assert answer.status_code == 200 and service.reached_flask == reached
    assert store.revoke("reader")
    deadline = time.monotonic() + 2
    while service.client.get(TOKEN, headers=headers).status_code == 200:  # the feed makes every worker forget
        assert time.monotonic() < deadline, "a revoked key was still served from memory"
        time.sleep(0.02)
    refused = service.client.get(TOKEN, headers=headers)
    assert refused.status_code == 401 and service.reached_flask > reached


def test_an_expired_managed_key_goes_to_flask_and_is_refused(service):
    vault = service.app.extensions["vault"]
    config = vault.config
    store = ApiKeyStore(vault.redis, config.keyring, KeySpace(config.key_prefix))
    key = store.create("shortlived", KeyPolicy(parse_permissions("token:read")), expires=int(time.time()) + 60)
    headers = {"Authorization": f"Bearer {key}"}
    service.warm(headers=headers)
    vault.api_keys.clock = lambda: time.time() + 120  # the key's expiry passes while it is remembered
    reached = service.reached_flask
    refused = service.client.get(TOKEN, headers=headers)
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    assert service.reached_flask == reached + 1


def rate_limited_key(service, rate: str = "1000/second") -> str:
    vault = service.app.extensions["vault"]
    store = ApiKeyStore(vault.redis, vault.config.keyring, KeySpace(vault.config.key_prefix))
    key = store.create("limited", KeyPolicy(parse_permissions("token:read"), None, parse_rate(rate)))
    assert key is not None
    return key


def test_a_rate_limited_key_is_counted_on_every_hit_and_refused_over_its_rate(service):
    service.warm()  # the token is held in memory; the key is remembered after its first request
    headers = {"Authorization": f"Bearer {rate_limited_key(service, '5/minute')}"}
    reached = service.reached_flask
    answers = [service.client.get(TOKEN, headers=headers) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[-1].get_json()["error"]["code"] == "rate_limited" and "Retry-After" in answers[-1].headers
    assert service.reached_flask == reached + 6


# Requests the hot path must leave to the app although this worker holds the account's token:
# (how to send it, what the app answers).
PASSED_ON = {
    "no key": (lambda s: s.client.get(TOKEN), 401),
    "unknown key": (lambda s: s.client.get(TOKEN, headers={"Authorization": "Bearer not-a-key-0123456789"}), 401),
    "not bearer": (lambda s: s.client.get(TOKEN, headers={"Authorization": f"Basic {API_KEY}"}), 401),
    "no token:read": (lambda s: s.client.get(TOKEN, headers={"Authorization": f"Bearer {NO_TOKEN_READ_KEY}"}), 403),
    "ceiling without a required scope": (
        lambda s: s.client.get(TOKEN, headers={"Authorization": f"Bearer {OPTIONAL_ONLY_KEY}"}),
        403,
    ),
    "query string": (lambda s: s.client.get(TOKEN + "?scope=asset.view", headers=AUTH), 200),
    "force_refresh": (lambda s: s.client.get(TOKEN + "?force_refresh=true", headers=AUTH), 200),
    "HEAD": (lambda s: s.client.head(TOKEN, headers=AUTH), 200),
    "POST": (lambda s: s.client.post(TOKEN, headers=AUTH), 405),
    # Werkzeug matches an upgrade request to no HTTP rule: the guard then asks for `admin` and the app refuses.
    "WebSocket upgrade": (
        lambda s: s.client.get(TOKEN, headers={**AUTH, "Connection": "Upgrade", "Upgrade": "websocket"}),
        400,
    ),
    "WebSocket upgrade, scoped key": (
        lambda s: s.client.get(
            TOKEN, headers={"Authorization": f"Bearer {CEILING_KEY}", "Connection": "upgrade", "Upgrade": "websocket"}
        ),
        403,
    ),
    "another upgrade (answered as a plain GET by the app)": (
        lambda s: s.client.get(TOKEN, headers={**AUTH, "Connection": "keep-alive, Upgrade", "Upgrade": "h2c"}),
        200,
    ),
    "a path beneath": (lambda s: s.client.get(f"/v1/accounts/{ACCOUNT}/x/token", headers=AUTH), 404),
    "trailing slash": (lambda s: s.client.get(TOKEN + "/", headers=AUTH), 404),
}


@pytest.mark.parametrize("case", list(PASSED_ON))
def test_anything_but_a_plain_hit_held_in_memory_is_answered_by_flask(service, case):
    service.warm()
    # The ceiling key's own slot (asset.view) held too. Its fetch makes every worker forget the
    # account's other tokens, so the default slot is warmed again after it (from Redis, no fetch).
    service.warm(headers={"Authorization": f"Bearer {CEILING_KEY}"})
    service.warm()
    send, status = PASSED_ON[case]
    reached = service.reached_flask
    answer = send(service)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert service.reached_flask == reached + 1
    if status >= 400:
        assert set(answer.get_json()) == {"error"}


def test_the_first_hit_of_a_worker_goes_to_flask_which_fetches(service, sim):
    reached = service.reached_flask
    assert service.client.get(TOKEN, headers=AUTH).status_code == 200
    assert service.reached_flask == reached + 1 and sim.token_requests == 1


def test_an_invalid_account_id_goes_to_flask_even_if_memory_held_a_token_for_it(service):
    service.warm()
    memory = service.app.extensions["vault"].memory.cache
    slots = memory._entries[ACCOUNT]
    for slot, token in slots.items():  # as if a token had been remembered under an id that is not valid
        memory.remember("a b", slot, token, memory.epoch)
    reached = service.reached_flask
    answer = service.client.get("/v1/accounts/a%20b/token", headers=AUTH)
    assert answer.status_code == 404 and service.reached_flask == reached + 1


def test_memory_that_is_not_trusted_sends_the_hit_to_flask(service):
    """Neither the token nor a managed key is trusted from memory while the feed is not fresh."""
    vault = service.app.extensions["vault"]
    store = ApiKeyStore(vault.redis, vault.config.keyring, KeySpace(vault.config.key_prefix))
    key = store.create("reader", KeyPolicy(parse_permissions("token:read")))
    headers = {"Authorization": f"Bearer {key}"}
    service.warm(headers=headers)
    vault.memory.keys.bind(lambda: False)  # keys alone: the token memory still trusted
    reached = service.reached_flask
    assert service.client.get(TOKEN, headers=headers).status_code == 200
    assert service.reached_flask == reached + 1
    vault.memory.keys.bind(vault.memory.listener.fresh)
    vault.memory.cache.bind(lambda: False)  # tokens alone
    reached = service.reached_flask
    assert service.client.get(TOKEN, headers=headers).status_code == 200
    assert service.reached_flask == reached + 1


def test_a_token_due_for_refresh_ahead_is_served_and_starts_one_refresh(service, monkeypatch):
    service.warm()
    vault = service.app.extensions["vault"]
    memory = vault.memory.cache
    for slot, token in list(memory._entries[ACCOUNT].items()):
        memory._entries[ACCOUNT][slot] = dataclasses.replace(token, refresh_from=0)  # its refresh point has passed
    started = []
    monkeypatch.setattr(vault.tokens.refresh_ahead, "start", lambda *args: started.append(args))
    reached = service.reached_flask
    assert service.client.get(TOKEN, headers=AUTH).status_code == 200
    assert service.reached_flask == reached
    assert [args[0] for args in started] == [ACCOUNT]


def test_an_overloaded_worker_refuses_the_hit_as_it_refuses_every_request(make_app, installer):
    app = make_app(MAX_IN_FLIGHT="1")
    installer.to(app.test_client()).install()
    service = Service(app)
    service.warm()
    held = service.client.get(TOKEN, headers=AUTH, buffered=False)  # unread: it holds the one slot
    try:
        refused = service.client.get(TOKEN, headers=AUTH)
        assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "overloaded"
        assert "Retry-After" in refused.headers
    finally:
        held.close()
    assert service.client.get(TOKEN, headers=AUTH).status_code == 200


@pytest.mark.expects_hot_path_failure
def test_a_failure_in_the_hot_path_is_logged_and_the_app_answers(service, monkeypatch, caplog):
    service.warm()

    value = "".join(("s3", "cr3t"))  # not in any source line the traceback quotes

    def broken(*args, **kwargs):
        raise RuntimeError(f"a bug, with a value that must not be logged: {value}")

    monkeypatch.setattr(service.app.extensions["vault"].tokens, "remembered", broken)
    reached = service.reached_flask
    with caplog.at_level(logging.ERROR, logger="api.hotpath"):
        answer = service.client.get(TOKEN, headers=AUTH)
    assert answer.status_code == 200 and service.reached_flask == reached + 1
    failures = [r for r in caplog.records if r.name == "api.hotpath"]
    assert len(failures) == 1 and "RuntimeError" in failures[0].getMessage()
    assert "s3cr3t" not in caplog.text


def test_once_the_hit_is_answered_a_failure_is_not_answered_again_by_flask(service, monkeypatch):
    """The answer is the hot path's from the moment it counts the hit: a failure after that (its log
    line, say) propagates, as the app's would, rather than starting a second answer in Flask."""
    service.warm()
    before = sample(scrape(service.client), "itv_token_requests_total", outcome="cache_hit")

    def broken(*args, **kwargs):
        raise RuntimeError("the log line failed")

    monkeypatch.setattr("api.hotpath.requestlog.log_audit", broken)
    reached = service.reached_flask
    with pytest.raises(RuntimeError):
        service.client.get(TOKEN, headers=AUTH)
    assert service.reached_flask == reached
    monkeypatch.undo()
    assert sample(scrape(service.client), "itv_token_requests_total", outcome="cache_hit") - before == 1
