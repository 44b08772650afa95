"""Forwarding one request to Trackunit's API with the account's token, and streaming the answer back.

Only an allow-list of headers crosses in either direction: the caller's
`Authorization` (our API key), cookies and hop-by-hop headers never reach
Trackunit, and `Set-Cookie` never comes back. Redirects are never followed.
429 and 5xx are retried (urllib3 `Retry`, honouring `Retry-After`) only for
idempotent methods; POST and PATCH are sent once. One deadline (PROXY_DEADLINE) covers
the whole exchange: connects, retries, headers and every byte of the answer.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Mapping

import certifi
import urllib3
from werkzeug.datastructures import Headers

from core import tunables
from core.deadline import DeadlinePassed, DeadlineRetry, FetchDeadline, watched
from core.errors import UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
FORWARD_REQUEST = (
    "Content-Type",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "TU-PREVIEW",
    "If-None-Match",
    "If-Modified-Since",
)
_RESPONSE_EXACT = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-length",
        "content-language",
        "content-disposition",
        "retry-after",
        "link",
        "etag",
        "last-modified",
        "location",
        "vary",
        "cache-control",
        "x-total-count",
        "x-request-id",
        "x-correlation-id",
    }
)
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_FIELD_VALUE = re.compile(r"[ \t\x21-\x7e\x80-\xff]*")  # SP, HTAB, VCHAR, obs-text
_DIGITS = re.compile(r"[0-9]+")
_RESPONSE_PREFIXES = ("x-ratelimit-", "ratelimit", "x-rate-limit-", "x-page", "x-total")
DEFAULT_POOL_SIZE = 10  # urllib3's own default; the service passes its in-flight limit
DEFAULT_DEADLINE = 60.0  # seconds; the service passes PROXY_DEADLINE


def build_retry() -> DeadlineRetry:
    """429 and 5xx retried for idempotent methods only, a connect failure for every method (nothing was sent).

    No retry whose wait would end past the call's deadline: the last answer goes back instead.
    """
    return DeadlineRetry(
        total=tunables.PROXY_RETRIES,
        connect=tunables.PROXY_RETRIES,
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


def build_pool(pool_size: int = DEFAULT_POOL_SIZE, *, verify: bool | str = True) -> urllib3.PoolManager:
    """Connections to the API host kept for reuse, `pool_size` of them: one per call in flight.

    urllib3 directly, not requests: a proxied call needs none of what a requests.Session adds
    (a cookie jar, which would keep Trackunit's cookies across accounts; redirect handling;
    request preparation), and skipping it is a fifth of the proxy's own CPU per call.
    block=False: a call above pool_size opens a connection of its own (closed after use) rather
    than waiting for a free one with no time limit. `verify`: a CA bundle path, or True for certifi's.
    """
    return watched(
        urllib3.PoolManager(
            num_pools=tunables.PROXY_POOL_HOSTS,
            maxsize=pool_size,
            block=False,
            retries=build_retry(),
            timeout=urllib3.Timeout(connect=tunables.PROXY_CONNECT_TIMEOUT, read=tunables.PROXY_READ_TIMEOUT),
            cert_reqs="CERT_REQUIRED",
            ca_certs=verify if isinstance(verify, str) else certifi.where(),
        )
    )


@dataclasses.dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes]
    close: Callable[[], None]


def forwarded_headers(incoming: Mapping[str, str] | Headers, token: str) -> dict[str, str]:
    headers = {name: incoming[name] for name in FORWARD_REQUEST if incoming.get(name)}
    headers.setdefault("Accept-Encoding", "identity")  # requests would add gzip; pass the caller's choice only
    headers["Authorization"] = f"Bearer {token}"
    return headers


def returned_headers(upstream: Mapping[str, str]) -> list[tuple[str, str]]:
    """The allow-listed headers of an upstream answer that HTTP lets us send on.

    A field that is not a token name and a value of visible characters, spaces and tabs
    (RFC 9110 5.1, 5.5; a control character, say) is dropped: the server would refuse to start
    an answer that carried it, after the call was made.
    """
    returned = []
    length_seen = False
    for name, value in upstream.items():
        lowered = name.lower()
        if lowered in _RESPONSE_EXACT or lowered.startswith(_RESPONSE_PREFIXES):
            sendable = bool(_FIELD_NAME.fullmatch(name) and _FIELD_VALUE.fullmatch(value))
            if lowered == "content-length":
                # One plain number (the server parses it); else none, and the body goes chunked.
                sendable = sendable and not length_seen and bool(_DIGITS.fullmatch(value))
                length_seen = True
            if sendable:
                returned.append((name, value))
            else:
                log.warning(
                    "Trackunit API sent a header that cannot be passed on: %s dropped",
                    lowered if _FIELD_NAME.fullmatch(name) else "(a malformed name)",
                )
    return returned


class TrackunitApi:
    """Sends requests to TRACKUNIT_API_URL (the URL is built and checked by proxy.paths)."""

    def __init__(
        self,
        pool: urllib3.PoolManager | None = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        verify: bool | str = True,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self.pool = pool or build_pool(pool_size, verify=verify)
        self.deadline_seconds = deadline

    def deadline(self) -> FetchDeadline:
        """A started deadline for one proxied call; the caller closes it when the answer is sent."""
        deadline = FetchDeadline(self.deadline_seconds)
        deadline.start()
        return deadline

    def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, deadline: FetchDeadline
    ) -> UpstreamResponse:
        """Send one request within `deadline`: UpstreamTimeout (504) if it passes before the headers came."""
        try:
            with deadline.active():
                response = self.pool.urlopen(
                    method,
                    url,
                    body=body or None,
                    headers=headers,
                    redirect=False,  # a redirect goes back as it is
                    preload_content=False,
                    decode_content=False,
                )
        except (urllib3.exceptions.HTTPError, OSError, DeadlinePassed) as exc:
            if deadline.expired:
                log.warning("Trackunit API sent no answer within PROXY_DEADLINE (%ss): given up", deadline.seconds)
                raise UpstreamTimeout() from None
            log.warning("Trackunit API unreachable: %s", type(exc).__name__)
            raise UpstreamUnavailable() from None
        return UpstreamResponse(
            status=response.status,
            headers=returned_headers(response.headers),
            body=_stream(response, deadline),
            close=lambda: _drop(response),
        )


def _stream(response: urllib3.BaseHTTPResponse, deadline: FetchDeadline) -> Iterator[bytes]:
    """The body as sent (still compressed if it was), chunk by chunk; never all in memory."""
    complete = False
    try:
        yield from response.stream(tunables.PROXY_CHUNK_BYTES, decode_content=False)
        complete = True
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # Headers are already sent: all we can do is end the body early and say so in the log.
        if deadline.expired:
            log.warning("Trackunit API answer cut at PROXY_DEADLINE (%ss): still sending", deadline.seconds)
        else:
            log.warning("Trackunit API answer broke off: %s", type(exc).__name__)
    finally:
        if complete:
            response.release_conn()  # read to its end: the connection serves the next call
        else:
            _drop(response)


def _drop(response: urllib3.BaseHTTPResponse) -> None:
    """Close a connection whose answer may be unread (a half-read one must never be reused), freeing its slot."""
    response.close()
    response.release_conn()
