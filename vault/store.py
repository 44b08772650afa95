"""The Redis connection and its errors: every Redis failure leaves this layer as `StoreUnavailable`."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from core import tunables
from core.errors import StoreUnavailable

log = logging.getLogger(__name__)


def connect(url: str, *, tls_verify: bool = True) -> redis.Redis:
    """A client with timeouts; `tls_verify=False` accepts Heroku Redis's self-signed certificate."""
    options: dict = {
        "socket_timeout": tunables.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": tunables.REDIS_CONNECT_TIMEOUT,
        "health_check_interval": tunables.REDIS_HEALTH_CHECK_INTERVAL,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), tunables.REDIS_RETRIES),
    }
    if url.startswith("rediss://") and not tls_verify:
        options["ssl_cert_reqs"] = "none"
        options["ssl_check_hostname"] = False
    return redis.Redis.from_url(url, **options)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn any Redis error into StoreUnavailable (the message never echoes the URL)."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        # The type only: a Redis error message can quote the command's arguments.
        log.warning("redis unavailable: %s", type(exc).__name__)
        raise StoreUnavailable() from exc
