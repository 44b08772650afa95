"""Managed API keys in Redis: only a keyed digest of each key (HMAC-SHA256 under a subkey of VAULT_KEY), never the key.

A record is named by the digest of its key and holds the key's name, policy and times; an index
maps names to digests. Creating and revoking a key change both and announce it on the invalidation
channel in one script, so every worker forgets what it remembered (auth.memory).

The digest is taken under a subkey of a vault key (`SealingKey.derive(DIGEST_LABEL)`): the current
key for a new key; a key made before a VAULT_KEY rotation keeps its digest under the key it was made
with, and is found under that key while it stays in VAULT_PREVIOUS_KEYS (`digests` lists every
candidate, current first); on that first use the service moves it to its digest under the current
key (`rehash`: the presented key is needed for that). The record names its vault key by its public
id (`kid`), so `apikeys list` shows which keys were not used since a rotation.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import time
from collections.abc import Mapping
from hashlib import sha256
from typing import cast

import redis

from core.permissions import KeyPolicy, PolicyError, parse_permissions, parse_rate, parse_scopes
from vault.keys import KeyRing
from vault.layout import APIKEYS_CHANGED, KeySpace
from vault.replicas import Replicas
from vault.scripts import Script
from vault.store import store_errors

PREFIX = "itv_"  # every managed key starts with it, so that secret scanners can find a leaked one
DIGEST_LABEL = b"apikey-digest/v1"
_KEY_BYTES = 32  # random bytes in a new key (43 characters of URL-safe base64 after the prefix)


class RecordField:
    """The fields of a managed key's record hash."""

    NAME = "name"
    PERMISSIONS = "permissions"  # space-separated, as `KeyPolicy.named` writes them
    SCOPES = "scopes"  # space-separated; absent: no ceiling
    RATE = "rate"  # `N/PERIOD`; absent: no limit
    CREATED = "created"  # epoch seconds
    EXPIRES = "expires"  # epoch seconds; absent: never
    LAST_USED = "last_used"  # epoch seconds, written at most once a minute per process
    KID = "kid"  # the public id of the vault key the digest was taken under


@dataclasses.dataclass(frozen=True)
class ManagedKey:
    """A managed key's record (never the key itself)."""

    name: str
    policy: KeyPolicy
    created: int
    expires: int | None
    last_used: int | None
    kid: str
    digest: str = dataclasses.field(repr=False)  # hex; names the record

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


def new_key() -> str:
    """A new random key with the recognisable prefix."""
    return PREFIX + secrets.token_urlsafe(_KEY_BYTES)


class KeyDigests:
    """The keyed digests of a presented key, under the subkey of each vault key of the ring."""

    def __init__(self, keyring: KeyRing) -> None:
        self._subkeys = [(key.id.hex(), key.derive(DIGEST_LABEL)) for key in keyring.keys]

    def current(self, presented: str) -> tuple[str, str]:
        """(kid, hex digest) under the current vault key."""
        kid, subkey = self._subkeys[0]
        return kid, hmac.new(subkey, presented.encode(), sha256).hexdigest()

    def candidates(self, presented: str) -> list[str]:
        """The hex digests under every vault key of the ring, the current one first."""
        return [hmac.new(subkey, presented.encode(), sha256).hexdigest() for _, subkey in self._subkeys]


class ApiKeyStore:
    """Creates, finds, lists, touches and revokes managed keys; every Redis error is StoreUnavailable."""

    def __init__(
        self, client: redis.Redis, keyring: KeyRing, keys: KeySpace, *, replicas: Replicas | None = None
    ) -> None:
        self.r = client
        self.keys = keys
        # A created or revoked key is answered once a replica holds it: a revocation lost in a failover
        # would make a leaked key work again.
        self.replicas = replicas if replicas is not None else Replicas(client, wanted=0, timeout_ms=1)
        self.digests = KeyDigests(keyring)
        self._create = Script(client, "apikey_create")
        self._revoke = Script(client, "apikey_revoke")
        self._touch = Script(client, "apikey_touch")
        self._rehash = Script(client, "apikey_rehash")

    def create(
        self, name: str, policy: KeyPolicy, *, expires: int | None = None, now: float | None = None
    ) -> str | None:
        """A new key named `name` with `policy`: returns the key (the only time it exists outside the
        caller's hands), or None when the name is taken."""
        key = new_key()
        kid, digest = self.digests.current(key)
        fields: dict[str, str] = {
            RecordField.NAME: name,
            RecordField.PERMISSIONS: " ".join(policy.named),
            RecordField.CREATED: str(int(now if now is not None else time.time())),
            RecordField.KID: kid,
        }
        if policy.scopes is not None:
            fields[RecordField.SCOPES] = " ".join(sorted(policy.scopes))
        if policy.rate is not None:
            fields[RecordField.RATE] = str(policy.rate)
        if expires is not None:
            fields[RecordField.EXPIRES] = str(expires)
        stored = self._change(self._create, name, digest, fields=[item for pair in fields.items() for item in pair])
        return key if stored else None

    def revoke(self, name: str) -> bool:
        """Remove the key named `name`; False if there is none."""
        with store_errors():
            raw = cast(bytes | None, self.r.hget(self.keys.apikey_index, name))
            if raw is None:
                return False
        return self._change(self._revoke, name, raw.decode())

    def _change(self, script: Script, name: str, digest: str, **more: object) -> bool:
        """Run a script that changes the key `name` (record `digest`) and its index, and announces it."""
        record = self.keys.apikey(digest)
        done = self.replicas.run(
            script,
            record,
            index=self.keys.apikey_index,
            record=record,
            name=name,
            digest=digest,
            channel=self.keys.channel,
            message=APIKEYS_CHANGED,
            **more,
        )
        return bool(done == 1)

    def find(self, presented: str) -> ManagedKey | None:
        """The record of a presented key (its digest under any vault key of the ring), in one round trip."""
        candidates = self.digests.candidates(presented)
        with store_errors():
            pipe = self.r.pipeline(transaction=False)
            for digest in candidates:
                pipe.hgetall(self.keys.apikey(digest))
            found = pipe.execute()
        for digest, fields in zip(candidates, found):
            if fields:
                return _record(digest, fields)
        return None

    def rehash(self, record: ManagedKey, presented: str) -> None:
        """Move a record found under an older vault key's digest to the current key's (first use after a rotation)."""
        kid, digest = self.digests.current(presented)
        if record.digest == digest:
            return
        with store_errors():
            self._rehash(
                index=self.keys.apikey_index,
                old_record=self.keys.apikey(record.digest),
                new_record=self.keys.apikey(digest),
                name=record.name,
                old_digest=record.digest,
                new_digest=digest,
                kid_field=RecordField.KID,
                kid=kid,
                channel=self.keys.channel,
                message=APIKEYS_CHANGED,
            )

    def all(self) -> list[ManagedKey]:
        """Every managed key, by name."""
        with store_errors():
            index = cast(dict[bytes, bytes], self.r.hgetall(self.keys.apikey_index))
            pipe = self.r.pipeline(transaction=False)
            names = sorted(index)
            for name in names:
                pipe.hgetall(self.keys.apikey(index[name].decode()))
            found = pipe.execute()
        return [_record(index[name].decode(), fields) for name, fields in zip(names, found) if fields]

    def touch(self, digest: str, now: float) -> None:
        """Write "last used" (callers write it at most once a minute; see auth.callers)."""
        with store_errors():
            self._touch(record=self.keys.apikey(digest), field=RecordField.LAST_USED, now=str(int(now)))


def _record(digest: str, raw: Mapping[bytes, bytes]) -> ManagedKey:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    try:
        policy = KeyPolicy(
            permissions=parse_permissions(fields[RecordField.PERMISSIONS]),
            scopes=parse_scopes(fields[RecordField.SCOPES]) if RecordField.SCOPES in fields else None,
            rate=parse_rate(fields[RecordField.RATE]) if RecordField.RATE in fields else None,
        )
    except (KeyError, PolicyError):
        # A record this release cannot read (hand-edited, or written by a newer one) allows nothing.
        policy = KeyPolicy(permissions=frozenset())
    return ManagedKey(
        name=fields.get(RecordField.NAME, "?"),
        policy=policy,
        created=int(fields.get(RecordField.CREATED, 0)),
        expires=int(fields[RecordField.EXPIRES]) if RecordField.EXPIRES in fields else None,
        last_used=int(fields[RecordField.LAST_USED]) if RecordField.LAST_USED in fields else None,
        kid=fields.get(RecordField.KID, ""),
        digest=digest,
    )
