"""Records of the single-Redis layout (the releases before slot groups), written as the last of them wrote them.

The writes run that release's own Lua scripts (`git show c7d04a6:vault/lua/<name>.lua`, copied into
`legacy_lua/` with the Lua prelude its layout generated, `prelude.lua`), with its key names
(`vault.migration.LegacyKeys`) and its call arguments (c7d04a6's `AccountRepository.install`,
`.revoke`, `TokenCache.put`, `EndpointState.ensure_group` and `.settle`). Why its scripts and not the
current code with the keys renamed afterwards: the current scripts may change with the new layout
(a field, an event, the cache set), and a rename would quietly bring such a change into "legacy"
data; the old scripts are frozen here. Sealing, the sealed values' associated data and the token's
JSON did not change between the releases (only vault/layout.py did), so they come from the current
modules: a record the test writes is byte for byte one the old release would have written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis

from tests.support.constants import APP_ID, VAULT_KEY
from tests.support.rotation import keyring
from vault.accounts import Credentials, credentials_aad, sealed_fields_args
from vault.layout import CACHE, FAILURE, TOKEN, Field
from vault.migration import LegacyKeys
from vault.scripts import signature
from vault.seal import Sealer
from vault.tokencache import CachedToken, token_aad

LUA = Path(__file__).with_name("legacy_lua")
RETENTION_MS = 7 * 24 * 3600 * 1000  # the outbox's default retention then (EVENT_RETENTION)
MAX_EVENTS = 100_000


class LegacyScript:
    """One of the old release's scripts, called with named keys and arguments as its wrapper did."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        text = (LUA / f"{name}.lua").read_text()
        self.keys, self.args, self.rest = signature(text)
        prelude = (LUA / "prelude.lua").read_text() + (LUA / "lifecycle.lua").read_text()
        self.script = client.register_script(prelude + text)

    def __call__(self, **named: Any) -> Any:
        rest = named[self.rest] if self.rest else ()
        return self.script(keys=[named[k] for k in self.keys], args=[*(named[a] for a in self.args), *rest])


class LegacyVault:
    """Installs, revokes and caches tokens in the single-Redis layout, as the release before slot groups."""

    def __init__(self, client: redis.Redis, prefix: str = "test", key: str = VAULT_KEY) -> None:
        self.redis = client
        self.keys = LegacyKeys(prefix)
        self.sealer = Sealer(keyring(key))
        self.channel = f"{prefix}:invalidate"
        self._install = LegacyScript(client, "install")
        self._revoke = LegacyScript(client, "revoke")
        self._put = LegacyScript(client, "put_token")
        self._delete = LegacyScript(client, "delete")
        self._settle = LegacyScript(client, "event_settle")

    def _outbox(self) -> dict[str, Any]:
        return {
            "events": self.keys.events,
            "event_counts": self.keys.event_counts,
            "retain_after": f"{max(0, int(time.time() * 1000) - RETENTION_MS)}-0",
            "retain_max": MAX_EVENTS,
        }

    def install(self, account_id: str, creds: Credentials, *, app_id: str = APP_ID, issued_at: int | None = None):
        plain = json.dumps({"id": creds.client_id, "secret": creds.client_secret}).encode()
        sealed = self.sealer.seal(plain, aad=credentials_aad(app_id, account_id))
        return self._install(
            account=self.keys.key_for(account_id),
            cache=self.keys.key_for(account_id, CACHE),
            index=self.keys.index,
            revoked=self.keys.revoked,
            generation=self.keys.generation,
            app=app_id,
            now=int(time.time()),
            account_id=account_id,
            channel=self.channel,
            iat="" if issued_at is None else int(issued_at),
            pieces=sealed_fields_args(sealed),
            **self._outbox(),
        )

    def generation(self, account_id: str) -> str:
        return self.redis.hget(self.keys.key_for(account_id), Field.GENERATION).decode()

    def revoke(self, account_id: str, until: int | None = None) -> bool:
        now = int(time.time())
        return bool(
            self._revoke(
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                revoked=self.keys.revoked,
                generation_counter=self.keys.generation,
                generation=self.generation(account_id),
                until=until if until is not None else now + 600,
                now=now,
                account_id=account_id,
                channel=self.channel,
                **self._outbox(),
            )
        )

    def delete(self, account_id: str) -> bool:
        return bool(
            self._delete(
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                index=self.keys.index,
                revoked=self.keys.revoked,
                verifying=self.keys.key_for(account_id, "verifying"),
                account_id=account_id,
                channel=self.channel,
                via="api",
                **self._outbox(),
            )
        )

    def put_token(self, account_id: str, slot: str, token: CachedToken, *, app_id: str = APP_ID) -> bool:
        """TokenCache.put of the old release: the sealed JSON under the slot's key, for its remaining time."""
        ttl_ms = int((token.cached_until - time.time()) * 1000)
        value = json.dumps(
            {
                "t": token.access_token,
                "y": token.token_type,
                "s": token.scope,
                "u": token.cached_until,
                "r": token.refresh_from,
                **({"f": token.forced_at} if token.forced_at is not None else {}),
            }
        ).encode()
        sealed = self.sealer.seal(value, aad=token_aad(app_id, account_id, slot))
        return self._write(account_id, TOKEN, slot, sealed, ttl_ms, is_token=True, scope=token.scope)

    def put_failure(self, account_id: str, slot: str, code: str = "trackunit_unavailable", ttl: int = 30) -> bool:
        value = json.dumps({"code": code, "retry_after": ttl})
        return self._write(account_id, FAILURE, slot, value, ttl * 1000, is_token=False, scope="")

    def _write(
        self, account_id: str, kind: str, slot: str, value: bytes | str, ttl_ms: int, *, is_token: bool, scope: str
    ) -> bool:
        return bool(
            self._put(
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                slot_key=self.keys.key_for(account_id, kind, slot),
                revoked=self.keys.revoked,
                generation=self.generation(account_id),
                value=value,
                ttl_ms=max(1, ttl_ms),
                is_token="1" if is_token else "0",
                now=int(time.time()),
                account_id=account_id,
                channel=self.channel,
                scope=scope,
                **self._outbox(),
            )
        )

    # Webhook deliveries of the old release (vault/deliveries.py at c7d04a6) -----------------------

    def subscribe_endpoint(self, endpoint_id: str, start: str = "0") -> None:
        """EndpointState.ensure_group: the endpoint's consumer group on the one stream."""
        self.redis.xgroup_create(self.keys.events, f"webhook:{endpoint_id}", id=start, mkstream=True)

    def read_pending(self, endpoint_id: str, count: int = 1000) -> list[tuple[str, str]]:
        """A consumer reads the group's new entries (they stay pending until settled): (event id, account)."""
        answer = self.redis.xreadgroup(f"webhook:{endpoint_id}", "legacy-worker", {self.keys.events: ">"}, count=count)
        return [
            (event_id.decode(), fields[b"account_id"].decode()) for _, entries in answer for event_id, fields in entries
        ]

    def settle(self, endpoint_id: str, event_id: str, account_id: str, outcome: str, *, due: float = 0.0) -> None:
        """EndpointState.settle: 'delivered', 'retry' (due at `due`) or 'failed'."""
        self._settle(
            retry=self.keys.endpoint(endpoint_id, "retry"),
            attempts=self.keys.endpoint(endpoint_id, "attempts"),
            owners=self.keys.endpoint(endpoint_id, "owners"),
            held=self.keys.endpoint(endpoint_id, "held"),
            failed=self.keys.endpoint(endpoint_id, "failed"),
            waiting=self.keys.waiting(endpoint_id, account_id),
            events=self.keys.events,
            group=f"webhook:{endpoint_id}",
            event_id=event_id,
            account_id=account_id,
            outcome=outcome,
            due=repr(due),
            failures=1,
            now=repr(time.time()),
            failed_kept=1000,
        )
