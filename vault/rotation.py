"""Key rotation and checking: walk every sealed record of one deployment, re-seal it or open it.

Two kinds of sealed records live under `KEY_PREFIX`:
- credentials: the `cred.N` pieces of each account hash `{prefix}:account:{ID}`;
- cached tokens: the strings `{prefix}:account:{ID}:token:<slot>`.

Records are found with SCAN (never KEYS), in batches: one pipeline reads a
batch, the values are opened and re-sealed here, and one pipeline writes them
back, each with a Lua compare-and-set on the value that was read. A record
that the web process changed in between (re-install, delete, token refresh
or expiry) is therefore never overwritten or brought back: it is read again
and, if it is still under an old key, re-sealed again (a few attempts), else
counted as "changed concurrently". A token keeps its remaining TTL. Every
write is one record, so an interrupted run leaves nothing half done; a
record already under the current key is not written, so a second run
re-seals nothing (except an account hash still in the one-field layout of
releases before the pieces, `Field.LEGACY_CRED`: it is rewritten as pieces).

Nothing here prints, logs or returns a secret or sealed bytes: a problem is
named by account id, record (credentials / token slot) and reason.
No Flask and no click: the CLI (`cli/`) wraps this and formats the report.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
from collections.abc import Callable, Iterator
from typing import Any

import redis

from vault.accounts import credentials_aad, join_sealed, sealed_fields_args
from vault.keys import KeyRing
from vault.layout import TOKEN as TOKEN_KEY
from vault.layout import Field, KeySpace
from vault.replicas import Replicas
from vault.scripts import Script
from vault.seal import HEADER_SIZE, VERSION, Sealer, SealError
from vault.store import store_errors
from vault.tokencache import token_aad

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    """The two kinds of sealed records."""

    CREDENTIALS = "credentials"  # the `cred.N` pieces of an account hash
    TOKEN = "token"  # a cached token's string


CREDENTIALS, TOKEN = Kind.CREDENTIALS, Kind.TOKEN
KINDS = tuple(Kind)

# Outcomes of `rotate`.
RESEALED = "re-sealed"
CURRENT = "already current"
CHANGED = "changed concurrently"
SKIPPED = "skipped"  # still under an old key after MAX_ATTEMPTS concurrent changes: run again
FAILED = "failed to open"
ROTATE_OUTCOMES = (RESEALED, CURRENT, CHANGED, SKIPPED, FAILED)
# Outcomes of `check`.
OPENS = "opens"
CHECK_OUTCOMES = (OPENS, FAILED)

UNKNOWN_KEY_ID = "unknown"  # not a sealed value of a known version: no key id to name
DEFAULT_BATCH = 500
MAX_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True)
class Record:
    """Where one sealed value lives (never the value itself)."""

    kind: Kind
    account_id: str
    key: bytes  # the Redis key, exactly as SCAN returned it
    slot: str | None = None  # tokens only

    @property
    def name(self) -> str:
        return CREDENTIALS if self.kind == CREDENTIALS else f"token {self.slot}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A record that does not open: which one and why, never its bytes."""

    account_id: str
    record: str  # "credentials" or "token <slot>"
    key_id: str
    reason: str

    def __str__(self) -> str:
        return f"account {self.account_id}: {self.record}: {self.reason}"


@dataclasses.dataclass
class Report:
    """Counts per (key id, kind, outcome) and the records that did not open."""

    current_key_id: str
    outcomes: tuple[str, ...]
    counts: dict[tuple[str, str], collections.Counter[str]] = dataclasses.field(default_factory=dict)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    complete: bool = True  # False when `limit` stopped a rotation early

    def add(self, key_id: str, kind: str, outcome: str) -> None:
        self.counts.setdefault((key_id, kind), collections.Counter())[outcome] += 1

    def total(self, outcome: str, *, kind: str | None = None, key_id: str | None = None) -> int:
        return sum(
            counter[outcome]
            for (kid, knd), counter in self.counts.items()
            if (kind is None or knd == kind) and (key_id is None or kid == key_id)
        )

    @property
    def records(self) -> int:
        return sum(sum(counter.values()) for counter in self.counts.values())

    @property
    def key_ids(self) -> list[str]:
        """Key ids seen, the current one first."""
        seen = sorted({kid for kid, _ in self.counts})
        return sorted(seen, key=lambda kid: kid != self.current_key_id)

    def rows(self) -> list[tuple[str, str, dict[str, int]]]:
        """(key id, kind, {outcome: count}) for every key id and kind seen."""
        return [
            (kid, kind, {o: self.counts[(kid, kind)][o] for o in self.outcomes})
            for kid in self.key_ids
            for kind in KINDS
            if (kid, kind) in self.counts
        ]


@dataclasses.dataclass(frozen=True)
class Pending:
    """A record read, re-sealed in memory, and waiting to be written back if unchanged."""

    record: Record
    key_id: str  # of the value as read
    app: bytes | None
    old: bytes
    new: bytes


class Rotation:
    """Re-seal (`rotate`) or open (`check`) every sealed record of one deployment."""

    def __init__(
        self, client: redis.Redis, keyring: KeyRing, keys: KeySpace, app_id: str, *, replicas: Replicas | None = None
    ) -> None:
        self.redis = client
        # Writes go through Replicas: a batch of scripts per master (a cluster pipeline refuses scripts),
        # answered once the replicas hold them when it is asked to wait for them.
        self.replicas = replicas if replicas is not None else Replicas(client, wanted=0, timeout_ms=1)
        self.sealer = Sealer(keyring)
        self.current_key_id = keyring.current.id.hex()
        self.keys = keys
        self.app_id = app_id  # tokens are bound to the deployment's app (credentials to their hash's `app`)
        self._swap_credentials = Script(client, "swap_credentials")
        self._swap_token = Script(client, "swap_token")

    # Finding records -----------------------------------------------------------------------------

    def scan(self, *, batch: int = DEFAULT_BATCH) -> Iterator[list[Record]]:
        """Every record of the deployment, in batches, each exactly once.

        SCAN may return a key twice (when Redis resizes its table meanwhile), so the
        names seen are remembered: about 100 bytes per record, for the counts to be exact.
        """
        seen: set[bytes] = set()
        pattern = self.keys.account_scan_pattern
        names = iter(self.redis.scan_iter(match=pattern, count=batch))  # every master's keys on a cluster
        while True:
            with store_errors():
                chunk = [name for _, name in zip(range(batch), names)]
            records = []
            for name in chunk:
                if name in seen:
                    continue
                seen.add(name)
                record = self._record(name)
                if record is not None:
                    records.append(record)
            if records:
                yield records
            if len(chunk) < batch:
                return

    def count_accounts(self) -> int:
        """The number of installed accounts (the index), for a progress bar."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for group in self.keys.groups:
                pipe.zcard(self.keys.index(group))
            return sum(int(n) for n in pipe.execute())

    def _record(self, name: bytes) -> Record | None:
        parsed = self.keys.parse(name)
        if parsed is None:
            return None
        if parsed.kind is None:
            return Record(CREDENTIALS, parsed.account_id, name)
        if parsed.kind == TOKEN_KEY and parsed.slot is not None:
            return Record(TOKEN, parsed.account_id, name, parsed.slot)
        return None  # the account's cache set, failure markers, locks: nothing sealed

    # Reading and opening -------------------------------------------------------------------------

    def _read(self, records: list[Record]) -> list[tuple[bytes | None, bytes | None, bool] | Exception]:
        """(app, sealed, one-field layout) per record; (None, None, False) when it is gone; an exception
        for a wrong type."""
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for record in records:
                if record.kind == CREDENTIALS:
                    pipe.hgetall(record.key)
                else:
                    pipe.get(record.key)
            raw = pipe.execute(raise_on_error=False)
        values: list[tuple[bytes | None, bytes | None, bool] | Exception] = []
        for record, value in zip(records, raw):
            if isinstance(value, Exception):
                values.append(value)
            elif record.kind == CREDENTIALS:
                values.append(
                    (value.get(Field.APP.encode()), join_sealed(value), Field.LEGACY_CRED.encode() in value)
                    if value
                    else (None, None, False)
                )
            else:
                values.append((None, value, False))
        return values

    def _aad(self, record: Record, app: bytes | None) -> bytes:
        if record.kind == CREDENTIALS:
            if app is None:
                raise SealError("the account hash has no app id")
            return credentials_aad(app.decode("utf-8", "replace"), record.account_id)
        return token_aad(self.app_id, record.account_id, record.slot or "")

    def _open(self, record: Record, app: bytes | None, sealed: bytes | None) -> bytes:
        if not sealed:
            raise SealError("no sealed value")
        return self.sealer.open(sealed, aad=self._aad(record, app))

    def _reseal(self, record: Record, app: bytes | None, sealed: bytes) -> bytes:
        aad = self._aad(record, app)
        return self.sealer.seal(self.sealer.open(sealed, aad=aad), aad=aad)

    def _problem(self, report: Report, record: Record, key_id: str, reason: object) -> None:
        report.problems.append(Problem(record.account_id, record.name, key_id, str(reason)))
        report.add(key_id, record.kind, FAILED)
        log.warning("%s of account %s does not open: %s", record.name, record.account_id, reason)

    # check ---------------------------------------------------------------------------------------

    def check(self, *, batch: int = DEFAULT_BATCH, on_progress: Callable[[list[Record]], None] | None = None) -> Report:
        """Open every record; count per key id; list the ones that do not open."""
        report = Report(self.current_key_id, CHECK_OUTCOMES)
        for records in self.scan(batch=batch):
            for record, value in zip(records, self._read(records)):
                if isinstance(value, Exception):
                    self._problem(report, record, UNKNOWN_KEY_ID, "not a record of the expected type")
                    continue
                app, sealed, _ = value
                if app is None and sealed is None:
                    continue  # deleted or expired since SCAN saw it: not a record any more
                kid = key_id_of(sealed)
                try:
                    self._open(record, app, sealed)
                except SealError as exc:
                    self._problem(report, record, kid, exc)
                else:
                    report.add(kid, record.kind, OPENS)
            if on_progress is not None:
                on_progress(records)
        return report

    # rotate --------------------------------------------------------------------------------------

    def rotate(
        self,
        *,
        batch: int = DEFAULT_BATCH,
        limit: int | None = None,
        on_progress: Callable[[list[Record]], None] | None = None,
        before_write: Callable[[list[Record]], None] | None = None,
    ) -> Report:
        """Re-seal every record not under the current key; see the module docstring.

        `limit` stops after that many re-sealed records (a partial, resumable run).
        `before_write` is called with the records about to be written back, after
        they were read (again) and re-sealed in memory: the window in which the web
        process may change them (tests use it to do exactly that).
        """
        report = Report(self.current_key_id, ROTATE_OUTCOMES)
        for records in self.scan(batch=batch):
            remaining = None if limit is None else limit - report.total(RESEALED)
            pending: list[Pending] = []
            handled: list[Record] = []
            for record, value in zip(records, self._read(records)):
                if remaining is not None and len(pending) >= remaining:
                    report.complete = False
                    break
                handled.append(record)
                if isinstance(value, Exception):
                    self._problem(report, record, UNKNOWN_KEY_ID, "not a record of the expected type")
                    continue
                app, sealed, one_field = value
                if app is None and sealed is None:
                    continue  # deleted or expired since SCAN saw it
                kid = key_id_of(sealed)
                try:
                    if kid == self.current_key_id and not one_field:
                        self._open(record, app, sealed)
                        report.add(kid, record.kind, CURRENT)
                        continue
                    if not sealed:
                        raise SealError("no sealed value")
                    pending.append(Pending(record, kid, app, sealed, self._reseal(record, app, sealed)))
                except SealError as exc:
                    self._problem(report, record, kid, exc)
            self._write(report, pending, before_write)
            if on_progress is not None:
                on_progress(handled)
            if limit is not None and report.total(RESEALED) >= limit:
                report.complete = False
            if not report.complete:
                break
        return report

    def _write(
        self,
        report: Report,
        pending: list[Pending],
        before_write: Callable[[list[Record]], None] | None,
    ) -> None:
        """Compare-and-set each record; re-read the ones that changed and try again."""
        for _ in range(MAX_ATTEMPTS):
            if not pending:
                return
            if before_write is not None:
                before_write([item.record for item in pending])
            calls: list[tuple[Script, bytes, dict[str, Any]]] = []
            for item in pending:
                key = item.record.key  # bytes as SCAN gave them: a slot need not be UTF-8
                if item.record.kind == CREDENTIALS:
                    named = {
                        "account": key,
                        "app": item.app,
                        "sealed": item.old,
                        "pieces": sealed_fields_args(item.new),
                    }
                    calls.append((self._swap_credentials, key, named))
                else:
                    calls.append((self._swap_token, key, {"token": key, "sealed": item.old, "new_sealed": item.new}))
            results = self.replicas.run_many(calls)
            changed = []
            for item, done in zip(pending, results):
                if done:
                    report.add(item.key_id, item.record.kind, RESEALED)
                else:
                    changed.append(item)
            pending = []
            if not changed:
                return
            for item, value in zip(changed, self._read([c.record for c in changed])):
                record, kid = item.record, item.key_id
                if isinstance(value, Exception):
                    self._problem(report, record, UNKNOWN_KEY_ID, "not a record of the expected type")
                    continue
                app, sealed, one_field = value
                if not sealed or (key_id_of(sealed) == self.current_key_id and not one_field):
                    # Deleted, re-installed or refreshed by the web process (under the current key): its value wins.
                    report.add(kid, record.kind, CHANGED)
                    continue
                try:
                    pending.append(Pending(record, kid, app, sealed, self._reseal(record, app, sealed)))
                except SealError as exc:
                    self._problem(report, record, key_id_of(sealed), exc)
        for item in pending:
            # Changed again on every attempt and still under an old key: left for the next run.
            report.add(item.key_id, item.record.kind, SKIPPED)


def key_id_of(sealed: bytes | None) -> str:
    """The id of the key that sealed a value, or "unknown" if it is not a sealed value of a known version."""
    if not sealed or len(sealed) < HEADER_SIZE or sealed[:1] != VERSION:
        return UNKNOWN_KEY_ID
    return Sealer.key_id_of(sealed)
