"""/v1/accounts/<id>/proxy/<path>: the proxy contract the README describes, over real HTTP.

The vault runs in a thread on a real socket, Trackunit is the simulator on another, Redis a real
redis-server. Requests go out with http.client so that paths reach the vault exactly as written.
A third server stands for "anywhere else": no test may ever make it receive a request.
"""

from __future__ import annotations

import dataclasses
import email.message
import hashlib
import http.client
import http.server
import json
import logging
import socket

import pytest

from core import tunables
from simulator.state import large_body
from tests.support.constants import ACCOUNT, API_KEY
from tests.support.elsewhere import Elsewhere

# Issue 18: every test here runs on a single Redis and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.topologies("single", "cluster")

UNKNOWN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
MANAGE = "account.asset.manage"
ATTEMPTS = 1 + tunables.PROXY_RETRIES
KEY = {"Authorization": f"Bearer {API_KEY}"}
WRITE = {**KEY, "Trackunit-Scope": f"asset.view {MANAGE}", "Content-Type": "application/json"}


# Servers ---------------------------------------------------------------------------------------


@pytest.fixture
def env(env):
    """The conftest environment, with a write scope in the manifest (optional, like a real app's)."""
    return {**env, "APP_SCOPES": f"asset.view account.view {MANAGE}? account.alert.view?"}


@pytest.fixture(autouse=True)
def elsewhere():
    """Must stay untouched in every test: the proxy never reaches a host but Trackunit's API."""
    server = Elsewhere()
    yield server
    server.stop()
    assert server.log == [], f"a request left for another host: {server.log}"


@pytest.fixture
def account(install):
    install(ACCOUNT, scopes=("asset.view", "account.view", MANAGE))
    return ACCOUNT


# Helpers ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    status: int
    headers: email.message.Message
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def vault_error(self) -> str | None:
        return self.headers.get("Token-Vault-Error")


def send(
    server,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> Answer:
    """One request with the target exactly as given (nothing normalises it on the way)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders(iter([body or b""]), encode_chunked=True)
        else:
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def proxy(
    server,
    method: str,
    path: str,
    headers: dict[str, str] | None = KEY,
    body: bytes | None = None,
    account_id: str = ACCOUNT,
    **kwargs,
) -> Answer:
    return send(server, method, f"/v1/accounts/{account_id}/proxy/{path}", headers, body, **kwargs)


def refused(answer: Answer, status: int, code: str) -> None:
    """The vault's own refusal: its JSON error and the Token-Vault-Error header."""
    assert answer.status == status, answer.body
    assert answer.json()["error"]["code"] == code
    assert answer.vault_error == code


def from_upstream(answer: Answer, status: int) -> None:
    assert answer.status == status, answer.body
    assert answer.vault_error is None


def token_of(sim) -> str:
    tokens = sim.tokens_of(ACCOUNT)
    assert len(tokens) == 1, tokens
    return tokens[0]


def last_upstream(sim):
    assert sim.api_log, "nothing reached Trackunit's API"
    return sim.api_log[-1]


# Forwarding ------------------------------------------------------------------------------------


def test_get_goes_to_the_same_path_with_the_query_as_sent_and_the_account_token(vault_server, sim, account):
    answer = proxy(vault_server, "GET", "api/asset/v1/assets/a-1?b=%20x%2By&a=1&a=2&empty=")
    from_upstream(answer, 200)
    echo = answer.json()
    assert (echo["method"], echo["path"], echo["query"]) == (
        "GET",
        "/api/asset/v1/assets/a-1",
        "b=%20x%2By&a=1&a=2&empty=",
    )
    assert echo["accountId"] == ACCOUNT
    assert last_upstream(sim).header("Authorization") == f"Bearer {token_of(sim)}"
    assert last_upstream(sim).header("Accept-Encoding") == "identity"  # the caller asked for no compression


@pytest.mark.parametrize("account_id", ["proxy", "v1", "accounts", "x-proxy", "proxy_"])
def test_the_upstream_path_is_taken_from_the_routes_position_whatever_the_account_id(install, vault_server, account_id):
    install(account_id)
    answer = proxy(vault_server, "GET", "api/asset/v1/assets/proxy?q=/proxy/", account_id=account_id)
    from_upstream(answer, 200)
    assert (answer.json()["path"], answer.json()["query"]) == ("/api/asset/v1/assets/proxy", "q=/proxy/")
    assert answer.json()["accountId"] == account_id


def test_list_assets_through_the_proxy(vault_server, sim, account):
    answer = proxy(vault_server, "GET", "api/asset/v1/assets")
    from_upstream(answer, 200)
    assert {asset["accountId"] for asset in answer.json()["content"]} == {ACCOUNT}


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("POST", "api/asset/v1/assets", 201),
        ("POST", "api/asset/v1/assets/a-1", 200),
        ("PUT", "api/asset/v1/assets/a-1", 200),
        ("PATCH", "api/asset/v1/assets/a-1", 200),
        ("DELETE", "api/asset/v1/assets/a-1", 200),
    ],
)
def test_each_write_method_is_forwarded_with_its_body_unchanged(vault_server, sim, account, method, path, status):
    body = json.dumps({"name": "Grävmaskin 7", "tags": ["a", "b"], "n": 1.50}, ensure_ascii=False).encode()
    answer = proxy(vault_server, method, f"{path}?dryRun=true", WRITE, body)
    from_upstream(answer, status)
    upstream = last_upstream(sim)
    assert (upstream.method, upstream.query, upstream.body) == (method, "dryRun=true", body)
    assert upstream.header("Content-Type") == "application/json"
    assert answer.json()["body"] == body.decode()


def test_a_body_above_the_app_limit_but_within_the_proxy_cap_is_forwarded(vault_server, sim, account):
    body = b'{"blob": "' + b"x" * (tunables.MAX_BODY_BYTES * 2) + b'"}'
    assert len(body) <= tunables.PROXY_MAX_BODY_BYTES
    from_upstream(proxy(vault_server, "PUT", "api/asset/v1/assets/a-1", WRITE, body), 200)
    assert hashlib.sha256(last_upstream(sim).body).digest() == hashlib.sha256(body).digest()


def test_a_content_length_over_the_cap_is_413_payload_too_large_before_any_body_is_read(vault_server, sim, account):
    headers = {**WRITE, "Content-Length": str(tunables.PROXY_MAX_BODY_BYTES + 1)}
    refused(proxy(vault_server, "PUT", "api/asset/v1/assets/a-1", headers), 413, "payload_too_large")
    assert (sim.token_requests, sim.api_requests) == (0, 0)


def test_a_chunked_body_over_the_cap_is_413_payload_too_large_not_cut_short(vault_server, sim, account):
    body = b"x" * (tunables.PROXY_MAX_BODY_BYTES + 1)
    refused(proxy(vault_server, "POST", "api/asset/v1/assets", WRITE, body, chunked=True), 413, "payload_too_large")
    assert sim.api_requests == 0


def test_a_chunked_body_of_exactly_the_cap_is_forwarded_whole(vault_server, sim, account):
    body = b"y" * tunables.PROXY_MAX_BODY_BYTES
    from_upstream(proxy(vault_server, "POST", "api/asset/v1/assets", WRITE, body, chunked=True), 201)
    assert last_upstream(sim).body == body


def test_a_large_upstream_body_streams_through_intact(vault_server, account):
    size = 5 * 1024 * 1024 + 7
    answer = proxy(vault_server, "GET", f"api/test/v1/large?bytes={size}")
    from_upstream(answer, 200)
    assert answer.headers.get("Transfer-Encoding") == "chunked"  # passed on as it comes, not buffered whole
    assert len(answer.body) == size
    assert hashlib.sha256(answer.body).digest() == hashlib.sha256(large_body(size)).digest()


# Headers ---------------------------------------------------------------------------------------


def test_only_allow_listed_request_headers_reach_trackunit(vault_server, sim, account):
    sent = {
        **KEY,
        "Accept": "application/json",
        "Accept-Language": "da-DK",
        "Accept-Encoding": "gzip",
        "TU-PREVIEW": "true",
        "Cookie": "session=caller",
        "X-Caller-Secret": "s3cret",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Forwarded-For": "10.0.0.1",
        "Forwarded": "for=10.0.0.1",
        "TE": "trailers",
        "Upgrade": "websocket",
        "Keep-Alive": "timeout=99",
    }
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets/a-1", sent), 200)
    upstream = last_upstream(sim)
    assert upstream.header("Authorization") == f"Bearer {token_of(sim)}"
    for name in ("Accept", "Accept-Language", "Accept-Encoding", "TU-PREVIEW"):
        assert upstream.header(name) == sent[name], name
    for name in (
        "Cookie",
        "X-Caller-Secret",
        "Proxy-Authorization",
        "X-Forwarded-For",
        "Forwarded",
        "TE",
        "Upgrade",
        "Keep-Alive",
        "Trackunit-Scope",
    ):
        assert upstream.header(name) is None, name
    assert not [v for v in upstream.headers.values() if API_KEY in v or "s3cret" in v]


def test_pagination_rate_limit_and_content_type_come_back_cookies_and_hop_by_hop_do_not(vault_server, account):
    answer = proxy(vault_server, "GET", "api/asset/v1/assets")
    from_upstream(answer, 200)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Link"] == '</api/asset/v1/assets?page=1&size=100>; rel="next"'
    assert answer.headers["X-RateLimit-Remaining"] == "99"
    assert answer.headers.get("Set-Cookie") is None
    assert answer.headers.get("Keep-Alive") is None


def test_cookies_set_by_trackunit_are_never_sent_back_upstream(vault_server, sim, account, install):
    other = "0a1b2c3d-0000-4000-8000-000000000001"
    install(other)
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)  # answered with Set-Cookie: sim=1
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets", account_id=other), 200)
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    assert [r.header("Cookie") for r in sim.api_log] == [None, None, None]


def test_an_upstream_error_comes_back_as_is_without_the_vault_header(vault_server, sim, account):
    answer = proxy(vault_server, "PUT", "api/asset/v1/assets/a-1", {**KEY, "Content-Type": "application/json"}, b"{}")
    from_upstream(answer, 403)  # the required scopes do not include the write scope
    assert answer.json() == {"status": 403, "code": "insufficient_scope", "message": f"the token lacks scope {MANAGE}"}
    assert answer.headers["X-RateLimit-Remaining"] == "99"


# Scopes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [f"asset.view {MANAGE}", f"{MANAGE},asset.view", f" {MANAGE} , asset.view "])
def test_trackunit_scope_picks_the_token(vault_server, sim, account, header):
    from_upstream(
        proxy(vault_server, "PATCH", "api/asset/v1/assets/a-1", {**WRITE, "Trackunit-Scope": header}, b"{}"), 200
    )
    assert sim.last_token_request["scope"] == f"{MANAGE} asset.view"


def test_the_same_scope_set_written_differently_shares_one_token(vault_server, sim, account):
    for header in (f"asset.view {MANAGE}", f"{MANAGE},asset.view"):
        from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets", {**KEY, "Trackunit-Scope": header}), 200)
    assert sim.token_requests == 1


def test_without_trackunit_scope_the_required_scopes_are_used(vault_server, sim, account):
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    assert sim.last_token_request["scope"] == "account.view asset.view"


def test_a_scope_not_in_the_manifest_is_400_invalid_scope_without_calling_trackunit(vault_server, sim, account):
    answer = proxy(vault_server, "GET", "api/asset/v1/assets", {**KEY, "Trackunit-Scope": "asset.view account.admin"})
    refused(answer, 400, "invalid_scope")
    assert (sim.token_requests, sim.api_requests) == (0, 0)


def test_a_scope_the_account_did_not_grant_is_403_scope_not_granted(vault_server, sim, account):
    answer = proxy(vault_server, "GET", "api/asset/v1/assets", {**KEY, "Trackunit-Scope": "account.alert.view"})
    refused(answer, 403, "scope_not_granted")
    assert sim.api_requests == 0


# The vault's own refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": API_KEY}, {"X-Api-Key": API_KEY}],
)
def test_without_a_valid_api_key_it_is_401_unauthorized(vault_server, sim, account, headers):
    refused(proxy(vault_server, "GET", "api/asset/v1/assets", headers), 401, "unauthorized")
    assert (sim.token_requests, sim.api_requests) == (0, 0)


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND"])
def test_a_method_the_proxy_does_not_serve_is_the_vaults_405_with_its_marker(vault_server, sim, account, method):
    # Refused by routing, before any blueprint is chosen: still the vault's answer, so still marked.
    answer = proxy(vault_server, method, "api/asset/v1/assets")
    refused(answer, 405, "method_not_allowed")
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST", "PUT", "PATCH", "DELETE"}
    refused(proxy(vault_server, method, "api/asset/v1/assets", headers={}), 401, "unauthorized")
    assert (sim.token_requests, sim.api_requests) == (0, 0)


def test_errors_outside_the_proxy_carry_no_proxy_marker(vault_server, sim, account):
    answer = send(vault_server, "TRACE", f"/v1/accounts/{ACCOUNT}/token", KEY)
    assert answer.status == 405 and answer.json()["error"]["code"] == "method_not_allowed"
    assert answer.vault_error is None


@pytest.mark.parametrize("account_id", [UNKNOWN, "not an id!", "x" * 300])
def test_an_unknown_account_is_404_account_not_found(vault_server, sim, account, account_id):
    refused(
        proxy(vault_server, "GET", "api/asset/v1/assets", account_id=account_id.replace(" ", "%20")),
        404,
        "account_not_found",
    )
    assert (sim.token_requests, sim.api_requests) == (0, 0)


def test_an_uninstalled_account_is_410_credentials_revoked(vault_server, sim, account):
    sim.revoke(ACCOUNT)
    refused(proxy(vault_server, "GET", "api/asset/v1/assets"), 410, "credentials_revoked")
    assert sim.api_requests == 0


def test_a_token_endpoint_that_fails_is_503_auth_unavailable(vault_server, sim, account):
    sim.configure(fail_status=503)
    refused(proxy(vault_server, "GET", "api/asset/v1/assets"), 503, "auth_unavailable")
    assert sim.api_requests == 0


def test_an_unreachable_api_is_503_upstream_unavailable(vault_server, sim_server, account):
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)  # the token is cached now
    sim_server.shutdown()  # Trackunit goes away
    refused(proxy(vault_server, "GET", "api/asset/v1/assets"), 503, "upstream_unavailable")


# A refused token -------------------------------------------------------------------------------


def test_a_401_to_a_cached_token_refreshes_it_once_and_retries_once(vault_server, sim, account):
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    refused_token = token_of(sim)
    sim.reject_token(refused_token)
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    assert sim.token_requests == 2
    assert sim.api_requests_by_method == {"GET": 3}
    assert [r.header("Authorization") for r in sim.api_log[1:]] == [
        f"Bearer {refused_token}",
        f"Bearer {token_of(sim)}",
    ]


def test_a_second_401_is_passed_back(vault_server, sim, account):
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    sim.configure_api(fail_status=401, fail_count=2)
    answer = proxy(vault_server, "GET", "api/asset/v1/assets")
    from_upstream(answer, 401)
    assert answer.json()["code"] == "unauthorized"
    assert sim.token_requests == 2
    assert sim.api_requests_by_method == {"GET": 3}


def test_repeated_401s_force_one_refresh_per_floor_and_resend_only_with_a_new_token(vault_server, sim, account):
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    sim.configure_api(fail_status=401, fail_count=100)
    for _ in range(5):
        from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 401)
    assert sim.token_requests == 2  # the first fetch, then one forced refresh for all five 401s
    # The first 401 was retried with the new token; the others got that same token back: no resend.
    assert sim.api_requests_by_method == {"GET": 1 + 2 + 4}


def test_a_401_whose_forced_refresh_fails_gives_its_upstream_connection_back(
    app, vault_server, sim, sim_server, account
):
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    sim.revoke(ACCOUNT, revoke_tokens=True)  # the cached token gets a 401, the credentials invalid_client
    refused(proxy(vault_server, "GET", "api/asset/v1/assets"), 410, "credentials_revoked")
    pool = app.extensions["vault"].trackunit_api.pool.connection_from_url(sim_server.url)
    assert pool.pool.qsize() == pool.pool.maxsize  # every connection back in the pool, none held by the 401


def test_a_401_to_a_just_fetched_token_is_passed_back_without_a_refresh(vault_server, sim, account):
    sim.configure_api(fail_status=401, fail_count=1)
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 401)
    assert (sim.token_requests, sim.api_requests) == (1, 1)


# Retries ---------------------------------------------------------------------------------------


def test_429_on_get_is_retried_after_retry_after(vault_server, sim, account):
    sim.configure_api(fail_status=429, fail_count=1, retry_after="1")
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    first, second = sim.api_log
    assert second.at - first.at >= 0.95  # it waited as told (a lower bound only: sleeping never ends early)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_5xx_on_an_idempotent_method_is_retried(vault_server, sim, account, method):
    sim.configure_api(fail_status=503, fail_count=1)
    from_upstream(
        proxy(vault_server, method, "api/asset/v1/assets/a-1", WRITE, b"{}" if method == "PUT" else None), 200
    )
    assert sim.api_requests_by_method == {method: 2}


@pytest.mark.parametrize("method, status", [("POST", 503), ("PATCH", 503), ("POST", 429), ("PATCH", 502)])
def test_post_and_patch_are_never_retried(vault_server, sim, account, method, status):
    sim.configure_api(fail_status=status, fail_count=1)
    from_upstream(proxy(vault_server, method, "api/asset/v1/assets/a-1", WRITE, b'{"n": 1}'), status)
    assert sim.api_requests_by_method == {method: 1}


def test_retries_are_bounded_then_the_upstream_answer_is_passed_back(vault_server, sim, account):
    sim.configure_api(fail_status=502, fail_body={"status": 502, "code": "bad_gateway", "message": "down"})
    answer = proxy(vault_server, "GET", "api/asset/v1/assets")
    from_upstream(answer, 502)
    assert answer.json()["code"] == "bad_gateway"
    assert sim.api_requests_by_method == {"GET": ATTEMPTS}


def test_a_retry_after_beyond_the_budget_is_passed_back_at_once(vault_server, sim, account):
    sim.configure_api(fail_status=429, retry_after="3600")
    answer = proxy(vault_server, "GET", "api/asset/v1/assets")
    from_upstream(answer, 429)
    assert answer.headers["Retry-After"] == "3600"
    assert sim.api_requests_by_method == {"GET": 1}


def test_an_unreadable_retry_after_is_passed_back_at_once(vault_server, sim, account):
    sim.configure_api(fail_status=503, retry_after="after lunch")
    answer = proxy(vault_server, "GET", "api/asset/v1/assets")
    from_upstream(answer, 503)
    assert answer.headers["Retry-After"] == "after lunch"
    assert sim.api_requests_by_method == {"GET": 1}


# No SSRF ---------------------------------------------------------------------------------------


SSRF_PATHS = [
    "http://127.0.0.1:{port}/x",
    "HTTP://127.0.0.1:{port}/x",
    "http:/127.0.0.1:{port}/x",
    "http%3A%2F%2F127.0.0.1:{port}/x",
    "//127.0.0.1:{port}/x",
    "/127.0.0.1:{port}/x",
    "%2F%2F127.0.0.1:{port}/x",
    "%252F%252F127.0.0.1:{port}/x",
    "\\\\127.0.0.1:{port}/x",
    "%5C%5C127.0.0.1:{port}/x",
    "api\\..\\..\\x",
    "api/../../x",
    "api/asset/..",
    "..",
    "./api/asset",
    "api/%2e%2e/%2e%2e/x",
    "api/%2E%2E/x",
    "api/.%2e/x",
    "api/%252e%252e/x",
    "api/%25252e%25252e/x",
    "api/%2525252e%2525252e/x",
    "api%2F..%2F..%2Fx",
    "api/%c0%ae%c0%ae/x",
    "user@127.0.0.1:{port}/x",
    "api/x%40127.0.0.1:{port}",
    "api/x%2540127.0.0.1:{port}",
    "api/%00/x",
    "api/x%0d%0aHost:%20127.0.0.1:{port}",
    "api/%7f",
    "api/x#@127.0.0.1:{port}",
    "",
]


@pytest.mark.parametrize("path", SSRF_PATHS)
def test_a_path_that_could_leave_the_api_is_400_invalid_path(vault_server, sim, account, elsewhere, path):
    refused(proxy(vault_server, "GET", path.format(port=elsewhere.port)), 400, "invalid_path")
    assert (sim.token_requests, sim.api_requests) == (0, 0)


def test_a_raw_control_character_in_the_path_is_refused(vault_server, sim, account):
    with socket.create_connection((vault_server.host, vault_server.port), timeout=10) as conn:
        conn.sendall(
            f"GET /v1/accounts/{ACCOUNT}/proxy/api/asset\x01/v1 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"Token-Vault-Error: invalid_path" in head
    assert sim.api_requests == 0


def test_a_query_with_another_host_in_it_stays_on_the_api(vault_server, sim, account, elsewhere):
    query = f"next=http://127.0.0.1:{elsewhere.port}/x&at=//127.0.0.1:{elsewhere.port}@evil"
    from_upstream(proxy(vault_server, "GET", f"api/asset/v1/assets/a-1?{query}"), 200)
    assert last_upstream(sim).query == query


def test_an_upstream_redirect_is_passed_back_not_followed(vault_server, sim, account, elsewhere):
    target = f"{elsewhere.url}/steal"
    answer = proxy(vault_server, "GET", f"api/test/v1/redirect?to={target}")
    from_upstream(answer, 302)
    assert answer.headers["Location"] == target
    assert answer.json() == {"status": 302, "location": target}  # the body comes back too
    assert sim.api_requests_by_method == {"GET": 1}


# Audit log -------------------------------------------------------------------------------------


def test_one_audit_line_per_proxied_call_without_token_or_query(vault_server, sim, account, caplog):
    caplog.set_level(logging.INFO, logger="itv.audit")
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets"), 200)
    first_token = token_of(sim)
    sim.reject_token(first_token)  # the next call refreshes and retries: still one proxied call
    caplog.clear()
    from_upstream(proxy(vault_server, "GET", "api/asset/v1/assets/a-1?secret=q-value&page=2"), 200)
    lines = [r for r in caplog.records if r.name == "itv.audit" and getattr(r, "event", "") == "proxy_call"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    line = lines[0]
    assert (line.method, line.path, line.account_id, line.key_name, line.upstream_status) == (
        "GET",
        "api/asset/v1/assets/a-1",
        ACCOUNT,
        "ops",
        200,
    )
    assert isinstance(line.duration_ms, float)
    for token in (first_token, token_of(sim)):
        assert token not in caplog.text
    fields = " ".join(str(v) for v in vars(line).values())
    assert "q-value" not in fields and "page=2" not in fields
