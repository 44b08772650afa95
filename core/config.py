"""The service's configuration: environment variables parsed once, at start-up.

Every default and every validation rule lives here, so that a missing or
malformed variable stops the process with one clear line instead of failing
on the first request. Nothing here knows Flask.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from core.permissions import ADMIN, KeyPolicy, PolicyError, parse_permissions, parse_rate, parse_scopes
from vault.keys import InvalidKey, KeyRing, parse_key

DEFAULT_TOKEN_URL = "https://auth.trackunit.com/apptoken"
DEFAULT_JWKS_URL = "https://iris.trackunit.com/api/marketplace/jwks"
DEFAULT_API_URL = "https://iris.trackunit.com"
DEFAULT_TOKEN_EXPIRY_MARGIN = 300
DEFAULT_REVOKED_RETRY_AFTER = 60
# A forced refresh within this many seconds of the slot's last forced fetch gets that token (0: never).
DEFAULT_FORCE_REFRESH_FLOOR = 5
# One proxied call's whole upstream exchange (connect, retries, headers, every body byte).
DEFAULT_PROXY_DEADLINE = 60
DEFAULT_KEY_PREFIX = "itv"
# Requests one worker process works on at once (the gevent worker holds each as a greenlet,
# not a thread); above it a request is answered 503 `overloaded` at once (api.admission).
DEFAULT_MAX_IN_FLIGHT = 1000
# Every in-flight request may hold a client socket and a pooled upstream one (file descriptors,
# memory): more than this per process is a typo, not a plan.
MAX_MAX_IN_FLIGHT = 10_000
# Redis connections one worker process may open, the invalidation subscription's included.
# Heroku Redis mini accepts 20 clients: 2 workers x 8 leaves room for `heroku run` commands.
DEFAULT_REDIS_MAX_CONNECTIONS = 8
MIN_REDIS_MAX_CONNECTIONS = 2  # the subscription holds one for good; requests need another
# Replica acknowledgement of credential writes (vault.replicas): how many replicas must hold an
# install before it is answered, and how long (ms) to wait for them. The wait stays well inside
# the Redis socket timeout (2 s), so a slow replica is a StoreUnavailable, never a hung socket.
DEFAULT_REDIS_WAIT_REPLICAS = 1
MAX_REDIS_WAIT_REPLICAS = 16
DEFAULT_REDIS_WAIT_TIMEOUT_MS = 500
MAX_REDIS_WAIT_TIMEOUT_MS = 1500
DEFAULT_SENTINEL_PORT = 26379
REDIS_TOPOLOGIES = ("single", "cluster", "sentinel")

# Account lifecycle events (events/, vault/outbox.py): retention of the outbox stream, by time and by count.
DEFAULT_EVENT_RETENTION = 7 * 24 * 3600
DEFAULT_EVENT_MAX_COUNT = 100_000
# Seconds before each webhook retry, close to Svix's schedule; after the last, the event is marked failed.
DEFAULT_WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
EVENT_DELIVERY_MODES = ("web", "worker", "off")
WEBHOOK_SECRET_PREFIX = "whsec_"
MIN_WEBHOOK_SECRET_BYTES = 16

_API_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SCOPE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MIN_API_KEY_LENGTH = 16


class ConfigError(ValueError):
    """A configuration variable is missing or malformed (the message names it)."""


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """One accepted API key. `name` is safe to log; `key` never is. Without options it is an admin key."""

    name: str
    key: str = dataclasses.field(repr=False)
    policy: KeyPolicy = ADMIN


@dataclasses.dataclass(frozen=True)
class AppScopes:
    """The scopes of the app manifest; `required` are requested by default."""

    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def all(self) -> frozenset[str]:
        return frozenset(self.required) | frozenset(self.optional)

    @classmethod
    def parse(cls, text: str) -> AppScopes:
        required: list[str] = []
        optional: list[str] = []
        for item in text.split():
            name, is_optional = (item[:-1], True) if item.endswith("?") else (item, False)
            if not _SCOPE.match(name):
                raise ConfigError(f"APP_SCOPES: {item!r} is not a scope name")
            target = optional if is_optional else required
            if name not in required and name not in optional:
                target.append(name)
        if not required and not optional:
            raise ConfigError("APP_SCOPES is empty: list the scopes of the app manifest")
        return cls(tuple(sorted(required)), tuple(sorted(optional)))


@dataclasses.dataclass(frozen=True)
class RedisTopology:
    """How the service reaches Redis: one server (the default), a Redis Cluster, or a master behind Sentinel.

    - single: `REDIS_URL` names the server (redis://, rediss:// or unix://).
    - cluster: `REDIS_CLUSTER=true`; `REDIS_URL` names any node (redis:// or rediss://, database 0),
      the others are discovered from it. Its password and TLS apply to every node.
    - sentinel: `REDIS_SENTINELS=host:port,host:port,...` and `REDIS_SENTINEL_MASTER=name`; the master
      is asked of the sentinels. `REDIS_URL` (redis:// or rediss://; its host is not used) gives the
      master's username, password, database and TLS. The sentinels get the same TLS and, unless
      `REDIS_SENTINEL_PASSWORD` is set, the same username and password (redis-py's `Sentinel` would
      give them none on its own). `REDIS_SENTINEL_PASSWORD=<password>` gives them that password
      instead (no username), and setting it empty (`REDIS_SENTINEL_PASSWORD=`) gives them none:
      sentinels often have no password, or another than the master's.
    """

    kind: str = "single"
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    #: None: the sentinels use REDIS_URL's username and password; "": none; else this password.
    sentinel_password: str | None = dataclasses.field(default=None, repr=False)


SINGLE = RedisTopology()


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated configuration; build it with `Config.from_env`."""

    redis_url: str = dataclasses.field(repr=False)
    redis_tls_verify: bool
    keyring: KeyRing
    api_keys: tuple[ApiKey, ...]
    iris_app_id: str
    app_scopes: AppScopes
    token_url: str = DEFAULT_TOKEN_URL
    jwks_url: str = DEFAULT_JWKS_URL
    api_url: str = DEFAULT_API_URL
    identity_audience: str | None = None
    #: A PEM file of the CA certificates to trust for Trackunit's hosts instead of the system's
    #: (a TLS-intercepting corporate proxy, or the simulator's test CA); None: the system's.
    trackunit_ca_bundle: str | None = None
    token_expiry_margin: int = DEFAULT_TOKEN_EXPIRY_MARGIN
    revoked_retry_after: int = DEFAULT_REVOKED_RETRY_AFTER
    force_refresh_floor: int = DEFAULT_FORCE_REFRESH_FLOOR
    proxy_deadline: int = DEFAULT_PROXY_DEADLINE
    key_prefix: str = DEFAULT_KEY_PREFIX
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    #: /metrics without a token on purpose (METRICS_PUBLIC=true); production refuses to start otherwise.
    metrics_public: bool = False
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    redis_max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS
    redis_topology: RedisTopology = SINGLE
    #: A credential write is answered once this many replicas hold it (at most the connected ones; 0: never wait),
    #: waiting at most `redis_wait_timeout` ms (REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT).
    redis_wait_replicas: int = DEFAULT_REDIS_WAIT_REPLICAS
    redis_wait_timeout: int = DEFAULT_REDIS_WAIT_TIMEOUT_MS
    #: Events: the outbox's retention, the webhook endpoints (never logged: an URL may carry a token),
    #: the signing key (the bytes of WEBHOOK_SECRET), where delivery runs, and verification on install.
    event_retention: int = DEFAULT_EVENT_RETENTION
    event_max_count: int = DEFAULT_EVENT_MAX_COUNT
    webhook_urls: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    webhook_secret: bytes | None = dataclasses.field(default=None, repr=False)
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    event_delivery: str = "web"
    verify_on_install: bool = True
    #: The longest a feed long-poll waits, whatever its `wait` asks (at most FEED_MAX_WAIT, 30 s).
    feed_max_wait: int = 30
    #: Every configured secret as written, for the logging redaction net.
    secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Parse and validate `env` (normally `os.environ`); raise ConfigError."""
        return cls(
            redis_url=_redis_url(env),
            redis_tls_verify=_bool(env, "REDIS_TLS_VERIFY", True),
            keyring=_keyring(env),
            api_keys=_api_keys(_required(env, "API_KEYS"), AppScopes.parse(_required(env, "APP_SCOPES"))),
            iris_app_id=_required(env, "IRIS_APP_ID"),
            app_scopes=AppScopes.parse(_required(env, "APP_SCOPES")),
            token_url=_http_url(env, "TRACKUNIT_TOKEN_URL", DEFAULT_TOKEN_URL),
            jwks_url=_http_url(env, "TRACKUNIT_JWKS_URL", DEFAULT_JWKS_URL),
            api_url=_http_url(env, "TRACKUNIT_API_URL", DEFAULT_API_URL).rstrip("/"),
            identity_audience=env.get("TRACKUNIT_IDENTITY_AUDIENCE") or None,
            trackunit_ca_bundle=_ca_bundle(env, "TRACKUNIT_CA_BUNDLE"),
            token_expiry_margin=_int(env, "TOKEN_EXPIRY_MARGIN", DEFAULT_TOKEN_EXPIRY_MARGIN, 0),
            revoked_retry_after=_int(env, "REVOKED_RETRY_AFTER", DEFAULT_REVOKED_RETRY_AFTER, 1),
            force_refresh_floor=_int(env, "FORCE_REFRESH_FLOOR", DEFAULT_FORCE_REFRESH_FLOOR, 0, maximum=3600),
            proxy_deadline=_int(env, "PROXY_DEADLINE", DEFAULT_PROXY_DEADLINE, 1, maximum=3600),
            key_prefix=_key_prefix(env),
            metrics_token=env.get("METRICS_TOKEN") or None,
            metrics_public=_bool(env, "METRICS_PUBLIC", False),
            max_in_flight=max_in_flight(env),
            redis_max_connections=_int(
                env,
                "REDIS_MAX_CONNECTIONS",
                DEFAULT_REDIS_MAX_CONNECTIONS,
                MIN_REDIS_MAX_CONNECTIONS,
                unit="connections",
                maximum=1000,
            ),
            redis_topology=_redis_topology(env),
            redis_wait_replicas=_int(
                env,
                "REDIS_WAIT_REPLICAS",
                DEFAULT_REDIS_WAIT_REPLICAS,
                0,
                unit="replicas",
                maximum=MAX_REDIS_WAIT_REPLICAS,
            ),
            redis_wait_timeout=_int(
                env,
                "REDIS_WAIT_TIMEOUT",
                DEFAULT_REDIS_WAIT_TIMEOUT_MS,
                1,
                unit="milliseconds",
                maximum=MAX_REDIS_WAIT_TIMEOUT_MS,
            ),
            event_retention=_duration(env, "EVENT_RETENTION", DEFAULT_EVENT_RETENTION),
            event_max_count=_int(env, "EVENT_MAX_COUNT", DEFAULT_EVENT_MAX_COUNT, 100, unit="events"),
            webhook_urls=_webhook_urls(env),
            webhook_secret=_webhook_secret(env),
            webhook_retry_schedule=_retry_schedule(env),
            event_delivery=_choice(env, "EVENT_DELIVERY", EVENT_DELIVERY_MODES),
            verify_on_install=_bool(env, "VERIFY_ON_INSTALL", True),
            feed_max_wait=_int(env, "EVENT_FEED_MAX_WAIT", 30, 0, maximum=30),
            secrets=_secrets(env),
        )


def check_production(config: Config) -> None:
    """What production (the Procfile's gunicorn) adds to the rules: ConfigError for what it refuses.

    /metrics shows how many accounts there are and how their calls go: it must not be open to
    anyone by accident, so without METRICS_TOKEN the service starts only with METRICS_PUBLIC=true.
    """
    if config.metrics_token is None and not config.metrics_public:
        raise ConfigError(
            "METRICS_TOKEN is missing: /metrics would be open to anyone"
            " (set METRICS_TOKEN, or METRICS_PUBLIC=true to serve it without a token)"
        )


def max_in_flight(env: Mapping[str, str]) -> int:
    """MAX_IN_FLIGHT: requests per worker process; gunicorn.conf.py sizes worker_connections from it."""
    return _int(env, "MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT, 1, unit="requests", maximum=MAX_MAX_IN_FLIGHT)


def _secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    values = [env.get("VAULT_KEY", ""), env.get("METRICS_TOKEN", "")]
    values += env.get("VAULT_PREVIOUS_KEYS", "").split(",")
    for entry in env.get("API_KEYS", "").split(","):
        name_key = (entry.split() or [""])[0]  # options (allow=..., scopes=...) follow after a space
        values.append(name_key.partition(":")[2] or name_key)
    password = urlsplit(env.get("REDIS_URL", "")).password
    values.append(password or "")
    values.append(env.get("REDIS_SENTINEL_PASSWORD", ""))
    secret = env.get("WEBHOOK_SECRET", "").strip()
    values += [secret, secret.removeprefix(WEBHOOK_SECRET_PREFIX)]
    for url in env.get("WEBHOOK_URL", "").split(","):
        values.append(urlsplit(url.strip()).password or "")
    return tuple(v.strip() for v in values if v and v.strip())


def _required(env: Mapping[str, str], name: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(f"{name} is missing")
    return value


def _redis_url(env: Mapping[str, str]) -> str:
    url = _required(env, "REDIS_URL")
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return url


def _redis_topology(env: Mapping[str, str]) -> RedisTopology:
    """REDIS_CLUSTER, or REDIS_SENTINELS with REDIS_SENTINEL_MASTER (see RedisTopology); neither: single."""
    cluster = _bool(env, "REDIS_CLUSTER", False)
    sentinels_raw = (env.get("REDIS_SENTINELS") or "").strip()
    master = (env.get("REDIS_SENTINEL_MASTER") or "").strip()
    sentinel_password = env.get("REDIS_SENTINEL_PASSWORD")
    url = urlsplit((env.get("REDIS_URL") or "").strip())
    if cluster and (sentinels_raw or master):
        raise ConfigError("REDIS_CLUSTER=true and REDIS_SENTINELS/REDIS_SENTINEL_MASTER exclude each other: set one")
    if not sentinels_raw and (master or sentinel_password is not None):
        named = "REDIS_SENTINEL_MASTER" if master else "REDIS_SENTINEL_PASSWORD"
        raise ConfigError(f"{named} is set but REDIS_SENTINELS is missing (host:port,host:port,...)")
    if cluster:
        if url.scheme == "unix":
            raise ConfigError(
                "REDIS_CLUSTER=true needs REDIS_URL with redis:// or rediss:// (a cluster is reached over TCP)"
            )
        if url.path.strip("/") not in ("", "0"):
            raise ConfigError("REDIS_URL: a Redis Cluster has database 0 only (REDIS_CLUSTER=true)")
        return RedisTopology("cluster")
    if not sentinels_raw:
        return SINGLE
    if not master:
        raise ConfigError("REDIS_SENTINEL_MASTER is missing (REDIS_SENTINELS is set): the name the sentinels monitor")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", master):
        raise ConfigError("REDIS_SENTINEL_MASTER must be 1-128 of A-Z a-z 0-9 _ . -")
    if url.scheme == "unix":
        raise ConfigError(
            "REDIS_SENTINELS needs REDIS_URL with redis:// or rediss:// (for the master's password and TLS)"
        )
    return RedisTopology(
        "sentinel",
        sentinels=_sentinels(sentinels_raw),
        sentinel_master=master,
        sentinel_password=sentinel_password.strip() if sentinel_password is not None else None,
    )


def _sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port,...` (port 26379 when left out; `[v6]:port` for IPv6)."""
    found: list[tuple[str, int]] = []
    for index, entry in enumerate(part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            parts = urlsplit(f"//{entry}")
            host, port = parts.hostname, parts.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            host, port = None, 0
        if not host or parts.path or parts.username or parts.password:
            raise ConfigError(f"REDIS_SENTINELS entry {index + 1} must be host:port")
        found.append((host, port))
    if not found:
        raise ConfigError("REDIS_SENTINELS is empty: list the sentinels as host:port,host:port,...")
    if len(set(found)) != len(found):
        raise ConfigError("REDIS_SENTINELS: two entries name the same sentinel")
    return tuple(found)


def _keyring(env: Mapping[str, str]) -> KeyRing:
    try:
        current = parse_key(_required(env, "VAULT_KEY"), "VAULT_KEY")
        previous = [
            parse_key(item, f"VAULT_PREVIOUS_KEYS entry {index + 1}")
            for index, item in enumerate(part for part in env.get("VAULT_PREVIOUS_KEYS", "").split(",") if part.strip())
        ]
    except InvalidKey as exc:
        raise ConfigError(str(exc)) from None
    return KeyRing(current, previous)


def _api_keys(text: str, app_scopes: AppScopes) -> tuple[ApiKey, ...]:
    """Comma-separated entries `key` or `name:key`, each optionally followed by options (see `_key_policy`).

    A bare key is named by its position; an entry without options is an admin key, as before options existed.
    """
    keys: list[ApiKey] = []
    entries = [part.strip() for part in text.split(",")]
    # Entries are split at commas before options are read: a comma inside an option's list
    # (`scopes=asset.view,account.view`) would start a new entry, and its tail would become a
    # bare admin key whose secret is a public scope name. So once any entry has options, every
    # entry must be `name:key`, and the tail is refused instead.
    with_options = any(len(entry.split()) > 1 for entry in entries)
    for index, entry in enumerate(entries):
        if not entry:
            continue
        name_key, *options = entry.split()
        name, sep, key = name_key.partition(":")
        if not sep and with_options:
            raise ConfigError(
                f"API_KEYS entry {index + 1}: with options in use every entry is name:key"
                " (join the items of an option's list with '+', not ',')"
            )
        if not sep:
            name, key = f"key{index + 1}", name_key
        if not _API_KEY_NAME.match(name):
            raise ConfigError(f"API_KEYS entry {index + 1}: the name must be 1-64 of A-Z a-z 0-9 _ . -")
        if len(key) < MIN_API_KEY_LENGTH:
            raise ConfigError(
                f"API_KEYS entry {index + 1} ({name}): a key needs at least {MIN_API_KEY_LENGTH} characters"
            )
        try:
            policy = _key_policy(options, app_scopes)
        except PolicyError as exc:
            raise ConfigError(f"API_KEYS entry {index + 1} ({name}): {exc}") from None
        keys.append(ApiKey(name, key, policy))
    if not keys:
        raise ConfigError("API_KEYS is missing")
    if len({k.name for k in keys}) != len(keys):
        raise ConfigError("API_KEYS: two entries share a name")
    return tuple(keys)


def valid_key_name(name: str) -> bool:
    """An API key's name (an API_KEYS entry's or a managed key's): 1-64 of A-Z a-z 0-9 _ . -."""
    return bool(_API_KEY_NAME.match(name))


_KEY_OPTIONS = ("allow", "scopes", "rate")


def _key_policy(options: list[str], app_scopes: AppScopes) -> KeyPolicy:
    """`allow=PERM+PERM`, `scopes=SCOPE+SCOPE`, `rate=N/PERIOD`, separated by spaces; none: admin.

    With options, `allow=` is required: a key limited in scope or rate but silently admin would surprise.
    """
    if not options:
        return ADMIN
    given: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or name not in _KEY_OPTIONS:
            raise PolicyError(f"{option[:40]!r} is not an option: write allow=..., scopes=... or rate=...")
        if name in given:
            raise PolicyError(f"{name}= is given twice")
        given[name] = value
    if "allow" not in given:
        raise PolicyError("options need allow=PERMISSIONS (an entry without options is an admin key)")
    scopes = parse_scopes(given["scopes"]) if "scopes" in given else None
    return KeyPolicy(
        permissions=parse_permissions(given["allow"]),
        scopes=scope_ceiling(scopes, app_scopes) if scopes is not None else None,
        rate=parse_rate(given["rate"]) if "rate" in given else None,
    )


def scope_ceiling(scopes: frozenset[str], app_scopes: AppScopes) -> frozenset[str]:
    """A key's scope ceiling, every scope of it in the app manifest (a typo would otherwise allow nothing)."""
    unknown = sorted(scopes - app_scopes.all)
    if unknown:
        raise PolicyError(f"scopes not in APP_SCOPES: {', '.join(repr(s[:40]) for s in unknown[:5])}")
    return scopes


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    url = (env.get(name) or default).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL")
    return url


def _ca_bundle(env: Mapping[str, str], name: str) -> str | None:
    """A readable PEM file with at least one certificate, or None when unset."""
    path = (env.get(name) or "").strip()
    if not path:
        return None
    try:
        with open(path, encoding="ascii", errors="replace") as pem:
            text = pem.read(4 * 1024 * 1024)
    except OSError:
        raise ConfigError(f"{name} must name a readable PEM file") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"{name} holds no PEM certificate")
    return path


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int, *, unit: str = "seconds", maximum: int | None = None
) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of {unit}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _key_prefix(env: Mapping[str, str]) -> str:
    prefix = (env.get("KEY_PREFIX") or DEFAULT_KEY_PREFIX).strip()
    if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", prefix):
        raise ConfigError("KEY_PREFIX must be 1-64 of A-Z a-z 0-9 _ . : -")
    return prefix.rstrip(":")


def _duration(env: Mapping[str, str], name: str, default: int) -> int:
    """Seconds, or a whole number with a unit: `604800`, `7d`, `12h`, `30m`, `90s`."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    match = re.fullmatch(r"(\d{1,9})([smhd]?)", raw)
    if match is None:
        raise ConfigError(f"{name} must be a whole number of seconds, or of minutes, hours or days (30m, 12h, 7d)")
    seconds = int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    if seconds < 60:
        raise ConfigError(f"{name} must be at least 60 seconds")
    return seconds


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}")
    return raw


def _webhook_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """WEBHOOK_URL: comma-separated http(s) endpoints (an entry is named by position, never by its text)."""
    urls = [part.strip() for part in (env.get("WEBHOOK_URL") or "").split(",") if part.strip()]
    for index, url in enumerate(urls):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"WEBHOOK_URL entry {index + 1} must be an http(s) URL")
    if len(set(urls)) != len(urls):
        raise ConfigError("WEBHOOK_URL: two entries are the same URL")
    if urls and not (env.get("WEBHOOK_SECRET") or "").strip():
        raise ConfigError("WEBHOOK_SECRET is missing (WEBHOOK_URL is set; python -m cli keygen --webhook makes one)")
    return tuple(urls)


def _webhook_secret(env: Mapping[str, str]) -> bytes | None:
    """WEBHOOK_SECRET: `whsec_` + base64 of the HMAC key, as Standard Webhooks defines it."""
    raw = (env.get("WEBHOOK_SECRET") or "").strip()
    if not raw:
        return None
    if not raw.startswith(WEBHOOK_SECRET_PREFIX):
        raise ConfigError("WEBHOOK_SECRET must start with whsec_ (python -m cli keygen --webhook makes one)")
    try:
        key = base64.b64decode(raw.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("WEBHOOK_SECRET: the part after whsec_ is not base64") from None
    if len(key) < MIN_WEBHOOK_SECRET_BYTES:
        raise ConfigError(f"WEBHOOK_SECRET must hold at least {MIN_WEBHOOK_SECRET_BYTES} bytes")
    return key


def _retry_schedule(env: Mapping[str, str]) -> tuple[float, ...]:
    """WEBHOOK_RETRY_SCHEDULE: seconds before each retry, comma-separated (decimals allowed, for tests)."""
    raw = (env.get("WEBHOOK_RETRY_SCHEDULE") or "").strip()
    if not raw:
        return DEFAULT_WEBHOOK_RETRY_SCHEDULE
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError("WEBHOOK_RETRY_SCHEDULE must be seconds, comma-separated (5,300,1800)") from None
    if not 1 <= len(delays) <= 20 or any(not 0 <= d <= 7 * 86400 for d in delays):
        raise ConfigError("WEBHOOK_RETRY_SCHEDULE: 1 to 20 delays, each from 0 to 604800 seconds")
    return delays
