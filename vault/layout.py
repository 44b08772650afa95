"""The Redis layout of one deployment: every key name (built here and parsed here), hash fields and statuses.

Accounts are spread over `GROUPS` slot groups (`group_of`, a CRC-32 of the id). Every key of an
account and every structure its changes touch (the group's index, revoked set, generation
counter and event outbox) carries the group's hash tag `{gNN.k}`, so each script touches one
Redis Cluster slot, and the groups spread over the cluster's masters. Structures that no script
changes together with an account (identity bindings, managed API keys, rate limits) have their
own slots. The Lua scripts get the same field names and statuses from `lua_prelude()`, so no
name is written twice.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# Slot groups. Fixed: changing it moves every account to another group (a new layout, migrated).
GROUPS = 16


def _group_tags() -> tuple[str, ...]:
    """One hash tag per group, `gNN.k` with the first k whose slot falls in the group's 1/GROUPS of the
    16384 slots: a cluster that splits the slots evenly over its masters (as `--cluster create`
    does) then holds an equal share of the groups on each."""
    width = REDIS_CLUSTER_HASH_SLOTS // GROUPS
    tags = []
    for group in range(GROUPS):
        k = 0
        while key_slot(f"g{group:02d}.{k}".encode()) // width != group:
            k += 1
        tags.append(f"g{group:02d}.{k}")
    return tuple(tags)


GROUP_TAGS = _group_tags()


def group_of(account_id: str) -> int:
    """The slot group of an account: stable across processes and releases."""
    return zlib.crc32(account_id.encode()) % GROUPS


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


# Kinds of keys below an account's hash (`{prefix}:{gNN.k}:account:<ID>:<kind>[:<slot>]`).
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
        self.groups = range(GROUPS)
        self._account = re.compile(
            re.escape(f"{prefix}:".encode())
            + rb"\{g(?P<group>[0-9]{2})\.[0-9]+\}:account:(?P<id>[A-Za-z0-9_-]{1,128})"
            + rb"(?::(?P<kind>[a-z]+)(?::(?P<slot>.+))?)?",
            re.DOTALL,
        )

    def tag(self, group: int) -> str:
        """`{prefix}:{gNN.k}`: the start of every key of one slot group (`GROUP_TAGS`)."""
        if not 0 <= group < GROUPS:
            raise ValueError(f"a slot group is 0 to {GROUPS - 1}")
        return f"{self.prefix}:{{{GROUP_TAGS[group]}}}"

    def group_of(self, account_id: str) -> int:
        return group_of(account_id)

    def index(self, group: int) -> str:
        """Sorted set of the group's installed account ids (score 0, ordered by id)."""
        return f"{self.tag(group)}:accounts"

    @property
    def channel(self) -> str:
        """Pub/sub channel on which every account change is announced (the message is the account id).

        A change of the managed API keys is announced there too, as `APIKEYS_CHANGED`.
        """
        return f"{self.prefix}:invalidate"

    def generation(self, group: int) -> str:
        """Counter handing out the group's account generations (never reused, unlike a per-hash counter)."""
        return f"{self.tag(group)}:generation"

    def revoked(self, group: int) -> str:
        """Set of the ids of the group's revoked accounts (so counting them is O(1))."""
        return f"{self.tag(group)}:revoked"

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

    def events(self, group: int) -> str:
        """Stream of the group's account lifecycle events (its outbox), appended by the same script as each change."""
        return f"{self.tag(group)}:events"

    def event_counts(self, group: int) -> str:
        """Hash of event type -> the group's events ever appended (for metrics), counted by the appending script."""
        return f"{self.tag(group)}:events:counts"

    def event_last(self, group: int) -> str:
        """String holding the id of the group's newest event (`<ms>-<seq>`), from which its script makes the next id."""
        return f"{self.tag(group)}:events:last"

    def event_trimmed(self, group: int) -> str:
        """String holding the newest id a trim ever removed from the group's stream (absent: none removed yet)."""
        return f"{self.tag(group)}:events:trimmed"

    def endpoint(self, endpoint_id: str, part: str, group: int | None = None) -> str:
        """A key of one webhook endpoint's delivery state: of one slot group, or (group None) endpoint-wide."""
        if group is None:
            return f"{self.prefix}:events:endpoint:{endpoint_id}:{part}"
        return f"{self.tag(group)}:events:endpoint:{endpoint_id}:{part}"

    def waiting(self, endpoint_id: str, account_id: str) -> str:
        """List of one account's event ids waiting behind its undelivered one, for one endpoint (account's group)."""
        return f"{self.tag(group_of(account_id))}:events:endpoint:{endpoint_id}:waiting:{account_id}"

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
        """`{prefix}:{gNN.k}:account:<id>` (the account's hash) or a key below it (`kind`, then `slot`)."""
        return ":".join((f"{self.tag(group_of(account_id))}:account:{account_id}", *parts))

    def parse(self, key: bytes) -> AccountKey | None:
        """What an account key built by `key_for` names; None for any other key."""
        match = self._account.fullmatch(key)
        if match is None or key != self.key_for(match["id"].decode()).encode() + key[match.end("id") :]:
            return None  # a group or tag that is not the account's own was never written by this service
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
        return re.sub(r"([*?\[\]\\^])", r"\\\1", f"{self.prefix}:") + "{g[0-9][0-9].*}:account:*"

    def pattern(self, account_id: str) -> str:
        """A pattern matching every key of one account (for tests and operators)."""
        return f"{self.key_for(account_id)}*"


def lua_prelude() -> str:
    """Lua locals naming the hash fields, statuses and event types, put before every script."""
    fields = {name.lower(): value for name, value in vars(Field).items() if name.isupper()}
    field_table = ", ".join(f"{name} = '{value}'" for name, value in fields.items())
    status_table = ", ".join(f"{status.name.lower()} = '{status.value}'" for status in Status)
    event_table = ", ".join(f"{kind.name.lower()} = '{kind.value}'" for kind in EventType)
    return f"local FIELD = {{{field_table}}}\nlocal STATUS = {{{status_table}}}\nlocal EVENT = {{{event_table}}}\n"
