"""Forwarding one request to Trackunit's API with the account's token, and streaming the answer back.

Only an allow-list of headers crosses in either direction: the caller's
`Authorization` (our API key), cookies and hop-by-hop headers never reach
Trackunit, and `Set-Cookie` never comes back. Redirects are never followed.
429 and 5xx are retried (urllib3 `Retry`, honouring `Retry-After`) only for
idempotent methods; POST and PATCH are sent once.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping

import requests
import urllib3
from requests.adapters import HTTPAdapter

from core import tunables
from core.errors import UpstreamUnavailable
from core.httpretry import BudgetRetry

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
FORWARD_REQUEST = ("Content-Type", "Accept", "Accept-Encoding", "Accept-Language", "TU-PREVIEW",
                   "If-None-Match", "If-Modified-Since")
_RESPONSE_EXACT = frozenset({
    "content-type", "content-encoding", "content-length", "content-language", "content-disposition",
    "retry-after", "link", "etag", "last-modified", "location", "vary", "cache-control",
    "x-total-count", "x-request-id", "x-correlation-id",
})
_RESPONSE_PREFIXES = ("x-ratelimit-", "ratelimit", "x-rate-limit-", "x-page", "x-total")
DEFAULT_POOL_SIZE = 10  # requests' own default; the service passes its in-flight limit


def build_session(pool_size: int = DEFAULT_POOL_SIZE) -> requests.Session:
    """A session that keeps `pool_size` connections per host: one per request in flight."""
    retry = BudgetRetry(
        total=tunables.PROXY_RETRIES,
        connect=tunables.PROXY_RETRIES,  # nothing was sent: safe for every method
        read=0,
        status=tunables.PROXY_RETRIES,
        other=0,
        redirect=0,
        allowed_methods=IDEMPOTENT,
        status_forcelist=frozenset({429, 500, 502, 503, 504}),
        backoff_factor=tunables.PROXY_BACKOFF_FACTOR,
        backoff_jitter=tunables.PROXY_BACKOFF_JITTER,
        respect_retry_after_header=True,
        retry_after_max=tunables.PROXY_RETRY_AFTER_MAX,
        raise_on_status=False,
    )
    session = requests.Session()
    session.trust_env = False
    # pool_block=False: a call above pool_size opens a connection of its own (closed after use)
    # rather than waiting: urllib3 would wait for a free one with no time limit.
    adapter = HTTPAdapter(max_retries=retry, pool_connections=tunables.PROXY_POOL_HOSTS,
                          pool_maxsize=pool_size, pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclasses.dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes]
    close: callable


def forwarded_headers(incoming: Mapping[str, str], token: str) -> dict[str, str]:
    headers = {name: incoming[name] for name in FORWARD_REQUEST if incoming.get(name)}
    headers.setdefault("Accept-Encoding", "identity")  # requests would add gzip; pass the caller's choice only
    headers["Authorization"] = f"Bearer {token}"
    return headers


def returned_headers(upstream: Mapping[str, str]) -> list[tuple[str, str]]:
    return [
        (name, value) for name, value in upstream.items()
        if name.lower() in _RESPONSE_EXACT or name.lower().startswith(_RESPONSE_PREFIXES)
    ]


class TrackunitApi:
    """Sends requests to TRACKUNIT_API_URL (the URL is built and checked by proxy.paths)."""

    def __init__(self, session: requests.Session | None = None, *, pool_size: int = DEFAULT_POOL_SIZE,
                 verify: bool | str = True) -> None:
        self.session = session or build_session(pool_size)
        self.verify = verify  # the adapter is called directly, so the session's own `verify` would not apply

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> UpstreamResponse:
        try:
            # Straight to the adapter (retries included), not Session.send: the session would read a
            # redirect's body to find the next hop even when not following it, and would keep
            # Trackunit's cookies and send them with every later call, for any account.
            prepared = self.session.prepare_request(requests.Request(method, url, headers=headers, data=body or None))
            response = self.session.get_adapter(prepared.url).send(
                prepared, stream=True, timeout=(tunables.PROXY_CONNECT_TIMEOUT, tunables.PROXY_READ_TIMEOUT),
                verify=self.verify,
            )
        except requests.RequestException as exc:
            log.warning("Trackunit API unreachable: %s", type(exc).__name__)
            raise UpstreamUnavailable() from None
        return UpstreamResponse(
            status=response.status_code,
            headers=returned_headers(response.headers),
            body=_stream(response),
            close=response.close,
        )


def _stream(response: requests.Response) -> Iterator[bytes]:
    """The body as sent (still compressed if it was), chunk by chunk; never all in memory."""
    try:
        yield from response.raw.stream(tunables.PROXY_CHUNK_BYTES, decode_content=False)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # Headers are already sent: all we can do is end the body early and say so in the log.
        log.warning("Trackunit API answer broke off: %s", type(exc).__name__)
    finally:
        response.close()
