"""The application factory: reads the configuration once, builds the clients, wires the API.

`create_app()` only wires things. Production (`wsgi.py`) passes nothing and
the environment is read; tests pass a `Config` or a mapping of variables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import click
import redis
from flask import Flask

import api
import cli
from api.apikeys import ApiKeyChecker
from api.context import EXTENSION
from auth.callers import CallerCheck
from auth.identity import IdentityVerifier
from auth.memory import WorkerMemory
from auth.ratelimit import RateLimiter
from auth.tokens import TokenService
from auth.trackunit import TrackunitAuth
from core import logs, tunables
from core.config import ApiKey, Config, ConfigError
from events.service import Events, build_events
from proxy.upstream import TrackunitApi
from vault.accounts import AccountRepository
from vault.apikeys import ApiKeyStore
from vault.health import StoreHealth
from vault.layout import KeySpace
from vault.migration import Migrator
from vault.replay import IdentityBindings
from vault.replicas import Replicas
from vault.seal import Sealer
from vault.store import connect
from vault.tokencache import TokenCache


@dataclasses.dataclass(frozen=True)
class Services:
    """Everything a request may use, built once per process (`api.context.services()`)."""

    config: Config
    redis: redis.Redis
    api_keys: CallerCheck
    identity: IdentityVerifier
    bindings: IdentityBindings
    accounts: AccountRepository
    health: StoreHealth
    tokens: TokenService
    trackunit_api: TrackunitApi
    memory: WorkerMemory
    managed_keys: ApiKeyStore
    rate_limiter: RateLimiter
    events: Events
    metrics_token: ApiKeyChecker | None = None

    def close(self) -> None:
        """Stop background threads (tests create many apps; a server process simply exits)."""
        self.memory.stop()
        self.events.close()


def build_services(config: Config, client: redis.Redis | None = None) -> Services:
    client = (
        client
        if client is not None
        else connect(
            config.redis_url,
            tls_verify=config.redis_tls_verify,
            max_connections=config.redis_max_connections,
            topology=config.redis_topology,
        )
    )
    sealer = Sealer(config.keyring)
    keys = KeySpace(config.key_prefix)
    memory = WorkerMemory(client, keys.channel)
    events = build_events(client, keys, config)
    migrator = Migrator(client, keys, on_change=memory.cache.invalidate)
    # Credential and key writes are answered once a replica holds them (REDIS_WAIT_REPLICAS; none connected: no wait).
    replicas = Replicas(client, wanted=config.redis_wait_replicas, timeout_ms=config.redis_wait_timeout)
    accounts = AccountRepository(
        client,
        sealer,
        keys,
        on_change=memory.cache.invalidate,
        outbox=events.outbox,
        migrator=migrator,
        replicas=replicas,
    )
    managed_keys = ApiKeyStore(client, config.keyring, keys, replicas=replicas)
    tokens = TokenService(
        accounts,
        TokenCache(client, sealer, keys, config.iris_app_id, outbox=events.outbox),
        # Every request in flight may be a cold fetch; refresh-ahead fetches come on top.
        TrackunitAuth(
            config.token_url,
            pool_size=config.max_in_flight + tunables.REFRESH_AHEAD_WORKERS,
            verify=config.trackunit_ca_bundle or True,
        ),
        config.app_scopes,
        expiry_margin=config.token_expiry_margin,
        revoked_retry_after=config.revoked_retry_after,
        force_refresh_floor=config.force_refresh_floor,
        local=memory.cache,
    )
    return Services(
        config=config,
        redis=client,
        api_keys=CallerCheck(config.api_keys, managed_keys, memory.keys),
        identity=IdentityVerifier(
            config.jwks_url, audience=config.identity_audience, ca_bundle=config.trackunit_ca_bundle
        ),
        bindings=IdentityBindings(client, keys),
        accounts=accounts,
        health=StoreHealth(client),
        tokens=tokens,
        trackunit_api=TrackunitApi(
            pool_size=config.max_in_flight,
            verify=config.trackunit_ca_bundle or True,
            deadline=config.proxy_deadline,
        ),
        memory=memory,
        events=events,
        metrics_token=ApiKeyChecker((ApiKey("metrics", config.metrics_token),)) if config.metrics_token else None,
        managed_keys=managed_keys,
        rate_limiter=RateLimiter(client, keys.rate_limits),
    )


def _config_from_environment() -> Config:
    """The configuration from `os.environ`; under `flask --app app …` an error is one line, not a traceback."""
    try:
        return Config.from_env(os.environ)
    except ConfigError as exc:
        if click.get_current_context(silent=True) is None:
            raise  # wsgi.py and gunicorn's on_starting print it their own way
        raise click.ClickException(f"configuration error: {exc}") from None


def create_app(config: Config | Mapping[str, str] | None = None, *, redis_client: redis.Redis | None = None) -> Flask:
    if config is None:
        config = _config_from_environment()
    elif not isinstance(config, Config):
        config = Config.from_env(config)
    logs.configure(config.secrets)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = tunables.MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider has it
    app.url_map.merge_slashes = False  # never answer a redirect; the proxy refuses '//host' paths itself
    app.extensions[EXTENSION] = build_services(config, redis_client)
    api.init_app(app, max_in_flight=config.max_in_flight)
    cli.init_app(app)
    return app
