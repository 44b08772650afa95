"""Building records as the service would, for the tests of re-sealing (rotation, the CLI, the record layout).

Accounts are `acc-00000`, `acc-00001`, ...; account `i` has the credentials `creds(i)`; records
are written under the test key prefix with `AccountRepository` and `TokenCache` themselves.
"""

from __future__ import annotations

import base64
import time

from auth.scopes import scope_id
from tests.support.constants import APP_ID, OLD_KEY, VAULT_KEY
from vault.accounts import AccountRepository, Credentials
from vault.keys import KeyRing, key_id, parse_key
from vault.layout import KeySpace
from vault.rotation import Rotation
from vault.seal import Sealer
from vault.tokencache import CachedToken, TokenCache

KEYS = KeySpace("test")
THIRD_KEY = base64.b64encode(bytes(range(200, 232))).decode()  # in no key ring below
NEW_ID = key_id(parse_key(VAULT_KEY, "new")).hex()
OLD_ID = key_id(parse_key(OLD_KEY, "old")).hex()
SLOT = scope_id(("account.view", "asset.view"))


def keyring(current: str, *previous: str) -> KeyRing:
    return KeyRing(parse_key(current, "current"), [parse_key(p, "previous") for p in previous])


def repository(r, current: str, *previous: str, prefix: str = "test") -> AccountRepository:
    return AccountRepository(r, Sealer(keyring(current, *previous)), KeySpace(prefix))


def token_cache(r, current: str, *previous: str) -> TokenCache:
    return TokenCache(r, Sealer(keyring(current, *previous)), KEYS, APP_ID)


def rotation(r, current: str, *previous: str, prefix: str = "test") -> Rotation:
    return Rotation(r, keyring(current, *previous), KeySpace(prefix), APP_ID)


def creds(i: int, version: int = 0) -> Credentials:
    return Credentials(f"client-{i}-v{version}", f"secret-{i}-v{version}")


def account(i: int) -> str:
    return f"acc-{i:05d}"


def cached(value: str, ttl: float) -> CachedToken:
    now = time.time()
    return CachedToken(
        access_token=value,
        token_type="Bearer",
        scope="account.view asset.view",
        cached_until=now + ttl,
        refresh_from=now + ttl - 30,
    )


def install_many(r, n: int, key: str = OLD_KEY, *, tokens_every: int = 0) -> None:
    repo, cache = repository(r, key), token_cache(r, key)
    for i in range(n):
        repo.install(account(i), APP_ID, creds(i))
        if tokens_every and i % tokens_every == 0:
            assert cache.put(account(i), generation(r, i), SLOT, cached(f"token-{i}-v0", 10_000 + i))


def generation(r, i: int) -> str:
    """The account's current generation (what a fetch read before caching its token)."""
    return r.hget(KEYS.key_for(account(i)), "gen").decode()


def token_key(i: int) -> str:
    return KEYS.key_for(account(i), "token", SLOT)
