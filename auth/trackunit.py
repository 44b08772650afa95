"""The HTTP client for Trackunit's `/apptoken` (OAuth2 client_credentials, form-encoded).

One urllib3 pool with timeouts and urllib3's `Retry` (jittered backoff,
`Retry-After` honoured up to a cap) so a flaky or rate-limiting endpoint is
retried a bounded number of times. RFC 6749 error answers become our errors;
nothing returned or raised ever contains the client secret.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from urllib.parse import urlencode

import certifi
import urllib3

from core import jsontext, metrics, tunables
from core.deadline import DeadlinePassed, DeadlineRetry, FetchDeadline, watched
from core.errors import AuthError, AuthUnavailable, CredentialsRevoked, ScopeNotGranted, VaultError
from core.httpretry import retry_after_seconds

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclasses.dataclass(frozen=True)
class TokenGrant:
    """A validated answer of the token endpoint."""

    access_token: str = dataclasses.field(repr=False)
    token_type: str
    expires_in: int
    scope: str


DEFAULT_POOL_SIZE = 10  # the service passes its in-flight limit
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


def build_pool(pool_size: int = DEFAULT_POOL_SIZE, *, verify: bool | str = True) -> urllib3.PoolManager:
    """A pool whose POSTs to the token endpoint are retried with backoff, keeping up to
    `pool_size` connections (one per fetch in flight) for reuse; `verify` is a CA bundle path or True.

    urllib3 directly, as for the proxy (proxy.upstream): a token fetch needs none of what a
    requests.Session adds (cookies, redirects, request preparation), which was an eighth of a
    cold token request's CPU.
    """
    retry = DeadlineRetry(
        total=tunables.TRACKUNIT_RETRIES,
        connect=tunables.TRACKUNIT_RETRIES,
        read=tunables.TRACKUNIT_RETRIES,
        status=tunables.TRACKUNIT_RETRIES,
        other=0,
        redirect=0,
        # client_credentials is safe to repeat: at worst Trackunit issues two tokens.
        allowed_methods=frozenset({"POST"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=tunables.TRACKUNIT_BACKOFF_FACTOR,
        backoff_jitter=tunables.TRACKUNIT_BACKOFF_JITTER,
        backoff_max=tunables.TRACKUNIT_BACKOFF_MAX,
        respect_retry_after_header=True,
        retry_after_max=tunables.TRACKUNIT_RETRY_AFTER_MAX,
        raise_on_status=False,  # hand back the last 429/5xx so its Retry-After reaches the caller
    )
    # Watched, so that a FetchDeadline can cut its connections. block=False: a fetch above
    # pool_size opens a connection of its own rather than waiting (with no time limit) for one.
    # A PoolManager reads no proxy or .netrc settings from the environment.
    return watched(
        urllib3.PoolManager(
            num_pools=1,
            maxsize=pool_size,
            block=False,
            retries=retry,
            timeout=urllib3.Timeout(connect=tunables.TRACKUNIT_CONNECT_TIMEOUT, read=tunables.TRACKUNIT_READ_TIMEOUT),
            cert_reqs="CERT_REQUIRED",
            ca_certs=verify if isinstance(verify, str) else certifi.where(),
        )
    )


class TrackunitAuth:
    """Fetches app tokens from `token_url`."""

    def __init__(
        self,
        token_url: str,
        *,
        pool: urllib3.PoolManager | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        verify: bool | str = True,
    ) -> None:
        self.token_url = token_url
        self.pool = pool or build_pool(pool_size, verify=verify)

    def fetch_token(self, client_id: str, client_secret: str, scopes: Sequence[str]) -> TokenGrant:
        """POST the seed's request; raise ScopeNotGranted, CredentialsRevoked, AuthUnavailable or AuthError."""
        started = time.monotonic()
        outcome = "ok"
        try:
            with FetchDeadline(tunables.TRACKUNIT_FETCH_DEADLINE) as deadline:
                return self._fetch(client_id, client_secret, scopes, deadline)
        except VaultError as exc:
            outcome = exc.code
            raise
        finally:
            metrics.TRACKUNIT_SECONDS.observe(time.monotonic() - started)
            metrics.TRACKUNIT_CALLS.labels(outcome).inc()

    def _fetch(self, client_id: str, client_secret: str, scopes: Sequence[str], deadline: FetchDeadline) -> TokenGrant:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": " ".join(scopes),
        }
        try:
            response = self.pool.urlopen(
                "POST",
                self.token_url,
                body=urlencode(form).encode(),
                # identity: the answer is a few hundred bytes, and a decoder is one more thing to bound
                headers={**FORM, "Accept-Encoding": "identity"},
                redirect=False,
                preload_content=False,  # read the body ourselves, bounded by MAX_TOKEN_RESPONSE_BYTES
            )
        except (urllib3.exceptions.HTTPError, OSError, DeadlinePassed) as exc:
            _raise_if_expired(deadline)
            # The exception text names the URL, never the form body.
            log.warning("token endpoint unreachable: %s", type(exc).__name__)
            raise AuthUnavailable("Trackunit's token endpoint could not be reached.") from None
        try:
            return _interpret(response, deadline)
        finally:
            # Read to its end, the connection went back to the pool; else it is closed, never reused half-read.
            response.close()
            response.release_conn()


def _raise_if_expired(deadline: FetchDeadline) -> None:
    if deadline.expired:
        log.warning("token endpoint still answering after %ss: given up", deadline.seconds)
        raise AuthUnavailable("Trackunit's token endpoint answered too slowly.")


def _interpret(response: urllib3.BaseHTTPResponse, deadline: FetchDeadline) -> TokenGrant:
    status = response.status
    body = _json_body(response, deadline)
    if status in RETRY_STATUSES or status >= 500:  # every 5xx is "down" to the caller; the usual ones were retried
        raise AuthUnavailable(
            f"Trackunit's token endpoint answered {status}.",
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if status == 200:
        return _grant(body)
    error = body.get("error") if isinstance(body, dict) else None
    code = error if isinstance(error, str) and _ERROR_CODE.match(error) else None
    if code == "invalid_scope":
        raise ScopeNotGranted()
    if code in ("invalid_client", "unauthorized_client"):
        raise CredentialsRevoked()
    log.warning("token endpoint answered %s with error %s", status, code or "(none)")
    raise AuthError(f"Trackunit's token endpoint answered {status} ({code or 'no error code'}).")


def _json_body(response: urllib3.BaseHTTPResponse, deadline: FetchDeadline) -> object:
    try:
        raw = _read_bounded(response)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        _raise_if_expired(deadline)
        log.warning("token endpoint answer could not be read: %s", type(exc).__name__)
        raise AuthUnavailable("Trackunit's token endpoint answer could not be read.") from None
    _raise_if_expired(deadline)  # the body may have ended early because the deadline cut it
    if raw is None:
        return None
    try:
        return jsontext.loads(raw)
    except jsontext.InvalidJson:
        return None


def _read_bounded(response: urllib3.BaseHTTPResponse) -> bytes | None:
    """The body, or None if it is over MAX_TOKEN_RESPONSE_BYTES (the fetch's deadline bounds the time)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(tunables.BODY_READ_CHUNK, decode_content=True):
        size += len(chunk)
        if size > tunables.MAX_TOKEN_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _grant(body: object) -> TokenGrant:
    if not isinstance(body, dict):
        raise AuthError("Trackunit's token endpoint answered 200 without a JSON object.")
    token = body.get("access_token")
    token_type = body.get("token_type", "Bearer")
    expires_in = body.get("expires_in", tunables.DEFAULT_EXPIRES_IN)
    scope = body.get("scope", "")
    if not isinstance(token, str) or not token:
        raise AuthError("Trackunit's token answer has no access_token.")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise AuthError("Trackunit's token answer is not a Bearer token.")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise AuthError("Trackunit's token answer has an invalid expires_in.")
    if not isinstance(scope, str):
        raise AuthError("Trackunit's token answer has an invalid scope.")
    return TokenGrant(access_token=token, token_type="Bearer", expires_in=expires_in, scope=scope)


def _retry_after(value: str | None) -> int | None:
    if not value:
        return None
    seconds = retry_after_seconds(value)
    return None if seconds == float("inf") else min(max(1, int(seconds)), 3600)
