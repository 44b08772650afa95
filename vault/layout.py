"""The Redis layout of one deployment: every key name (built here and parsed here), hash fields and statuses.

Every key that belongs to an account contains `{account_id}` (a Redis Cluster
hash tag), so an operator finds them with one pattern and a cluster keeps them
on one slot. The Lua scripts get the same field names and statuses from
`lua_prelude()`, so no name is written twice.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re


class Status(enum.StrEnum):
    """An account's status (the hash's `status` field)."""

    ACTIVE = "active"
    REVOKED = "revoked"


class Field:
    """The fields of an account hash."""

    APP = "app"
    STATUS = "status"
    INSTALLED = "installed"
    UPDATED = "updated"
    GENERATION = "gen"  # a fresh number from one counter at every install and revocation, never reused
    IAT = "iat"  # the newest `iat` of the identity tokens whose installs stored credentials
    REVOKED_UNTIL = "revoked_until"
    # Set by install, removed (atomically with `account.verified`) by the first token cached with these
    # credentials; an account installed before events existed has none, so it announces nothing.
    UNVERIFIED = "unverified"
    CRED_PIECE = "cred."  # the sealed credentials in pieces: `cred.0`, `cred.1`, …
    LEGACY_CRED = "cred"  # the sealed credentials in one field, as releases before the pieces wrote them


# The message announcing a change of the managed API keys on the invalidation channel: it holds a
# colon, so it is never an account id (A-Z a-z 0-9 _ -).
APIKEYS_CHANGED = "apikeys:changed"


class EventType(enum.StrEnum):
    """The account lifecycle events the scripts append to the outbox stream (`KeySpace.events`)."""

    INSTALLED = "account.installed"
    REINSTALLED = "account.reinstalled"
    VERIFIED = "account.verified"
    REVOKED = "account.revoked"
    REACTIVATED = "account.reactivated"
    DELETED = "account.deleted"


# Kinds of keys below an account's hash (`{prefix}:account:{ID}:<kind>[:<slot>]`).
TOKEN = "token"  # a sealed token of one scope set (slot)
FAILURE = "failure"  # a recent failure of one slot, shared with its waiters
LOCK = "lock"  # the single-flight lock of one slot
CACHE = "cache"  # the set of the account's token and failure keys
VERIFYING = "verifying"  # a verification fetch was claimed moments ago


@dataclasses.dataclass(frozen=True)
class AccountKey:
    """What an account key names: the account, and below its hash a kind and (for slots) a slot."""

    account_id: str
    kind: str | None = None  # None: the account hash itself
    slot: str | None = None


class KeySpace:
    """Builds and parses every Redis key name of one deployment (`KEY_PREFIX`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._account = re.compile(
            re.escape(f"{prefix}:account:".encode())
            + rb"\{(?P<id>[A-Za-z0-9_-]{1,128})\}(?::(?P<kind>[a-z]+)(?::(?P<slot>.+))?)?",
            re.DOTALL,
        )

    @property
    def index(self) -> str:
        """Sorted set of every installed account id (score 0, ordered by id)."""
        return f"{self.prefix}:accounts"

    @property
    def channel(self) -> str:
        """Pub/sub channel on which every account change is announced (the message is the account id).

        A change of the managed API keys is announced there too, as `APIKEYS_CHANGED`.
        """
        return f"{self.prefix}:invalidate"

    @property
    def generation(self) -> str:
        """Counter handing out account generations (never reused, unlike a per-hash counter)."""
        return f"{self.prefix}:generation"

    @property
    def revoked(self) -> str:
        """Set of the ids of revoked accounts (so counting them is O(1))."""
        return f"{self.prefix}:revoked"

    # Managed API keys (vault.apikeys): every key of theirs carries the hash tag `{apikeys}`, so the
    # scripts that change a key and its index stay on one Cluster slot.

    @property
    def apikey_index(self) -> str:
        """Hash of every managed API key: name -> the hex digest that names its record."""
        return f"{self.prefix}:{{apikeys}}:index"

    def apikey(self, digest_hex: str) -> str:
        """Hash of one managed API key, named by the keyed digest of the key (never the key)."""
        return f"{self.prefix}:{{apikeys}}:key:{digest_hex}"

    @property
    def rate_limits(self) -> str:
        """The prefix under which the `limits` library keeps each rate-limited key's moving window.

        The library appends its own `:LIMITER/<key name>/<amount>/<multiples>/<period>`.
        """
        return f"{self.prefix}:ratelimit"

    @property
    def events(self) -> str:
        """Stream of account lifecycle events (the outbox), appended by the same script as each change."""
        return f"{self.prefix}:events"

    @property
    def event_counts(self) -> str:
        """Hash of event type -> events ever appended (for metrics), counted by the appending script."""
        return f"{self.prefix}:events:counts"

    def endpoint(self, endpoint_id: str, part: str) -> str:
        """A key of one webhook endpoint's delivery state (`lease`, `retry`, `attempts`, `held`, `failed`)."""
        return f"{self.prefix}:events:endpoint:{endpoint_id}:{part}"

    def waiting(self, endpoint_id: str, account_id: str) -> str:
        """List of one account's event ids waiting behind its undelivered one, for one endpoint."""
        return f"{self.prefix}:events:endpoint:{endpoint_id}:waiting:{{{account_id}}}"

    def identity(self, issuer: str, app_id: str, jti: str) -> str:
        """String tying one identity token id (`jti`) to the one message it signed.

        Named by a digest of issuer, app and jti, each length-prefixed, so a jti of one
        issuer or app never collides with another's and any jti makes a short key.
        """
        digest = hashlib.sha256()
        for part in (issuer, app_id, jti):
            raw = part.encode()
            digest.update(len(raw).to_bytes(4, "big") + raw)
        return f"{self.prefix}:identity:{digest.hexdigest()}"

    def key_for(self, account_id: str, *parts: str) -> str:
        """`{prefix}:account:{<id>}` (the account's hash) or a key below it (`kind`, then `slot`)."""
        return ":".join((f"{self.prefix}:account:{{{account_id}}}", *parts))

    def parse(self, key: bytes) -> AccountKey | None:
        """What an account key built by `key_for` names; None for any other key."""
        match = self._account.fullmatch(key)
        if match is None:
            return None
        kind, slot = match["kind"], match["slot"]
        # A slot that is not UTF-8 was never written by this service: named as best it can be, it does not open.
        return AccountKey(
            match["id"].decode(),
            kind.decode() if kind else None,
            slot.decode("utf-8", "replace") if slot is not None else None,
        )

    @property
    def account_scan_pattern(self) -> str:
        """A SCAN pattern matching every account key (the prefix's glob characters escaped)."""
        return re.sub(r"([*?\[\]\\^])", r"\\\1", f"{self.prefix}:account:") + "*"

    def pattern(self, account_id: str) -> str:
        """A pattern matching every key of one account (for tests and operators)."""
        return f"{self.prefix}:account:{{{account_id}}}*"


def lua_prelude() -> str:
    """Lua locals naming the hash fields, statuses and event types, put before every script."""
    fields = {name.lower(): value for name, value in vars(Field).items() if name.isupper()}
    field_table = ", ".join(f"{name} = '{value}'" for name, value in fields.items())
    status_table = ", ".join(f"{status.name.lower()} = '{status.value}'" for status in Status)
    event_table = ", ".join(f"{kind.name.lower()} = '{kind.value}'" for kind in EventType)
    return f"local FIELD = {{{field_table}}}\nlocal STATUS = {{{status_table}}}\nlocal EVENT = {{{event_table}}}\n"
