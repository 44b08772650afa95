"""What an adversarial review of the running service found, each checked where it was found: under gunicorn.

Raw sockets where a client library would refuse to send what an attacker sends (odd headers,
oversized request lines, chunked bodies, malformed requests).
"""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import urllib3

from tests.support.constants import ACCOUNT, API_KEY
from tests.support.elsewhere import Elsewhere
from tests.support.flows import wait_for
from tests.support.installer import Installer

# Helpers ---------------------------------------------------------------------------------------


class RawAnswer:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    def json(self) -> dict:
        assert self.headers["content-type"].startswith("application/json"), (self.headers, self.body[:200])
        return json.loads(self.body)


def raw_request(url: str, data: bytes, *, timeout: float = 15) -> RawAnswer:
    """Send `data` as it is and read the answer until the server closes (every request here asks it to)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return RawAnswer(b"".join(chunks))


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: vault", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.fixture
def server(gunicorn):
    return gunicorn(workers=2)


# 2. Forwarding headers: only what Heroku's router sets is trusted ------------------------------


def test_a_client_sent_script_name_is_ignored(server):
    answer = raw_request(server.url, get("/healthz", "SCRIPT_NAME: /elsewhere"))
    assert answer.status == 200, answer.body[:300]
    assert answer.json()["status"] == "ok"


def test_a_client_sent_script_name_cannot_shift_the_routes(server):
    # With SCRIPT_NAME=/v1 trusted, /v1/accounts/... would be routed as /accounts/... (a 404, past the key check).
    answer = raw_request(server.url, get("/v1/accounts/acct-1/token", "SCRIPT_NAME: /v1"))
    assert answer.status == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def test_a_client_sent_path_info_does_not_change_the_route(server):
    answer = raw_request(server.url, get("/v1/accounts/acct-1/token", "PATH_INFO: /healthz"))
    assert answer.status == 401
    assert answer.json()["error"]["code"] == "unauthorized"


# 5. gunicorn's own refusals are JSON -----------------------------------------------------------


@pytest.mark.parametrize(
    "data, status, code",
    [
        pytest.param(get("/healthz?" + "a" * 5000), 414, "uri_too_long", id="request line over 4094 bytes"),
        pytest.param(get("/healthz", "X-Big: " + "b" * 20000), 431, "headers_too_large", id="a header over 16 KiB"),
        pytest.param(
            get("/healthz", *(f"X-H{i}: v" for i in range(120))), 431, "headers_too_large", id="over 100 headers"
        ),
        pytest.param(b"NOT A REQUEST\r\n\r\n", 400, "invalid_request", id="unparseable request line"),
        pytest.param(get("/healthz", "Bad Header: x"), 400, "invalid_request", id="invalid header name"),
        pytest.param(
            b"POST /appinstall HTTP/1.1\r\nHost: v\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n",
            400,
            "invalid_request",
            id="invalid chunk size",
        ),
    ],
)
def test_gunicorn_refusals_are_json_and_quote_nothing(server, data, status, code):
    answer = raw_request(server.url, data)
    assert answer.status == status
    body = answer.json()
    assert body["error"]["code"] == code
    if b"chunked" not in data:  # gunicorn's own refusals; a broken chunk is found by the app, reading the body
        assert answer.headers["token-vault-error"] == code  # the vault's own answer, never Trackunit's
    assert b"<html" not in answer.body
    for quoted in (b"aaaa", b"bbbb", b"NOT A", b"Bad Header", b"zz"):
        assert quoted not in answer.body  # nothing of the request comes back


def test_the_service_still_answers_after_a_refusal(server):
    raw_request(server.url, b"NOT A REQUEST\r\n\r\n")
    answer = raw_request(server.url, get("/v1/accounts/acct-1/token", f"Authorization: Bearer {API_KEY}"))
    assert answer.status == 404
    assert answer.json()["error"]["code"] == "account_not_found"


# 1. Deeply nested JSON is a 400, wherever untrusted JSON is parsed ------------------------------


@pytest.fixture
def post_callback(server, sim):
    """POST a callback to the gunicorn-served vault, signed for `body`, with `data` as the raw body."""
    installer = Installer(sim, server.url)

    def post(body: dict, data: bytes | str) -> requests.Response:
        return installer.post(body, data=data)

    return post


def stored_keys(redis_client) -> list[bytes]:
    return sorted(redis_client.keys("test:*"))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [30_000, 100], ids=["past the parser's recursion limit", "past the allowed depth"])
def test_a_signed_callback_nested_deeply_is_400_and_writes_nothing(post_callback, sim, redis_client, depth):
    before = stored_keys(redis_client)
    message = Installer(sim, None).message()
    response = post_callback(message, json.dumps({**message, "extra": "@"}).replace('"@"', nested(depth)))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "nested too deeply" in response.json()["error"]["message"]
    assert stored_keys(redis_client) == before


def test_a_callback_body_that_is_only_nesting_is_400(post_callback, sim, redis_client):
    before = stored_keys(redis_client)
    response = post_callback(Installer(sim, None).message(), nested(30_000))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert stored_keys(redis_client) == before


def test_an_identity_token_whose_header_nests_deeply_is_401(server, redis_client):
    header = base64.urlsafe_b64encode(nested(5000).encode()).rstrip(b"=").decode()
    response = requests.post(
        f"{server.url}/appinstall",
        data="{}",
        headers={"Content-Type": "application/json", "Trackunit-Identity": f"{header}.e30.c2ln"},
        timeout=15,
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_identity"


def test_a_token_endpoint_answer_nested_deeply_is_an_auth_error(make_app, installer, auth_headers):
    installer.install()
    deep = Elsewhere(body=nested(30_000).encode())
    try:
        client = make_app(TRACKUNIT_TOKEN_URL=f"{deep.url}/apptoken").test_client()
        response = client.get(f"/v1/accounts/{ACCOUNT}/token", headers=auth_headers)
    finally:
        deep.stop()
    assert response.status_code == 502, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "auth_error"


@pytest.mark.parametrize("path", ["/_sim/identity", "/_sim/behaviour", "/_sim/accounts/a-1/revoke"])
def test_the_simulator_answers_deep_nesting_with_400(sim_server, path):
    response = requests.post(
        f"{sim_server.url}{path}", data=nested(30_000), headers={"Content-Type": "application/json"}, timeout=15
    )
    assert response.status_code == 400, response.text


# 4. A chunked body is held to the same limit as a declared one ------------------------------------


def chunked_callback(token: str, payload: bytes, chunk: int = 8192) -> bytes:
    head = (
        "POST /appinstall HTTP/1.1\r\nHost: vault\r\nContent-Type: application/json\r\n"
        f"Trackunit-Identity: {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)]
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize("size, status", [(70 * 1024, 413), (60 * 1024, 200)], ids=["over 64 KiB", "under 64 KiB"])
def test_a_chunked_callback_over_the_limit_is_413_and_writes_nothing(server, sim, redis_client, size, status):
    installer = Installer(sim, server.url)
    message = installer.message()
    payload = json.dumps({**message, "padding": ""}).encode()
    payload = payload.replace(b'"padding": ""', b'"padding": "' + b"p" * (size - len(payload)) + b'"')
    assert len(payload) == size
    before = stored_keys(redis_client)
    answer = raw_request(server.url, chunked_callback(installer.identity(message), payload))
    assert answer.status == status, answer.body[:300]
    if status == 413:
        assert answer.json()["error"]["code"] == "payload_too_large"
        assert stored_keys(redis_client) == before
    else:
        assert answer.json()["status"] == "stored"


# 3. The upstream path comes from the route's position, whatever the account id ------------------


def test_an_account_named_proxy_reaches_the_path_it_asked_for(server, sim):
    Installer(sim, server.url).install("proxy")
    target = "/v1/accounts/proxy/proxy/api/asset/v1/assets/proxy?x=/proxy/"
    answer = raw_request(server.url, get(target, f"Authorization: Bearer {API_KEY}"))
    assert answer.status == 200, answer.body[:300]
    assert (answer.json()["path"], answer.json()["query"]) == ("/api/asset/v1/assets/proxy", "x=/proxy/")
    assert answer.json()["accountId"] == "proxy"


# 7. Forced refreshes are bounded: one call per floor per slot ------------------------------------


def test_concurrent_and_sequential_forced_refreshes_make_one_call_per_floor(gunicorn, sim):
    server = gunicorn(workers=4, FORCE_REFRESH_FLOOR="60")
    Installer(sim, server.url).install()
    url = f"{server.url}/v1/accounts/{ACCOUNT}/token"
    key = {"Authorization": f"Bearer {API_KEY}"}
    plain = requests.get(url, headers=key, timeout=15).json()["access_token"]
    sim.configure(delay=0.3)  # the forced fetch is still in flight when the others ask

    def forced(_):
        return requests.get(url, params={"force_refresh": "true"}, headers=key, timeout=30).json()["access_token"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        together = set(pool.map(forced, range(50)))
    one_by_one = {forced(i) for i in range(20)}
    assert len(together) == 1 and plain not in together
    assert one_by_one == together
    assert sim.token_requests == 2  # the plain fetch and one forced fetch


# 6. One deadline over a proxied call's whole upstream exchange ------------------------------------


class StallingApi:
    """Trackunit's API standing still: it reads a request, then `mode` decides what it sends.

    "silent": nothing at all; "headers": a status line and then a header one byte every 0.3 s;
    "body": full headers (Content-Length 10,000), then one body byte every 0.3 s. Every byte
    comes well inside the proxy's 30 s read timeout: only a deadline over the exchange ends it.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.closed_by_peer = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                if self.mode == "headers":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                elif self.mode == "body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10000\r\n\r\n")
                for _ in range(200):  # 60 s at most
                    time.sleep(0.3)
                    if self.mode != "silent":
                        conn.sendall(b"x")
                    elif select.select([conn], [], [], 0)[0] and conn.recv(1) == b"":
                        break  # the vault hung up
            except OSError:
                pass
            self.closed_by_peer.set()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def stalling(request):
    api = StallingApi(request.param)
    yield api
    api.close()


@pytest.mark.parametrize("stalling", ["silent", "headers"], indirect=True)
def test_a_call_without_headers_by_the_deadline_is_504_upstream_timeout(gunicorn, sim, stalling):
    server = gunicorn(workers=2, TRACKUNIT_API_URL=stalling.url, PROXY_DEADLINE="2")
    Installer(sim, server.url).install()
    response = requests.get(
        f"{server.url}/v1/accounts/{ACCOUNT}/proxy/api/asset/v1/assets", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.headers["Token-Vault-Error"] == "upstream_timeout"
    assert "within PROXY_DEADLINE" in server.log()


@pytest.mark.parametrize("stalling", ["body"], indirect=True)
def test_an_answer_still_streaming_at_the_deadline_is_cut_and_logged(gunicorn, sim, stalling):
    server = gunicorn(workers=2, TRACKUNIT_API_URL=stalling.url, PROXY_DEADLINE="2")
    Installer(sim, server.url).install()
    with requests.get(
        f"{server.url}/v1/accounts/{ACCOUNT}/proxy/api/asset/v1/assets",
        headers={"Authorization": f"Bearer {API_KEY}"},
        stream=True,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        with pytest.raises(urllib3.exceptions.ProtocolError):
            response.raw.read(10000, decode_content=False)  # the answer ends short of its Content-Length
            raise AssertionError("the whole body arrived")
    assert stalling.closed_by_peer.wait(10)  # the vault hung up on Trackunit too
    wait_for(lambda: "cut at PROXY_DEADLINE" in server.log())


# 8. /metrics is closed in production unless METRICS_PUBLIC=true says otherwise --------------------


def test_with_metrics_token_production_serves_metrics_only_with_it(gunicorn, env):
    server = gunicorn(workers=1, METRICS_TOKEN="metrics-token-0123456789", METRICS_PUBLIC="")
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 401
    scraped = requests.get(
        f"{server.url}/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"}, timeout=10
    )
    assert scraped.status_code == 200 and "itv_" in scraped.text


def test_metrics_public_true_opens_metrics_on_purpose(gunicorn):
    server = gunicorn(workers=1, METRICS_PUBLIC="true")
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 200


def test_the_development_server_opens_metrics_and_says_so():
    from scripts.devserver import prepare

    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "TRACKUNIT_TOKEN_URL": "http://127.0.0.1:1/apptoken"}
    notes = prepare(env, quiet=True)
    assert env["METRICS_PUBLIC"] == "true"
    assert any("/metrics is OPEN" in note for note in notes)
    env = {**env, "METRICS_TOKEN": "metrics-token-0123456789"}
    env.pop("METRICS_PUBLIC")
    prepare(env, quiet=True)
    assert "METRICS_PUBLIC" not in env
