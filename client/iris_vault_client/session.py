"""`trackunit_session`: a requests.Session bound to Trackunit's API, with the vault's auth, timeouts and retries."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .auth import VaultAuth

DEFAULT_API_URL = "https://iris.trackunit.com"
DEFAULT_TIMEOUT = (5.0, 30.0)
# Never sleep longer than this inside one call because Trackunit said Retry-After (urllib3's
# default would be 6 hours); older urllib3 releases without the option keep their own behaviour.
RETRY_AFTER_MAX = 30
_RETRY_AFTER_CAP = (
    {"retry_after_max": RETRY_AFTER_MAX} if "retry_after_max" in inspect.signature(Retry.__init__).parameters else {}
)


class TrackunitSession(requests.Session):
    """A session whose relative URLs are joined to `base_url` and whose requests always have a timeout."""

    def __init__(self, base_url: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        url = url.decode() if isinstance(url, bytes) else url
        if not url.startswith(("http://", "https://")):
            url = f"{self.base_url}/{url.lstrip('/')}"
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


def trackunit_session(
    vault_url: str,
    api_key: str,
    account_id: str,
    scopes: str | Iterable[str] | None = None,
    *,
    api_url: str = DEFAULT_API_URL,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int = 3,
) -> TrackunitSession:
    """A session that calls `api_url` for `account_id`; 429/5xx on idempotent methods are retried
    with backoff, honouring `Retry-After`; POST and PATCH are never retried."""
    session = TrackunitSession(api_url, timeout=timeout)
    session.auth = VaultAuth(vault_url, api_key, account_id, scopes)
    retry = Retry(
        total=retries,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
        backoff_factor=0.5,
        backoff_jitter=0.5,
        respect_retry_after_header=True,
        raise_on_status=False,
        **_RETRY_AFTER_CAP,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
