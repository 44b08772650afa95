"""Installed accounts: one Redis hash each, sealed credentials, and an index to page through.

The hash holds `app`, `cred.0`, `cred.1`, … (the sealed client id and secret, in
pieces: see `CRED_PIECE`), `status`,
`gen` (a fresh number from one deployment-wide counter at every install and
revocation, never reused even after a delete, so a token fetched with old credentials is
never stored for new ones), `installed`, `updated`, `iat` (the newest `iat` of
the identity tokens whose installs stored credentials, where they carried one) and,
while revoked, `revoked_until`. Each multi-key change is one Lua script, so an
account is never seen half-installed or half-deleted.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import logging
import re
import time
from collections.abc import Callable, Mapping

import redis

from core.errors import InvalidRequest, RecordUnreadable
from vault.seal import SealError, Sealer, associated_data
from vault.store import KeySpace, store_errors

log = logging.getLogger(__name__)

ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # Trackunit ids are UUIDs; this is the outer bound
ACTIVE = "active"
REVOKED = "revoked"

# Redis keeps a hash as a compact listpack only while every value fits in
# `hash-max-listpack-value` (64 bytes by default); otherwise it becomes a hashtable
# of about twice the memory. A sealed credential is about 130 bytes, so it is
# stored in pieces of at most this size, `cred.0`, `cred.1`, … (issue 5: ≤ 512 B per record).
CRED_PIECE = 64
CRED_FIELD = "cred."
# One field, as written before the pieces. Still read, and preferred over pieces: this code
# deletes it on every write, so its presence means a release from before the pieces wrote it
# last (during a rolling deploy), and any pieces beside it are older.
LEGACY_CRED_FIELD = "cred"

# Lua: the sealed value of an account hash: the legacy field if present, else the pieces joined.
SEALED_LUA = """
local function sealed_of(key)
  local legacy = redis.call('HGET', key, 'cred')
  if legacy then return legacy end
  local parts, n = {}, 0
  while true do
    local part = redis.call('HGET', key, 'cred.' .. n)
    if not part then break end
    parts[#parts + 1] = part
    n = n + 1
  end
  if n == 0 then return false end
  return table.concat(parts)
end
"""

# KEYS: account hash, account cache set, index, revoked set, generation counter.
# ARGV: app, now, account id, channel, identity iat ('' if unknown), then field, value pairs of the
# sealed credentials. Returns -1 (stale: an older identity than the stored credentials'; nothing
# written), 0 (new account) or 1 (replaced).
# The hash is written afresh (keeping only `installed` and the newest `iat`), so no piece or mark
# of an earlier install survives.
_INSTALL = """
if #ARGV < 7 or (#ARGV - 5) % 2 ~= 0 then return redis.error_reply('install: expected field, value pairs') end
local stored_iat = redis.call('HGET', KEYS[1], 'iat')
if ARGV[5] ~= '' and stored_iat and tonumber(ARGV[5]) < tonumber(stored_iat) then return -1 end
local iat = stored_iat
if ARGV[5] ~= '' then iat = ARGV[5] end
local existed = redis.call('EXISTS', KEYS[1])
local installed = redis.call('HGET', KEYS[1], 'installed') or ARGV[2]
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('DEL', key) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'app', ARGV[1], 'status', 'active', 'installed', installed, 'updated', ARGV[2],
           'gen', redis.call('INCR', KEYS[5]))
if iat then redis.call('HSET', KEYS[1], 'iat', iat) end
-- One piece per call: unpack() of a long list would overflow Lua's stack.
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[3], 0, ARGV[3])
redis.call('SREM', KEYS[4], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return existed
"""

# KEYS: account hash, account cache set, verification mark. ARGV: account id, channel, mark ttl (s).
# Returns 0 (not installed), 1 (tokens dropped; verify now) or 2 (dropped; verified moments ago).
_DROP_TOKENS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('DEL', key) end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[1])
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then return 1 end
return 2
"""

# KEYS: account hash, account cache set, index, revoked set, verification mark. ARGV: account id, channel.
_DELETE = """
local existed = redis.call('EXISTS', KEYS[1])
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('DEL', key) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return existed
"""

# KEYS: account hash, account cache set, revoked set, generation counter.
# ARGV: generation, revoked until, now, account id, channel.
_REVOKE = """
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('DEL', key) end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'revoked', 'revoked_until', ARGV[2], 'updated', ARGV[3])
-- A new generation: a fetch still in flight with the refused credentials cannot cache its token.
redis.call('HSET', KEYS[1], 'gen', redis.call('INCR', KEYS[4]))
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"""

_SUMMARY_FIELDS = ("app", "status", "installed", "updated", "gen", "revoked_until")


class Installed(enum.Enum):
    """What an install did."""

    NEW = "new"
    REPLACED = "replaced"
    STALE = "stale"  # the identity was issued before the stored credentials' one: nothing written


class Dropped(enum.Enum):
    """What dropping an account's tokens found."""

    NOT_INSTALLED = "not_installed"
    VERIFY = "verify"  # this caller verifies the credentials now
    RECENTLY_VERIFIED = "recently_verified"  # another caller did, moments ago


@dataclasses.dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class AccountRecord:
    """What may be shown about an account: never its credentials."""

    account_id: str
    iris_app_id: str
    status: str
    installed_at: int
    updated_at: int
    generation: str
    revoked_until: int | None = None


def sealed_fields(sealed: bytes) -> dict[str, bytes]:
    """The hash fields that hold one sealed value: `cred.0`, `cred.1`, … of at most CRED_PIECE bytes."""
    return {f"{CRED_FIELD}{n}": sealed[i:i + CRED_PIECE] for n, i in enumerate(range(0, len(sealed), CRED_PIECE))}


def sealed_fields_args(sealed: bytes) -> list[bytes | str]:
    """`sealed_fields` flattened into field, value, … for a script's ARGV."""
    return [item for pair in sealed_fields(sealed).items() for item in pair]


def join_sealed(fields: Mapping[bytes, bytes]) -> bytes | None:
    """The sealed value from an account hash as HGETALL returns it; None if it has none."""
    legacy = fields.get(LEGACY_CRED_FIELD.encode())
    if legacy is not None:
        return legacy  # see LEGACY_CRED_FIELD
    parts = []
    while (part := fields.get(f"{CRED_FIELD}{len(parts)}".encode())) is not None:
        parts.append(part)
    return b"".join(parts) if parts else None


def valid_account_id(account_id: str) -> bool:
    return bool(ACCOUNT_ID.fullmatch(account_id))


def credentials_aad(app_id: str, account_id: str) -> bytes:
    """The associated data that binds sealed credentials to their app and account (also used by rotation)."""
    return associated_data("credentials", app_id, account_id)


class AccountRepository:
    """Install, read, page through and delete accounts (the Redis client is passed in)."""

    def __init__(
        self,
        client: redis.Redis,
        sealer: Sealer,
        keys: KeySpace,
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str], None] = lambda account_id: None,
    ) -> None:
        self.redis = client
        self.on_change = on_change  # this process's own memory hears of a change at once
        self.sealer = sealer
        self.keys = keys
        self.clock = clock
        self._install = client.register_script(_INSTALL)
        self._delete = client.register_script(_DELETE)
        self._revoke = client.register_script(_REVOKE)
        self._drop_tokens = client.register_script(_DROP_TOKENS)

    def _aad(self, app_id: str, account_id: str) -> bytes:
        return credentials_aad(app_id, account_id)

    def install(
        self, account_id: str, app_id: str, creds: Credentials, *, issued_at: int | None = None
    ) -> Installed:
        """Store (or replace) an account's credentials and drop its cached tokens.

        `issued_at` is the `iat` of the identity token that brought them, where it had one:
        credentials brought by a token issued earlier than the stored ones' are not taken
        (an old, captured or delayed callback cannot bring back replaced credentials).
        """
        plain = json.dumps({"id": creds.client_id, "secret": creds.client_secret}).encode()
        sealed = self.sealer.seal(plain, aad=self._aad(app_id, account_id))
        now = int(self.clock())
        with store_errors():
            outcome = self._install(
                keys=[self.keys.key_for(account_id), self.keys.key_for(account_id, "cache"), self.keys.index,
                      self.keys.revoked, self.keys.generation],
                args=[app_id, now, account_id, self.keys.channel, "" if issued_at is None else int(issued_at),
                      *sealed_fields_args(sealed)],
            )
        if outcome == -1:
            return Installed.STALE
        self.on_change(account_id)
        return Installed.REPLACED if outcome else Installed.NEW

    def get(self, account_id: str) -> AccountRecord | None:
        with store_errors():
            values = self.redis.hmget(self.keys.key_for(account_id), _SUMMARY_FIELDS)
        return _record(account_id, values)

    def load(self, account_id: str) -> tuple[AccountRecord, Credentials] | None:
        """The record and its opened credentials, or None if not installed."""
        with store_errors():
            fields = self.redis.hgetall(self.keys.key_for(account_id))
        record = _record(account_id, [fields.get(name.encode()) for name in _SUMMARY_FIELDS])
        if record is None:
            return None
        return record, self.open_credentials(record, join_sealed(fields))

    def sealed_credentials(self, account_id: str) -> bytes | None:
        """The sealed credentials as stored (for key ids and tests; never shown), or None."""
        with store_errors():
            return join_sealed(self.redis.hgetall(self.keys.key_for(account_id)))

    def open_credentials(self, record: AccountRecord, sealed: bytes | None) -> Credentials:
        try:
            if not sealed:
                raise SealError("no sealed credentials")
            data = json.loads(self.sealer.open(sealed, aad=self._aad(record.iris_app_id, record.account_id)))
            return Credentials(client_id=data["id"], client_secret=data["secret"])
        except (SealError, ValueError, KeyError, TypeError) as exc:
            # The sealed bytes are never logged: only which account and why.
            log.error("credentials of account %s do not open: %s", record.account_id, exc)
            raise RecordUnreadable() from None

    def delete(self, account_id: str) -> bool:
        """Remove every trace of the account; True if it was installed."""
        with store_errors():
            existed = self._delete(
                keys=[self.keys.key_for(account_id), self.keys.key_for(account_id, "cache"), self.keys.index,
                      self.keys.revoked, self.keys.key_for(account_id, "verifying")],
                args=[account_id, self.keys.channel],
            )
        self.on_change(account_id)
        return bool(existed)

    def drop_tokens(self, account_id: str, *, verify_interval: int) -> Dropped:
        """Forget every cached token of the account (its credentials stay).

        Also claims the account's verification for `verify_interval` seconds, across all
        processes, so a stream of callbacks makes one verification fetch, not one each.
        """
        with store_errors():
            outcome = self._drop_tokens(
                keys=[self.keys.key_for(account_id), self.keys.key_for(account_id, "cache"),
                      self.keys.key_for(account_id, "verifying")],
                args=[account_id, self.keys.channel, max(1, verify_interval)],
            )
        self.on_change(account_id)
        return {0: Dropped.NOT_INSTALLED, 1: Dropped.VERIFY}.get(int(outcome), Dropped.RECENTLY_VERIFIED)

    def revoke(self, account_id: str, generation: str, until: int) -> bool:
        """Mark revoked and drop cached tokens, unless the account was re-installed meanwhile."""
        with store_errors():
            done = self._revoke(
                keys=[self.keys.key_for(account_id), self.keys.key_for(account_id, "cache"), self.keys.revoked,
                      self.keys.generation],
                args=[generation, until, int(self.clock()), account_id, self.keys.channel],
            )
        self.on_change(account_id)
        return bool(done)

    def page(self, limit: int, cursor: str | None) -> tuple[list[AccountRecord], str | None]:
        """One page of accounts in id order after `cursor`, and the next cursor (None at the end)."""
        start = "-" if cursor is None else "(" + decode_cursor(cursor)
        with store_errors():
            ids = [
                raw.decode() for raw in self.redis.zrangebylex(self.keys.index, start, "+", start=0, num=limit + 1)
            ]
            page_ids = ids[:limit]
            pipe = self.redis.pipeline(transaction=False)
            for account_id in page_ids:
                pipe.hmget(self.keys.key_for(account_id), _SUMMARY_FIELDS)
            rows = pipe.execute()
        records = [r for r in (_record(a, v) for a, v in zip(page_ids, rows)) if r is not None]
        next_cursor = encode_cursor(page_ids[-1]) if len(ids) > limit else None
        return records, next_cursor

    def counts(self) -> tuple[int, int]:
        """(installed accounts, revoked accounts), each one O(1) Redis call."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(self.keys.index)
            pipe.scard(self.keys.revoked)
            total, revoked = pipe.execute()
        return int(total), int(revoked)

    def eviction_policy(self) -> str | None:
        """Redis's maxmemory-policy (from INFO, which managed Redis allows where CONFIG is not).

        None when the server does not say (a Redis-compatible store without INFO): unknown, not down.
        """
        with store_errors():
            try:
                return self.redis.info("memory").get("maxmemory_policy")
            except redis.exceptions.ResponseError:
                return None

    def ping(self) -> bool:
        with store_errors():
            return bool(self.redis.ping())


def encode_cursor(account_id: str) -> str:
    return base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        account_id = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        if valid_account_id(account_id):
            return account_id
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    raise InvalidRequest("cursor is not a cursor this service returned")


def _record(account_id: str, values: list) -> AccountRecord | None:
    app, status, installed, updated, generation, revoked_until = values
    if app is None:
        return None
    return AccountRecord(
        account_id=account_id,
        iris_app_id=app.decode(),
        status=(status or b"active").decode(),
        installed_at=int(installed or 0),
        updated_at=int(updated or 0),
        generation=(generation or b"0").decode(),
        revoked_until=int(revoked_until) if revoked_until else None,
    )
