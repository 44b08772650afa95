"""The Redis connection and its errors: every Redis failure leaves this layer as `StoreUnavailable`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from core import tunables
from core.errors import StoreUnavailable

log = logging.getLogger(__name__)


def connect(url: str, *, tls_verify: bool = True, max_connections: int = 8) -> redis.Redis:
    """A client with timeouts; `tls_verify=False` accepts Heroku Redis's self-signed certificate.

    At most `max_connections` are opened (a Redis plan limits its clients, and many requests in
    flight would otherwise open one each); a command waits up to REDIS_POOL_TIMEOUT for a free
    one, then fails with a ConnectionError, i.e. StoreUnavailable.
    """
    options: dict[str, Any] = {
        "socket_timeout": tunables.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": tunables.REDIS_CONNECT_TIMEOUT,
        "health_check_interval": tunables.REDIS_HEALTH_CHECK_INTERVAL,
        # A command is sent again only after a connection error (reconnecting), never after a timeout:
        # a timed-out script may have run, and running it again would append its event twice.
        "retry": Retry(
            ExponentialWithJitterBackoff(cap=0.2, base=0.02),
            tunables.REDIS_RETRIES,
            supported_errors=(redis.exceptions.ConnectionError,),
        ),
    }
    if url.startswith("rediss://") and not tls_verify:
        options["ssl_cert_reqs"] = "none"
        options["ssl_check_hostname"] = False
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=tunables.REDIS_POOL_TIMEOUT, **options
    )
    return redis.Redis.from_pool(pool)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn any Redis error into StoreUnavailable (the message never echoes the URL)."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        # The type only: a Redis error message can quote the command's arguments.
        log.warning("redis unavailable: %s", type(exc).__name__)
        raise StoreUnavailable() from exc
