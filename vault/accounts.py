"""Installed accounts: one Redis hash each (fields in `vault.layout.Field`), sealed credentials, an index to page.

The sealed credentials are stored in pieces (`CRED_PIECE`); every install and
revocation takes a fresh generation from its slot group's counter, never reused
even after a delete, so a token fetched with old credentials is never stored for
new ones. Each change is one Lua script (vault/lua/) on one Cluster slot (the
account's group), so an account is never seen half-installed or half-deleted.
Paging merges the groups' indexes in id order.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis

from core.errors import RecordUnreadable
from vault.layout import CACHE, VERIFYING, Field, KeySpace, Status
from vault.migration import Migrator
from vault.outbox import Outbox
from vault.replicas import Replicas
from vault.scripts import Script
from vault.seal import Sealer, SealError, associated_data
from vault.store import store_errors

log = logging.getLogger(__name__)

ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # Trackunit ids are UUIDs; this is the outer bound

# Redis keeps a hash as a compact listpack only while every value fits in
# `hash-max-listpack-value` (64 bytes by default); otherwise it becomes a hashtable
# of about twice the memory. A sealed credential is about 130 bytes, so it is
# stored in pieces of at most this size (Field.CRED_PIECE + 0, 1, …).
CRED_PIECE = 64
# Records written before the pieces hold one field (Field.LEGACY_CRED). It is still read, and
# preferred over pieces: this code deletes it on every write, so its presence means a release
# from before the pieces wrote it last (during a rolling deploy), and any pieces beside it are older.

_SUMMARY_FIELDS = (Field.APP, Field.STATUS, Field.INSTALLED, Field.UPDATED, Field.GENERATION, Field.REVOKED_UNTIL)


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
    status: Status
    installed_at: int
    updated_at: int
    generation: str
    revoked_until: int | None = None


def sealed_fields(sealed: bytes) -> dict[str, bytes]:
    """The hash fields that hold one sealed value: `cred.0`, `cred.1`, … of at most CRED_PIECE bytes."""
    return {
        f"{Field.CRED_PIECE}{n}": sealed[i : i + CRED_PIECE] for n, i in enumerate(range(0, len(sealed), CRED_PIECE))
    }


def sealed_fields_args(sealed: bytes) -> list[bytes | str]:
    """`sealed_fields` flattened into field, value, … for a script's ARGV."""
    return [item for pair in sealed_fields(sealed).items() for item in pair]


def join_sealed(fields: Mapping[bytes, bytes]) -> bytes | None:
    """The sealed value from an account hash as HGETALL returns it; None if it has none."""
    legacy = fields.get(Field.LEGACY_CRED.encode())
    if legacy is not None:
        return legacy  # a release before the pieces wrote it last (see CRED_PIECE)
    parts: list[bytes] = []
    while (part := fields.get(f"{Field.CRED_PIECE}{len(parts)}".encode())) is not None:
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
        outbox: Outbox | None = None,
        replicas: Replicas | None = None,
        migrator: Migrator | None = None,
    ) -> None:
        self.redis = client
        # While records of the single-Redis layout remain, each account is moved on its first use.
        self.migrator = migrator
        # Installs and deletes are answered only once a replica holds them (None: no replicas to wait for).
        self.replicas = replicas
        # Where the scripts append the lifecycle events of every change (with its retention).
        self.outbox = outbox if outbox is not None else Outbox(client, keys, clock=clock)
        self.on_change = on_change  # this process's own memory hears of a change at once
        self.sealer = sealer
        self.keys = keys
        self.clock = clock
        self._install = Script(client, "install")
        self._delete = Script(client, "delete")
        self._revoke = Script(client, "revoke")
        self._drop_tokens = Script(client, "drop_tokens")

    def _aad(self, app_id: str, account_id: str) -> bytes:
        return credentials_aad(app_id, account_id)

    def _current(self, account_id: str) -> None:
        if self.migrator is not None:
            self.migrator.ensure_current(account_id)

    def _acknowledged(self, script: Script, **named: Any) -> Any:
        """Run a script that writes credentials (or removes them); with replicas, return once one holds it."""
        if self.replicas is None:
            return script(**named)
        return self.replicas.run(script, named["account"], **named)

    def install(self, account_id: str, app_id: str, creds: Credentials, *, issued_at: int | None = None) -> Installed:
        """Store (or replace) an account's credentials and drop its cached tokens.

        `issued_at` is the `iat` of the identity token that brought them, where it had one:
        credentials brought by a token issued earlier than the stored ones' are not taken
        (an old, captured or delayed callback cannot bring back replaced credentials).
        """
        plain = json.dumps({"id": creds.client_id, "secret": creds.client_secret}).encode()
        sealed = self.sealer.seal(plain, aad=self._aad(app_id, account_id))
        now = int(self.clock())
        group = self.keys.group_of(account_id)
        self._current(account_id)
        with store_errors():
            outcome = self._acknowledged(
                self._install,
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                index=self.keys.index(group),
                revoked=self.keys.revoked(group),
                generation=self.keys.generation(group),
                app=app_id,
                now=now,
                account_id=account_id,
                channel=self.keys.channel,
                iat="" if issued_at is None else int(issued_at),
                pieces=sealed_fields_args(sealed),
                **self.outbox.script_args(account_id),
            )
        if outcome == -1:
            return Installed.STALE
        self.on_change(account_id)
        return Installed.REPLACED if outcome else Installed.NEW

    def get(self, account_id: str) -> AccountRecord | None:
        with store_errors():
            reply = self.queue_get(self.redis, account_id)
        return _record(account_id, reply)

    def queue_get(self, pipe: Any, account_id: str) -> Any:
        """`get`'s command on `pipe` (a pipeline, to share a round trip; or the client); its reply goes to `got`."""
        self._current(account_id)
        return pipe.hmget(self.keys.key_for(account_id), _SUMMARY_FIELDS)

    def got(self, account_id: str, reply: Any) -> AccountRecord | None:
        return _record(account_id, reply)

    def load(self, account_id: str) -> tuple[AccountRecord, Credentials] | None:
        """The record and its opened credentials, or None if not installed."""
        with store_errors():
            reply = self.queue_load(self.redis, account_id)
        return self.loaded(account_id, reply)

    def queue_load(self, pipe: Any, account_id: str) -> Any:
        """`load`'s command on `pipe` (a pipeline, or the client); its reply goes to `loaded`."""
        self._current(account_id)
        return pipe.hgetall(self.keys.key_for(account_id))

    def loaded(self, account_id: str, reply: Any) -> tuple[AccountRecord, Credentials] | None:
        fields = cast(dict[bytes, bytes], reply)
        record = _record(account_id, [fields.get(name.encode()) for name in _SUMMARY_FIELDS])
        if record is None:
            return None
        return record, self.open_credentials(record, join_sealed(fields))

    def sealed_credentials(self, account_id: str) -> bytes | None:
        """The sealed credentials as stored (for key ids and tests; never shown), or None."""
        self._current(account_id)
        with store_errors():
            return join_sealed(cast(dict[bytes, bytes], self.redis.hgetall(self.keys.key_for(account_id))))

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

    def delete(self, account_id: str, *, via: str = "api") -> bool:
        """Remove every trace of the account; True if it was installed (`via`: who asked, for its event)."""
        group = self.keys.group_of(account_id)
        self._current(account_id)
        with store_errors():
            existed = self._acknowledged(
                self._delete,
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                index=self.keys.index(group),
                revoked=self.keys.revoked(group),
                verifying=self.keys.key_for(account_id, VERIFYING),
                account_id=account_id,
                channel=self.keys.channel,
                via=via,
                **self.outbox.script_args(account_id),
            )
        self.on_change(account_id)
        return bool(existed)

    def drop_tokens(self, account_id: str, *, verify_interval: int) -> Dropped:
        """Forget every cached token of the account (its credentials stay).

        Also claims the account's verification for `verify_interval` seconds, across all
        processes, so a stream of callbacks makes one verification fetch, not one each.
        """
        self._current(account_id)
        with store_errors():
            outcome = self._drop_tokens(
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                verifying=self.keys.key_for(account_id, VERIFYING),
                account_id=account_id,
                channel=self.keys.channel,
                verify_interval=max(1, verify_interval),
            )
        self.on_change(account_id)
        return {0: Dropped.NOT_INSTALLED, 1: Dropped.VERIFY}.get(int(outcome), Dropped.RECENTLY_VERIFIED)

    def revoke(self, account_id: str, generation: str, until: int) -> bool:
        """Mark revoked and drop cached tokens, unless the account was re-installed meanwhile."""
        group = self.keys.group_of(account_id)
        self._current(account_id)
        with store_errors():
            done = self._revoke(
                account=self.keys.key_for(account_id),
                cache=self.keys.key_for(account_id, CACHE),
                revoked=self.keys.revoked(group),
                generation_counter=self.keys.generation(group),
                generation=generation,
                until=until,
                now=int(self.clock()),
                account_id=account_id,
                channel=self.keys.channel,
                **self.outbox.script_args(account_id),
            )
        self.on_change(account_id)
        return bool(done)

    def page(self, limit: int, after: str | None) -> tuple[list[AccountRecord], str | None]:
        """One page of accounts in id order after the id `after`, and the id to go on after (None at the end).

        Each group's index gives its first `limit + 1` ids after `after` (one pipelined read per
        group, so a page costs the same at any N); merged, their first `limit + 1` are the page
        and tell whether more follow. Redis orders members bytewise, as Python orders bytes.
        """
        start = "-" if after is None else "(" + after
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for group in self.keys.groups:
                pipe.zrangebylex(self.keys.index(group), start, "+", start=0, num=limit + 1)
            per_group = cast(list[list[bytes]], pipe.execute())
            ids = [raw.decode() for raw in heapq.merge(*per_group)][: limit + 1]
            page_ids = ids[:limit]
            pipe = self.redis.pipeline(transaction=False)
            for account_id in page_ids:
                pipe.hmget(self.keys.key_for(account_id), _SUMMARY_FIELDS)
            rows = pipe.execute()
        records = [r for r in (_record(a, v) for a, v in zip(page_ids, rows)) if r is not None]
        return records, page_ids[-1] if len(ids) > limit else None

    def counts(self) -> tuple[int, int]:
        """(installed accounts, revoked accounts): two O(1) counts per group, in one pipeline."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for group in self.keys.groups:
                pipe.zcard(self.keys.index(group))
                pipe.scard(self.keys.revoked(group))
            found = [int(n) for n in pipe.execute()]
        return sum(found[0::2]), sum(found[1::2])


def _record(account_id: str, values: Sequence[Any]) -> AccountRecord | None:
    app, status, installed, updated, generation, revoked_until = values
    if app is None:
        return None
    return AccountRecord(
        account_id=account_id,
        iris_app_id=app.decode(),
        status=Status((status or Status.ACTIVE.value.encode()).decode()),
        installed_at=int(installed or 0),
        updated_at=int(updated or 0),
        generation=(generation or b"0").decode(),
        revoked_until=int(revoked_until) if revoked_until else None,
    )
