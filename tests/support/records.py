"""Read and overwrite the sealed credentials of an account hash, as tests that tamper with them need."""

from __future__ import annotations

import redis

from vault.accounts import join_sealed, sealed_fields
from vault.layout import Field, KeySpace


def read_sealed(r: redis.Redis, key: str) -> bytes | None:
    return join_sealed(r.hgetall(key))


def write_sealed(r: redis.Redis, key: str, sealed: bytes) -> None:
    """Replace the stored pieces with those of `sealed` (whatever their number)."""
    stale = [
        name
        for name in r.hkeys(key)
        if name.startswith(Field.CRED_PIECE.encode()) or name == Field.LEGACY_CRED.encode()
    ]
    pipe = r.pipeline()
    if stale:
        pipe.hdel(key, *stale)
    pipe.hset(key, mapping=sealed_fields(sealed))
    pipe.execute()


def indexed_ids(r: redis.Redis, prefix: str = "test") -> list[bytes]:
    """Every account id in the index of a deployment (all slot groups), in id order."""
    keys = KeySpace(prefix)
    return sorted(member for group in keys.groups for member in r.zrange(keys.index(group), 0, -1))
