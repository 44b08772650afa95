"""`VaultAuth`: a requests auth that puts an account's token (from the vault) on each request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import requests
from requests.auth import AuthBase

VAULT_TIMEOUT = (5.0, 20.0)  # the vault answers within ~15 s even when Trackunit hangs


class VaultError(requests.HTTPError):
    """The vault refused or failed (its JSON error `code` and `message` are attributes)."""

    def __init__(self, status: int, code: str, message: str, response: requests.Response | None = None) -> None:
        super().__init__(f"vault answered {status} {code}: {message}", response=response)
        self.status = status
        self.code = code
        self.message = message


class VaultAuth(AuthBase):
    """Gets the account's token from the vault, keeps it until its `expires_in` runs out,
    and on a 401 from Trackunit asks the vault for a fresh one and retries the request once.

    Thread-safe: one fetch at a time; concurrent requests share the token.
    """

    def __init__(
        self,
        vault_url: str,
        api_key: str,
        account_id: str,
        scopes: str | Iterable[str] | None = None,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        self._api_key = api_key
        self.account_id = account_id
        self.scopes = scopes if scopes is None or isinstance(scopes, str) else " ".join(scopes)
        self._vault = session or requests.Session()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"<VaultAuth account={self.account_id} vault={self.vault_url}>"

    def token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
        """The current token; `refused` names a token Trackunit rejected (fetch anew unless already replaced)."""
        with self._lock:
            stale = self._token is None or time.monotonic() >= self._expires_at
            if stale or (force_refresh and (refused is None or refused == self._token)):
                self._fetch(force_refresh=force_refresh)
            assert self._token is not None
            return self._token

    def _fetch(self, *, force_refresh: bool) -> None:
        params: dict[str, str] = {}
        if self.scopes:
            params["scope"] = self.scopes
        if force_refresh:
            params["force_refresh"] = "true"
        started = time.monotonic()
        response = self._vault.get(
            f"{self.vault_url}/v1/accounts/{self.account_id}/token",
            params=params,
            headers={"Authorization": f"Bearer {self._api_key}"},
            timeout=VAULT_TIMEOUT,
        )
        if response.status_code != 200:
            raise _vault_error(response)
        body = response.json()
        self._token = body["access_token"]
        self._expires_at = started + max(0, int(body.get("expires_in", 0)))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        request.register_hook("response", self._retry_on_401)
        return request

    def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or getattr(response.request, "_vault_retried", False):
            return response
        if not response.request.headers.get("Authorization", "").startswith("Bearer "):
            # Not a request that carried our token: e.g. a redirect to another host, for which
            # requests dropped it. Never refresh for it, nor send that host a token.
            return response
        body = response.request.body
        if body is not None and not isinstance(body, (bytes, str)):
            return response  # a streamed body cannot be sent twice
        refused = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = self.token(force_refresh=True, refused=refused)
        _ = response.content  # drain, so the connection can be reused
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry._vault_retried = True  # type: ignore[attr-defined]
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again


def _vault_error(response: requests.Response) -> VaultError:
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "unexpected_answer", response.text[:200]
    return VaultError(response.status_code, code, message, response)
