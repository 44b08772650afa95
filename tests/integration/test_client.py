"""The Python client (client/, package iris_vault_client) against the vault over real HTTP and the simulator.

The client is installed editable from the client/ folder (`make test` does it). The vault's token
endpoint is observed by handing VaultAuth a requests.Session that notes each call it makes (the calls
themselves are real).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import requests

import iris_vault_client
from iris_vault_client import VaultAuth, VaultError, trackunit_session
from iris_vault_client import auth as auth_module
from tests.support.constants import ACCOUNT, API_KEY
from tests.support.elsewhere import Elsewhere

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"

UNKNOWN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
MANAGE = "account.asset.manage"
ASSETS = "/api/asset/v1/assets"


@pytest.fixture
def env(env):
    return {**env, "APP_SCOPES": f"asset.view account.view {MANAGE}? account.alert.view?"}


@pytest.fixture
def account(install):
    install(ACCOUNT, scopes=("asset.view", "account.view", MANAGE))
    return ACCOUNT


class VaultCalls(requests.Session):
    """A real session for VaultAuth that notes the query and answer of every call to the vault."""

    def __init__(self) -> None:
        super().__init__()
        self.params: list[dict] = []
        self.expires_in: list[int] = []
        self._lock = threading.Lock()

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        with self._lock:
            self.params.append(dict(kwargs.get("params") or {}))
            if response.status_code == 200:
                self.expires_in.append(response.json()["expires_in"])
        return response


class Clock:
    """Stands in for the `time` module inside iris_vault_client.auth, so expiry needs no waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def calls() -> VaultCalls:
    return VaultCalls()


@pytest.fixture
def auth(vault_server, account, calls) -> VaultAuth:
    return VaultAuth(vault_server.url, API_KEY, ACCOUNT, session=calls)


@pytest.fixture
def session(vault_server, sim_server, account, calls):
    session = trackunit_session(vault_server.url, API_KEY, ACCOUNT, api_url=sim_server.url)
    session.auth = VaultAuth(vault_server.url, API_KEY, ACCOUNT, session=calls)  # same auth, observed
    return session


def test_the_client_is_the_one_in_the_client_folder():
    assert Path(iris_vault_client.__file__).resolve().is_relative_to(CLIENT_DIR)


# trackunit_session -----------------------------------------------------------------------------


def test_a_session_lists_an_accounts_assets_with_relative_paths(vault_server, sim_server, sim, account):
    session = trackunit_session(vault_server.url, API_KEY, ACCOUNT, api_url=sim_server.url)
    for path in (ASSETS, ASSETS.lstrip("/")):
        response = session.get(path, params={"size": 50})
        assert response.status_code == 200, response.text
        assert {asset["accountId"] for asset in response.json()["content"]} == {ACCOUNT}
    assert [r.query for r in sim.api_log] == ["size=50", "size=50"]
    assert sim.token_requests == 1


def test_a_session_has_timeouts_and_retries_for_idempotent_methods_only(vault_server, sim_server, account):
    session = trackunit_session(vault_server.url, API_KEY, ACCOUNT, api_url=sim_server.url)
    assert session.timeout == iris_vault_client.session.DEFAULT_TIMEOUT
    retry = session.get_adapter(sim_server.url).max_retries
    assert retry.total >= 1 and {429, 503} <= set(retry.status_forcelist)
    assert "GET" in retry.allowed_methods and not {"POST", "PATCH"} & set(retry.allowed_methods)


def test_a_429_on_get_is_retried(session, sim):
    sim.configure_api(fail_status=429, fail_count=1)
    assert session.get(ASSETS).status_code == 200
    assert sim.api_requests_by_method == {"GET": 2}


def test_a_post_is_never_retried(vault_server, sim_server, sim, account):
    session = trackunit_session(
        vault_server.url, API_KEY, ACCOUNT, scopes=["asset.view", MANAGE], api_url=sim_server.url
    )
    sim.configure_api(fail_status=503, fail_count=1)
    assert session.post(ASSETS, json={"name": "x"}).status_code == 503
    assert sim.api_requests_by_method == {"POST": 1}
    assert session.post(ASSETS, json={"name": "x"}).status_code == 201


# VaultAuth: caching and single fetch ------------------------------------------------------------


def test_the_token_is_kept_in_memory_until_expires_in_runs_out(auth, calls, sim_server, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(auth_module, "time", clock)
    url = sim_server.url + ASSETS
    assert requests.get(url, auth=auth).status_code == 200
    (expires_in,) = calls.expires_in
    clock.now += expires_in - 1
    assert requests.get(url, auth=auth).status_code == 200
    assert len(calls.params) == 1
    clock.now += 1
    assert requests.get(url, auth=auth).status_code == 200
    assert len(calls.params) == 2


def test_twenty_threads_sharing_one_vault_auth_ask_the_vault_once(auth, calls, sim, sim_server):
    sim.configure(delay=0.3)  # a slow token endpoint: every thread arrives while the first fetch is on
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def call() -> None:
        barrier.wait()
        statuses.append(requests.get(sim_server.url + ASSETS, auth=auth, timeout=30).status_code)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 20
    assert len(calls.params) == 1
    assert sim.token_requests == 1


# VaultAuth: a token refused by Trackunit --------------------------------------------------------


def test_a_401_gets_a_forced_refresh_from_the_vault_and_one_retry(session, calls, sim):
    assert session.get(ASSETS).status_code == 200
    sim.expire_tokens()
    response = session.get(ASSETS)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert calls.params == [{}, {"force_refresh": "true"}]
    assert sim.token_requests == 2
    first, refused, retried = (r.header("Authorization") for r in sim.api_log)
    assert first == refused != retried


def test_a_second_401_is_returned(session, calls, sim):
    assert session.get(ASSETS).status_code == 200
    sim.configure_api(fail_status=401, fail_count=2)
    assert session.get(ASSETS).status_code == 401
    assert calls.params == [{}, {"force_refresh": "true"}]
    assert sim.api_requests_by_method == {"GET": 3}


def test_a_401_for_a_token_already_replaced_does_not_fetch_again(auth, calls, sim, sim_server):
    assert requests.get(sim_server.url + ASSETS, auth=auth).status_code == 200
    old = auth.token()
    sim.reject_token(old)
    assert requests.get(sim_server.url + ASSETS, auth=auth).status_code == 200  # refreshed: 2 vault calls
    new = auth.token(force_refresh=True, refused=old)  # a late 401 of a request that still carried `old`
    assert new != old
    assert len(calls.params) == 2


def test_a_redirect_to_another_host_never_carries_the_token(session, calls, sim):
    elsewhere = Elsewhere(status=401)
    try:
        response = session.get("/api/test/v1/redirect", params={"to": f"{elsewhere.url}/collect"})
    finally:
        elsewhere.stop()
    assert response.status_code == 401
    assert elsewhere.log and not [h for _, _, h in elsewhere.log if "Authorization" in h]
    assert len(calls.params) == 1  # and no forced refresh for another host's 401


# Vault refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "account_id, api_key, scopes, status, code",
    [
        (UNKNOWN, API_KEY, None, 404, "account_not_found"),
        (ACCOUNT, "wrong-key-0123456789", None, 401, "unauthorized"),
        (ACCOUNT, API_KEY, "asset.view account.admin", 400, "invalid_scope"),
        (ACCOUNT, API_KEY, "account.alert.view", 403, "scope_not_granted"),
    ],
)
def test_a_vault_refusal_raises_vault_error_with_its_code(
    vault_server, sim_server, sim, account, account_id, api_key, scopes, status, code
):
    session = trackunit_session(vault_server.url, api_key, account_id, scopes, api_url=sim_server.url)
    with pytest.raises(VaultError) as raised:
        session.get(ASSETS)
    assert (raised.value.status, raised.value.code) == (status, code)
    assert isinstance(raised.value, requests.HTTPError)
    assert sim.api_requests == 0


def test_an_uninstalled_account_raises_credentials_revoked(session, sim):
    sim.revoke(ACCOUNT)
    with pytest.raises(VaultError) as raised:
        session.get(ASSETS)
    assert raised.value.code == "credentials_revoked"


# Packaging -------------------------------------------------------------------------------------


def test_the_client_package_builds_with_its_module_and_metadata(tmp_path):
    """An sdist built from client/ by setuptools (what `pip install ./client` runs), offline."""
    source = tmp_path / "client"  # a copy: building writes an .egg-info next to the sources
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist"))
    script = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    built = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=source, capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    with tarfile.open(tmp_path / built.stdout.strip().splitlines()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        info = sdist.extractfile(next(n for n in sdist.getnames() if n.endswith("/PKG-INFO"))).read().decode()
        requires = sdist.extractfile(next(n for n in sdist.getnames() if n.endswith("/requires.txt"))).read()
    assert {
        "iris_vault_client/__init__.py",
        "iris_vault_client/auth.py",
        "iris_vault_client/session.py",
        "iris_vault_client/py.typed",
        "pyproject.toml",
    } <= names
    assert "Name: iris-vault-client" in info
    assert {line.split(">=")[0] for line in requires.decode().split()} == {"requests", "urllib3"}
