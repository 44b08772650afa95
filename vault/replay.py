"""Identity replay bindings: one identity token id (`jti`) carries one message only.

Trackunit's identity token does not cover the body. Where it has a `jti`, the first
message it arrives with is bound to it for as long as the token lives, so a captured
token cannot carry other credentials; the same message again (a retry) is still taken.
"""

from __future__ import annotations

import redis

from vault.layout import KeySpace
from vault.scripts import Script
from vault.store import store_errors


class IdentityBindings:
    """Bind `jti`s to message digests in Redis (the client is passed in)."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self.keys = keys
        self._bind = Script(client, "bind_identity")

    def bind(self, *, issuer: str, app_id: str, jti: str, message_digest: str, ttl: int) -> bool:
        """Tie `jti` (of `issuer`, for `app_id`) to one message for `ttl` s; False if it came with another."""
        with store_errors():
            return bool(
                self._bind(
                    binding=self.keys.identity(issuer, app_id, jti), message_digest=message_digest, ttl=max(1, int(ttl))
                )
            )
