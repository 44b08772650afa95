"""In-memory state of the simulator: clients, issued tokens, behaviour, counters.

One object, one lock: requests are served by many threads, and tests read and
change the same object directly (``app.extensions["simulator"]``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import http
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from .keys import SigningKey

ISSUER = "https://iris.trackunit.com"
DEFAULT_APP_ID = "@organization/appname"
DEFAULT_SCOPES = ("asset.view", "account.view")
_ALNUM = string.ascii_letters + string.digits

Reply = tuple[int, dict[str, Any] | str, dict[str, str]]


def new_client_id() -> str:
    """An Okta-style client id, shaped like the one in Trackunit's example."""
    return "0oa" + "".join(secrets.choice(_ALNUM) for _ in range(17))


def new_client_secret() -> str:
    """43 url-safe characters, the length of the secret in Trackunit's example."""
    return secrets.token_urlsafe(32)


def default_fail_body(status: int) -> dict[str, str]:
    """The RFC 6749 error a token endpoint would plausibly give for ``status``."""
    if status in (429, 503):
        return {"error": "temporarily_unavailable"}
    if status == 401:
        return {"error": "invalid_client"}
    if 400 <= status < 500:
        return {"error": "invalid_request"}
    return {"error": "server_error"}


@dataclasses.dataclass
class Client:
    """Credentials Trackunit hands an app for one account."""

    account_id: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...]
    iris_app_id: str
    revoked: bool = False


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    account_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float


@dataclasses.dataclass
class FaultInjector:
    """Injected failures and delay of one endpoint, the part ``/apptoken`` and the REST API share.

    The defaults are a healthy server. ``fail_status`` fails every request with that status until
    reset, or the next ``fail_count`` requests only; ``delay`` is slept before any answer.
    """

    #: Name used in "unknown ... field" errors.
    what: ClassVar[str] = "fault"
    #: Order of the fields in ``as_dict`` (the JSON of the control endpoints).
    field_order: ClassVar[tuple[str, ...]] = ("fail_status", "fail_body", "retry_after", "fail_count", "delay")

    fail_status: int | None = None
    fail_body: dict[str, Any] | str | None = None
    retry_after: str | None = None
    fail_count: int | None = None
    #: Seconds every request sleeps before it is answered (a slow endpoint); cut short by a reset.
    delay: float = 0.0

    def checked(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate ``changes`` against the defaults in ``self`` (``ValueError`` on bad input):
        ``None`` restores a default, and ``fail_status`` without ``fail_count`` means "fail until reset"."""
        changes = dict(changes)
        if "fail_status" in changes and "fail_count" not in changes:
            changes["fail_count"] = None
        checked = {}
        for name, value in changes.items():
            if name not in self.__dataclass_fields__:
                raise ValueError(f"unknown {self.what} field: {name}")
            checked[name] = getattr(self, name) if value is None else _check_behaviour(name, value)
        return checked

    def apply(self, checked: dict[str, Any]) -> dict[str, Any]:
        """Set fields validated by ``checked``; return the result as ``as_dict`` does."""
        for name, value in checked.items():
            setattr(self, name, value)
        return self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {name: copy.deepcopy(getattr(self, name)) for name in self.field_order}

    def take_failure(self, default_body: Callable[[int], dict[str, Any]]) -> Reply | None:
        """The injected failure for this request, counting down ``fail_count``; None if none is due."""
        if self.fail_status is None or (self.fail_count is not None and self.fail_count <= 0):
            return None
        if self.fail_count is not None:
            self.fail_count -= 1
        body = self.fail_body if self.fail_body is not None else default_body(self.fail_status)
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        return self.fail_status, body, headers


@dataclasses.dataclass
class Behaviour(FaultInjector):
    """Injected misbehaviour of ``/apptoken``: the shared faults plus the token's own oddities."""

    what: ClassVar[str] = "behaviour"
    field_order: ClassVar[tuple[str, ...]] = (
        "expires_in",
        "omit_expires_in",
        "delay",
        "fail_status",
        "fail_body",
        "retry_after",
        "fail_count",
        "malformed",
    )

    expires_in: int = 3600
    omit_expires_in: bool = False
    malformed: bool = False


@dataclasses.dataclass
class ApiBehaviour(FaultInjector):
    """Injected misbehaviour of the REST API (``/api/...`` but the JWKS): the shared faults alone."""

    what: ClassVar[str] = "API behaviour"


def wait_delay(delay: float, release: threading.Event) -> None:
    """Sleep an injected delay, outside the state's lock; a reset (``release``) cuts it short."""
    if delay:
        release.wait(delay)


@dataclasses.dataclass(frozen=True)
class ApiRequest:
    """One request to the REST API, as received (path and query still percent-encoded)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name; None if absent."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def default_api_fail_body(status: int) -> dict[str, Any]:
    """Trackunit's REST error shape for an injected failure."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    code = re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_") or "error"
    return {"status": status, "code": code, "message": f"injected failure: {phrase}"}


LARGE_PATTERN = bytes(i % 251 for i in range(251 * 261))  # 251 is prime: chunk edges never line up with it


def large_body(size: int, offset: int = 0) -> bytes:
    """``size`` bytes of the deterministic content of ``/api/test/v1/large``, from ``offset``."""
    out = bytearray()
    start = offset % 251
    while len(out) < size:
        take = min(size - len(out), len(LARGE_PATTERN) - start)
        out += LARGE_PATTERN[start : start + take]
        start = 0
    return bytes(out)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in [{low}, {high if high is not None else 'inf'}]")
    return value


def _check_behaviour(name: str, value: Any) -> Any:
    """Validate one behaviour field (``None`` has already been mapped to the default)."""
    if name == "expires_in":
        return _check_int(name, value, 0)
    if name in ("omit_expires_in", "malformed"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if name == "delay":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError("delay must be a non-negative number of seconds")
        return float(value)
    if name == "fail_status":
        return _check_int(name, value, 100, 599)
    if name == "fail_count":
        return _check_int(name, value, 0)
    if name == "fail_body":
        if not isinstance(value, (dict, str)):
            raise ValueError("fail_body must be a JSON object or a string")
        return value
    if name == "retry_after":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError("retry_after must be a string (or an integer number of seconds)")
        return str(value)
    raise ValueError(f"unknown behaviour field: {name}")


def assets_for(account_id: str) -> list[dict[str, str]]:
    """A few assets derived from the account id, so answers are deterministic."""
    kinds = ("Excavator", "Wheel loader", "Telehandler", "Generator")
    digest = hashlib.sha256(account_id.encode()).digest()
    count = 2 + digest[0] % 3
    return [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"trackunit-simulator:{account_id}:{i}")),
            "accountId": account_id,
            "name": f"{kinds[(digest[1] + i) % len(kinds)]} {i + 1}",
        }
        for i in range(count)
    ]


class SimulatorState:
    """Everything the simulator knows; every public method is thread-safe."""

    def __init__(self, *, expires_in: int = 3600, signing_key: SigningKey | None = None) -> None:
        self._lock = threading.Lock()
        self.signing_key = signing_key or SigningKey()
        #: Replaceable clock (seconds since the epoch) for token expiry and JWT times.
        self.clock: Callable[[], float] = time.time
        #: Timeout of the POST that ``/_sim/install`` makes to the callback.
        self.callback_timeout: float = 10.0
        self._default_expires_in = _check_int("expires_in", expires_in, 0)
        self._clients_by_account: dict[str, Client] = {}
        self._clients_by_id: dict[str, Client] = {}
        self._tokens: dict[str, IssuedToken] = {}
        # Gauges (what is open or in flight now) survive a reset; counters and peaks start again from them.
        self._connections_open = 0
        self._api_in_flight = 0
        self._token_in_flight = 0
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._behaviour = Behaviour(expires_in=self._default_expires_in)
        self._token_requests = 0
        self._token_requests_by_client: dict[str, int] = {}
        self._tokens_issued = 0
        self._api_requests = 0
        self._last_token_request: dict[str, Any] | None = None
        self._last_api_headers: dict[str, str] | None = None
        self._api_behaviour = ApiBehaviour()
        self._api_requests_by_method: dict[str, int] = {}
        self._api_log: list[ApiRequest] = []
        self._connections_accepted = 0
        self._tls_connections_accepted = 0
        self._tls_handshakes = 0
        self._tls_handshake_failures = 0
        self._connections_open_peak = self._connections_open
        self._api_in_flight_peak = self._api_in_flight
        self._token_in_flight_peak = self._token_in_flight
        old_release = getattr(self, "_release", None)
        self._release = threading.Event()
        if old_release is not None:
            old_release.set()  # cut short requests still sleeping on an old delay

    # -- behaviour and counters -------------------------------------------

    def configure(self, /, **changes: Any) -> dict[str, Any]:
        """Change ``/apptoken`` behaviour; fields not given keep their value.

        ``None`` puts a field back to its default. Setting ``fail_status``
        without ``fail_count`` means "fail until reset". All fields are
        validated before any is applied (``ValueError`` on bad input).
        """
        checked = Behaviour(expires_in=self._default_expires_in).checked(changes)
        with self._lock:
            return self._behaviour.apply(checked)

    @property
    def behaviour(self) -> dict[str, Any]:
        with self._lock:
            return self._behaviour.as_dict()

    def configure_api(self, /, **changes: Any) -> dict[str, Any]:
        """Change the REST API's behaviour (``fail_status``, ``fail_count``, ``retry_after``,
        ``fail_body``, ``delay``), like ``configure`` does for ``/apptoken``: ``None`` restores a default,
        ``fail_status`` alone means "fail until reset", and bad input raises ``ValueError``."""
        checked = ApiBehaviour().checked(changes)
        with self._lock:
            return self._api_behaviour.apply(checked)

    @property
    def api_behaviour(self) -> dict[str, Any]:
        with self._lock:
            return self._api_behaviour.as_dict()

    def reset(self) -> None:
        """Behaviour (token endpoint and API), counters and the API log back to defaults;
        accounts and tokens are kept."""
        with self._lock:
            self._reset_locked()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "token_requests": self._token_requests,
                "token_requests_by_client": dict(self._token_requests_by_client),
                "api_requests": self._api_requests,
                "api_requests_by_method": dict(self._api_requests_by_method),
                "tokens_issued": self._tokens_issued,
                "last_token_request": dict(self._last_token_request) if self._last_token_request else None,
                **self._connection_stats_locked(),
            }

    def _connection_stats_locked(self) -> dict[str, int]:
        return {
            "connections_accepted": self._connections_accepted,
            "tls_connections_accepted": self._tls_connections_accepted,
            "tls_handshakes": self._tls_handshakes,
            "tls_handshake_failures": self._tls_handshake_failures,
            "connections_open": self._connections_open,
            "connections_open_peak": self._connections_open_peak,
            "api_in_flight": self._api_in_flight,
            "api_in_flight_peak": self._api_in_flight_peak,
            "token_in_flight": self._token_in_flight,
            "token_in_flight_peak": self._token_in_flight_peak,
        }

    @property
    def connection_stats(self) -> dict[str, int]:
        """Connections the server accepted (HTTP and HTTPS listeners together; ``tls_*`` the HTTPS ones),
        handshakes, and the peaks of open connections and of requests in flight, since the last reset."""
        with self._lock:
            return self._connection_stats_locked()

    # -- connections (reported by simulator.server) ---------------------------

    def connection_opened(self, *, tls: bool) -> None:
        with self._lock:
            self._connections_accepted += 1
            if tls:
                self._tls_connections_accepted += 1
            self._connections_open += 1
            self._connections_open_peak = max(self._connections_open_peak, self._connections_open)

    def connection_closed(self) -> None:
        with self._lock:
            self._connections_open -= 1

    def tls_handshake(self, *, ok: bool) -> None:
        with self._lock:
            if ok:
                self._tls_handshakes += 1
            else:
                self._tls_handshake_failures += 1

    @property
    def token_requests(self) -> int:
        with self._lock:
            return self._token_requests

    @property
    def token_requests_by_client(self) -> dict[str, int]:
        with self._lock:
            return dict(self._token_requests_by_client)

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens_issued

    @property
    def api_requests(self) -> int:
        with self._lock:
            return self._api_requests

    @property
    def api_requests_by_method(self) -> dict[str, int]:
        """REST API requests counted by HTTP method, e.g. ``{"GET": 3, "POST": 1}``."""
        with self._lock:
            return dict(self._api_requests_by_method)

    @property
    def api_log(self) -> list[ApiRequest]:
        """Every REST API request since the last reset, oldest first (a copy)."""
        with self._lock:
            return list(self._api_log)

    @property
    def last_token_request(self) -> dict[str, Any] | None:
        """Form fields of the last ``/apptoken`` request, without the secret."""
        with self._lock:
            return dict(self._last_token_request) if self._last_token_request else None

    @property
    def last_api_headers(self) -> dict[str, str] | None:
        with self._lock:
            return dict(self._last_api_headers) if self._last_api_headers is not None else None

    # -- accounts ----------------------------------------------------------

    def add_account(
        self,
        account_id: str,
        scopes: list[str] | tuple[str, ...] = DEFAULT_SCOPES,
        iris_app_id: str = DEFAULT_APP_ID,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> dict[str, Any]:
        """Create or replace the account's client; the old client stops working."""
        client = Client(
            account_id=account_id,
            client_id=client_id or new_client_id(),
            client_secret=client_secret or new_client_secret(),
            scopes=tuple(dict.fromkeys(scopes)),
            iris_app_id=iris_app_id,
        )
        with self._lock:
            old = self._clients_by_account.get(account_id)
            if old is not None:
                self._clients_by_id.pop(old.client_id, None)
            other = self._clients_by_id.get(client.client_id)
            if other is not None:
                self._clients_by_account.pop(other.account_id, None)
            self._clients_by_account[account_id] = client
            self._clients_by_id[client.client_id] = client
        return {
            "accountId": account_id,
            "clientId": client.client_id,
            "clientSecret": client.client_secret,
            "scopes": list(client.scopes),
            "irisAppId": iris_app_id,
        }

    def revoke(self, account_id: str, *, revoke_tokens: bool = False) -> bool:
        """Refuse the account's client from now on, as after an uninstall.

        Tokens already issued stay valid until they expire (as self-contained
        tokens would) unless ``revoke_tokens``. Returns False if unknown.
        """
        with self._lock:
            client = self._clients_by_account.get(account_id)
            if client is None:
                return False
            client.revoked = True
            if revoke_tokens:
                self._tokens = {k: t for k, t in self._tokens.items() if t.client_id != client.client_id}
            return True

    def expire_tokens(self) -> int:
        """Make every issued token expired now (for refresh tests); returns how many."""
        with self._lock:
            now = self.clock()
            self._tokens = {k: dataclasses.replace(t, expires_at=now) for k, t in self._tokens.items()}
            return len(self._tokens)

    def reject_token(self, token: str) -> bool:
        """Forget one issued token: the API answers 401 to it from now on. False if unknown."""
        with self._lock:
            return self._tokens.pop(token, None) is not None

    def tokens_of(self, account_id: str) -> list[str]:
        """The tokens issued to an account that are still known (expired ones included)."""
        with self._lock:
            return [k for k, t in self._tokens.items() if t.account_id == account_id]

    # -- identity ------------------------------------------------------------

    def identity_token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        expires_in: int = 300,
        headers: dict[str, Any] | None = None,
        jti: bool = True,
    ) -> str:
        """A ``Trackunit-Identity`` JWT; a claim given as ``None`` is left out.

        By default it carries ``iss``, ``iat``, ``exp`` and a unique ``jti`` (plus ``claims``).
        ``jti=False`` leaves the ``jti`` out: RS256 is deterministic, so the same claims signed
        in the same second then give a byte-identical token, as an issuer without ``jti`` would.
        """
        now = int(self.clock())
        merged = {"iss": ISSUER, "iat": now, "exp": now + expires_in, **(claims or {})}
        if jti and "jti" not in merged:
            merged["jti"] = uuid.uuid4().hex
        return self.signing_key.sign({k: v for k, v in merged.items() if v is not None}, headers=headers)

    # -- /apptoken -----------------------------------------------------------

    def begin_token_request(self, record: dict[str, Any]) -> tuple[float, threading.Event]:
        """Count a token request; return the delay to sleep and the event that ends it early."""
        with self._lock:
            self._token_requests += 1
            key = record.get("client_id") or ""
            self._token_requests_by_client[key] = self._token_requests_by_client.get(key, 0) + 1
            self._last_token_request = dict(record)
            self._token_in_flight += 1
            self._token_in_flight_peak = max(self._token_in_flight_peak, self._token_in_flight)
            return self._behaviour.delay, self._release

    def end_token_request(self) -> None:
        """The answer to a token request counted by ``begin_token_request`` is on its way (or failed)."""
        with self._lock:
            self._token_in_flight -= 1

    def answer_token_request(self, form: dict[str, str], form_encoded: bool) -> Reply:
        """Decide the answer to ``/apptoken`` (after any delay): status, body, headers."""
        with self._lock:
            b = self._behaviour
            failure = b.take_failure(default_fail_body)
            if failure is not None:
                return failure
            if b.malformed:
                return 200, {"token_type": "Bearer", "expires_in": b.expires_in}, {}
            return self._issue_locked(form, form_encoded, b)

    def _issue_locked(self, form: dict[str, str], form_encoded: bool, b: Behaviour) -> Reply:
        if not form_encoded:
            return _oauth_error(400, "invalid_request", "body must be application/x-www-form-urlencoded")
        grant_type = form.get("grant_type", "")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
        client = self._clients_by_id.get(form.get("client_id", ""))
        secret = form.get("client_secret", "")
        if client is None or not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
            return _oauth_error(401, "invalid_client", "client authentication failed")
        if client.revoked:
            return _oauth_error(401, "invalid_client", "client authentication failed")
        requested = tuple(dict.fromkeys(form.get("scope", "").split()))
        denied = [s for s in requested if s not in client.scopes]
        if denied:
            return _oauth_error(400, "invalid_scope", "scope not granted: " + " ".join(denied))
        scopes = requested or client.scopes
        token = "sim-" + secrets.token_urlsafe(32)
        self._tokens[token] = IssuedToken(client.account_id, client.client_id, scopes, self.clock() + b.expires_in)
        self._tokens_issued += 1
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": b.expires_in}
        if b.omit_expires_in:
            del body["expires_in"]
        body.update(access_token=token, scope=" ".join(scopes))
        return 200, body, {}

    # -- REST API --------------------------------------------------------------

    def authorize_api_request(self, headers: dict[str, str], required_scope: str | None) -> Reply | str:
        """Count an API request; return the token's account id, or an error reply.

        Kept for callers that have only the headers; ``api_request`` records the whole request.
        """
        return self.api_request("GET", "", "", headers, b"", required_scope)

    def api_request(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, required_scope: str | None
    ) -> Reply | str:
        """Record and count one REST API request, then decide: an injected failure, 401 (no
        valid token), 403 (``required_scope`` missing; ``None`` = any valid token), or the
        token's account id."""
        with self._lock:
            self._api_requests += 1
            self._api_requests_by_method[method] = self._api_requests_by_method.get(method, 0) + 1
            self._last_api_headers = dict(headers)
            self._api_log.append(ApiRequest(method, path, query, dict(headers), bytes(body), time.monotonic()))
            delay, release = self._api_behaviour.delay, self._release
            self._api_in_flight += 1
            self._api_in_flight_peak = max(self._api_in_flight_peak, self._api_in_flight)
        try:
            wait_delay(delay, release)  # outside the lock: many slow requests are in flight at once
            return self._decide_api_request(headers, required_scope)
        finally:
            with self._lock:
                self._api_in_flight -= 1

    def _decide_api_request(self, headers: dict[str, str], required_scope: str | None) -> Reply | str:
        with self._lock:
            failure = self._api_behaviour.take_failure(default_api_fail_body)
            if failure is not None:
                status, body_out, extra = failure
                if status == 401:
                    extra["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                return failure
            auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
            scheme, _, token = auth.partition(" ")
            issued = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if issued is None or self.clock() >= issued.expires_at:
                challenge = 'Bearer error="invalid_token"' if auth else "Bearer"
                return _rest_error(401, "unauthorized", "missing, unknown or expired access token", challenge)
            if required_scope is not None and required_scope not in issued.scopes:
                challenge = f'Bearer error="insufficient_scope", scope="{required_scope}"'
                return _rest_error(403, "insufficient_scope", f"the token lacks scope {required_scope}", challenge)
            return issued.account_id


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return status, {"error": error, "error_description": description}, {}


def _rest_error(status: int, code: str, message: str, challenge: str) -> Reply:
    return status, {"status": status, "code": code, "message": message}, {"WWW-Authenticate": challenge}
