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
releases before the pieces, `LEGACY_CRED_FIELD`: it is rewritten as pieces).

Nothing here prints, logs or returns a secret or sealed bytes: a problem is
named by account id, record (credentials / token slot) and reason.
No Flask and no click: the CLI (`cli/`) wraps this.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator

import redis

from vault.accounts import LEGACY_CRED_FIELD, SEALED_LUA, credentials_aad, join_sealed, sealed_fields_args
from vault.keys import KeyRing
from vault.seal import HEADER_SIZE, VERSION, SealError, Sealer
from vault.store import KeySpace, store_errors
from vault.tokencache import token_aad

log = logging.getLogger(__name__)

CREDENTIALS = "credentials"
TOKEN = "token"
KINDS = (CREDENTIALS, TOKEN)

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

# KEYS: account hash. ARGV: app as read, sealed value as read, then the new value's field, value pairs.
_SWAP_CREDENTIALS = SEALED_LUA + """
if #ARGV < 4 or #ARGV % 2 ~= 0 then return redis.error_reply('swap: expected field, value pairs') end
if sealed_of(KEYS[1]) ~= ARGV[2] or redis.call('HGET', KEYS[1], 'app') ~= ARGV[1] then
  return 0
end
-- The hash is rebuilt, not patched: Redis never turns a hashtable back into a compact listpack,
-- and a one-field record (LEGACY_CRED_FIELD) is a hashtable. No old piece or `cred` survives.
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= 'cred' and string.sub(all[i], 1, 5) ~= 'cred.' then redis.call('HSET', KEYS[1], all[i], all[i + 1]) end
end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end  -- not unpack(): stack bound
return 1
"""

# KEYS: token key. ARGV: sealed token as read, new sealed token. Keeps the remaining TTL
# (time does not move inside a script, so PTTL then SET PX is exact).
_SWAP_TOKEN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""


@dataclasses.dataclass(frozen=True)
class Record:
    """Where one sealed value lives (never the value itself)."""

    kind: str  # CREDENTIALS or TOKEN
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
    counts: dict[tuple[str, str], collections.Counter] = dataclasses.field(default_factory=dict)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    complete: bool = True  # False when `limit` stopped a rotation early

    def add(self, key_id: str, kind: str, outcome: str) -> None:
        self.counts.setdefault((key_id, kind), collections.Counter())[outcome] += 1

    def total(self, outcome: str, *, kind: str | None = None, key_id: str | None = None) -> int:
        return sum(
            counter[outcome] for (kid, knd), counter in self.counts.items()
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
            for kid in self.key_ids for kind in KINDS if (kid, kind) in self.counts
        ]

    def as_dict(self) -> dict:
        return {
            "current_key_id": self.current_key_id,
            "complete": self.complete,
            "keys": [{"key_id": kid, "record": kind, **counts} for kid, kind, counts in self.rows()],
            "totals": {o: self.total(o) for o in self.outcomes},
            "problems": [dataclasses.asdict(p) for p in self.problems],
        }


class Rotation:
    """Re-seal (`rotate`) or open (`check`) every sealed record of one deployment."""

    def __init__(self, client: redis.Redis, keyring: KeyRing, keys: KeySpace, app_id: str) -> None:
        self.redis = client
        self.sealer = Sealer(keyring)
        self.current_key_id = keyring.current.id.hex()
        self.keys = keys
        self.app_id = app_id  # tokens are bound to the deployment's app (credentials to their hash's `app`)
        self._swap_credentials = client.register_script(_SWAP_CREDENTIALS)
        self._swap_token = client.register_script(_SWAP_TOKEN)
        prefix = re.escape(f"{keys.prefix}:account:".encode())
        self._name = re.compile(prefix + rb"\{(?P<id>[A-Za-z0-9_-]{1,128})\}(?::token:(?P<slot>.+))?", re.DOTALL)

    # Finding records -----------------------------------------------------------------------------

    def scan(self, *, batch: int = DEFAULT_BATCH) -> Iterator[list[Record]]:
        """Every record of the deployment, in batches, each exactly once.

        SCAN may return a key twice (when Redis resizes its table meanwhile), so the
        names seen are remembered: about 100 bytes per record, for the counts to be exact.
        """
        seen: set[bytes] = set()
        cursor = 0
        pattern = _glob_escape(f"{self.keys.prefix}:account:") + "*"
        while True:
            with store_errors():
                cursor, names = self.redis.scan(cursor, match=pattern, count=batch)
            records = []
            for name in names:
                if name in seen:
                    continue
                seen.add(name)
                record = self._record(name)
                if record is not None:
                    records.append(record)
            if records:
                yield records
            if cursor == 0:
                return

    def count_accounts(self) -> int:
        """The number of installed accounts (the index), for a progress bar."""
        with store_errors():
            return int(self.redis.zcard(self.keys.index))

    def _record(self, name: bytes) -> Record | None:
        match = self._name.fullmatch(name)
        if match is None:  # the account's cache set, failure markers, locks
            return None
        account_id = match.group("id").decode("ascii")
        if match.group("slot") is None:
            return Record(CREDENTIALS, account_id, name)
        try:
            slot = match.group("slot").decode("utf-8")
        except UnicodeDecodeError:  # TokenCache never writes such a key: report it, do not guess its slot
            slot = match.group("slot").decode("utf-8", "replace")
        return Record(TOKEN, account_id, name, slot)

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
        values: list = []
        for record, value in zip(records, raw):
            if isinstance(value, Exception):
                values.append(value)
            elif record.kind == CREDENTIALS:
                values.append((value.get(b"app"), join_sealed(value), LEGACY_CRED_FIELD.encode() in value)
                              if value else (None, None, False))
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

    def check(
        self, *, batch: int = DEFAULT_BATCH, on_progress: Callable[[list[Record]], None] | None = None
    ) -> Report:
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
            pending: list[tuple[Record, str, bytes | None, bytes, bytes]] = []  # record, key id, app, old, new
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
                    pending.append((record, kid, app, sealed, self._reseal(record, app, sealed)))
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
        pending: list[tuple[Record, str, bytes | None, bytes, bytes]],
        before_write: Callable[[list[Record]], None] | None,
    ) -> None:
        """Compare-and-set each record; re-read the ones that changed and try again."""
        for _ in range(MAX_ATTEMPTS):
            if not pending:
                return
            if before_write is not None:
                before_write([item[0] for item in pending])
            with store_errors():
                pipe = self.redis.pipeline(transaction=False)
                for record, _kid, app, old, new in pending:
                    if record.kind == CREDENTIALS:
                        self._swap_credentials(keys=[record.key], args=[app, old, *sealed_fields_args(new)], client=pipe)
                    else:
                        self._swap_token(keys=[record.key], args=[old, new], client=pipe)
                results = pipe.execute()
            changed = []
            for item, done in zip(pending, results):
                if done:
                    report.add(item[1], item[0].kind, RESEALED)
                else:
                    changed.append(item)
            pending = []
            if not changed:
                return
            for (record, kid, _app, _old, _new), value in zip(changed, self._read([c[0] for c in changed])):
                if isinstance(value, Exception):
                    self._problem(report, record, UNKNOWN_KEY_ID, "not a record of the expected type")
                    continue
                app, sealed, one_field = value
                if not sealed or (key_id_of(sealed) == self.current_key_id and not one_field):
                    # Deleted, re-installed or refreshed by the web process (under the current key): its value wins.
                    report.add(kid, record.kind, CHANGED)
                    continue
                try:
                    pending.append((record, kid, app, sealed, self._reseal(record, app, sealed)))
                except SealError as exc:
                    self._problem(report, record, key_id_of(sealed), exc)
        for record, kid, *_ in pending:
            # Changed again on every attempt and still under an old key: left for the next run.
            report.add(kid, record.kind, SKIPPED)


def key_id_of(sealed: bytes | None) -> str:
    """The id of the key that sealed a value, or "unknown" if it is not a sealed value of a known version."""
    if not sealed or len(sealed) < HEADER_SIZE or sealed[:1] != VERSION:
        return UNKNOWN_KEY_ID
    return Sealer.key_id_of(sealed)


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters (KEY_PREFIX allows none today; keep it true if that changes)."""
    return re.sub(r"([*?\[\]\\^])", r"\\\1", text)
