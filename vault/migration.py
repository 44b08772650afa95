"""Moving the records of the single-Redis layout (releases before slot groups) into the slot-group layout.

Releases before slot groups kept every account under `{prefix}:account:{<id>}` and the deployment's
structures in one key each: the index `{prefix}:accounts`, the revoked set, the generation counter,
the event stream and its webhook delivery state (`LegacyKeys` names them all, built and parsed in one
place). The hash fields did not change, and sealed values do not name their key in their associated
data, so a record moves byte for byte: `migrate_account.lua` RENAMEs the hash and its cached tokens
(keeping their TTLs) into the account's slot group, adds it to the group's index (and revoked set),
drops the transient keys (failure markers, locks, the verification claim), removes it from the legacy
index and announces it on the invalidation channel, all in one step. If the slot-group layout already
holds the account (installed anew since the upgrade), that record wins and the legacy one is dropped.

A run (`Migrator.run`) first raises every group's generation counter to the legacy one's value (so
no generation is handed out twice), then walks the legacy index from its start: migrated ids leave
it, so an interrupted run resumes where it stopped, and a second run changes nothing. A SCAN then
finds legacy hashes missing from the index. While legacy records exist, the service moves an account
on first use (`ensure_current`), so it serves every account while the migration runs.

Events already in the legacy stream are not moved (their delivery state belongs to the legacy
layout): `legacy_events` counts them and the deliveries still pending; `drop_legacy_events` deletes
them once the operator accepts it. A Redis Cluster never held the legacy layout: there the fallback
is inactive and `run` refuses. No Flask and no click: `cli/vault_commands.py` wraps this.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import redis

from core.errors import MigrationRefused
from vault.layout import CACHE, FAILURE, LOCK, TOKEN, VERIFYING, AccountKey, KeySpace
from vault.scripts import Script
from vault.store import is_cluster, store_errors

# The account ids the legacy layout's releases wrote (vault.accounts.ACCOUNT_ID then), frozen with that
# layout here: vault.accounts may import this module for its fallback without a cycle.
LEGACY_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
ACCOUNT_ID_BYTES = LEGACY_ACCOUNT_ID.pattern.encode()

DEFAULT_BATCH = 500
ACTIVE_CACHE_SECONDS = 10.0  # how long a process trusts its last look at whether legacy records exist
MAX_ATTEMPTS = 5  # an account whose cache set keeps changing between reading it and moving it

# Webhook delivery state of the legacy layout, per endpoint. `lease` is left out on purpose: the
# slot-group layout keeps an endpoint-wide lease under the same name, and a lease expires by itself.
LEGACY_ENDPOINT_PARTS = ("retry", "attempts", "owners", "held", "failed")
LEGACY_WAITING = "waiting"

NOT_AN_ID = "not an account id this service writes; left as it is"

# Outcomes of migrate_account.lua.
NOTHING, MOVED, NEW_WINS, CLEANED, REPLAN = 0, 1, 2, 3, -1


@dataclasses.dataclass(frozen=True)
class LegacyEndpointKey:
    """What a legacy webhook delivery key names: the endpoint, the part, and (waiting lists) the account."""

    endpoint_id: str
    part: str
    account_id: str | None = None


class LegacyKeys:
    """The key names of the single-Redis layout (releases before slot groups), built and parsed here only."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._account = re.compile(
            re.escape(f"{prefix}:account:".encode())
            + rb"\{(?P<id>"
            + ACCOUNT_ID_BYTES
            + rb")\}(?::(?P<kind>[a-z]+)(?::(?P<slot>.+))?)?",
            re.DOTALL,
        )
        parts = "|".join(LEGACY_ENDPOINT_PARTS)
        self._endpoint = re.compile(
            re.escape(f"{prefix}:events:endpoint:".encode())
            + rb"(?P<endpoint>[0-9a-f]{1,64}):(?:(?P<part>"
            + parts.encode()
            + rb")|"
            + LEGACY_WAITING.encode()
            + rb":\{(?P<account>"
            + ACCOUNT_ID_BYTES
            + rb")\})"
        )

    @property
    def index(self) -> str:
        """Sorted set of every installed account id (score 0)."""
        return f"{self.prefix}:accounts"

    @property
    def revoked(self) -> str:
        return f"{self.prefix}:revoked"

    @property
    def generation(self) -> str:
        """The one deployment-wide generation counter."""
        return f"{self.prefix}:generation"

    @property
    def events(self) -> str:
        """The one event stream (outbox), with its consumer groups (`webhook:<endpoint id>`)."""
        return f"{self.prefix}:events"

    @property
    def event_counts(self) -> str:
        return f"{self.prefix}:events:counts"

    def endpoint(self, endpoint_id: str, part: str) -> str:
        return f"{self.prefix}:events:endpoint:{endpoint_id}:{part}"

    def waiting(self, endpoint_id: str, account_id: str) -> str:
        return f"{self.prefix}:events:endpoint:{endpoint_id}:{LEGACY_WAITING}:{{{account_id}}}"

    def key_for(self, account_id: str, *parts: str) -> str:
        """`{prefix}:account:{<id>}` (the account's hash) or a key below it (`kind`, then `slot`)."""
        return ":".join((f"{self.prefix}:account:{{{account_id}}}", *parts))

    def parse(self, key: bytes) -> AccountKey | None:
        """What a legacy account key names; None for any other key."""
        match = self._account.fullmatch(key)
        if match is None:
            return None
        kind, slot = match["kind"], match["slot"]
        return AccountKey(
            match["id"].decode(),
            kind.decode() if kind else None,
            slot.decode("utf-8", "replace") if slot is not None else None,
        )

    def parse_endpoint(self, key: bytes) -> LegacyEndpointKey | None:
        """What a legacy webhook delivery key names; None for any other key (a lease among them)."""
        match = self._endpoint.fullmatch(key)
        if match is None:
            return None
        if match["part"] is not None:
            return LegacyEndpointKey(match["endpoint"].decode(), match["part"].decode())
        return LegacyEndpointKey(match["endpoint"].decode(), LEGACY_WAITING, match["account"].decode())

    @property
    def account_scan_pattern(self) -> str:
        """A SCAN pattern matching every legacy account key (the prefix's glob characters escaped)."""
        return _glob_escape(f"{self.prefix}:account:") + "{*"

    @property
    def endpoint_scan_pattern(self) -> str:
        return _glob_escape(f"{self.prefix}:events:endpoint:") + "*"


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\^])", r"\\\1", text)


@dataclasses.dataclass(frozen=True)
class Problem:
    """An account that was not migrated: its id and why (never a value)."""

    account_id: str
    reason: str

    def __str__(self) -> str:
        return f"account {self.account_id}: {self.reason}"


@dataclasses.dataclass
class MigrationReport:
    """What a run did."""

    moved: int = 0  # accounts moved into their slot group
    already_current: int = 0  # the slot-group layout held them already (installed anew): legacy copy dropped
    cleaned: int = 0  # legacy leftovers without a record (an index entry, cache keys) dropped
    tokens_moved: int = 0  # cached tokens moved with their TTLs
    remaining: int = 0  # legacy records left after the run (0: done)
    complete: bool = True  # False when `limit` stopped the run early
    problems: list[Problem] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class LegacyEvents:
    """The legacy event stream and its webhook delivery state."""

    stream_length: int  # events in `{prefix}:events`
    pending_deliveries: int  # events some endpoint has not delivered (nor given up on) yet
    endpoint_keys: int  # keys of legacy delivery state (retries, attempts, held, waiting, failed)


@dataclasses.dataclass(frozen=True)
class LayoutCheck:
    """What `check` found: legacy records left, and whether the slot-group indexes match the records."""

    legacy_indexed: int  # ids in the legacy index
    legacy_records: int  # legacy account hashes (SCAN)
    legacy_unindexed: int  # legacy account hashes missing from the legacy index
    legacy_other_keys: int  # other legacy account keys: cached tokens, failure markers, locks, cache sets
    events: LegacyEvents
    accounts: int  # accounts in the slot groups' indexes
    indexed_without_record: list[str]  # ids in a group's index whose hash is not there
    records_without_index: list[str]  # account hashes missing from their group's index
    cluster: bool = False  # a Redis Cluster: no legacy layout is possible, none was looked for

    @property
    def remaining(self) -> int:
        """Legacy records still to migrate (0: the migration is done)."""
        return self.legacy_indexed + self.legacy_unindexed

    @property
    def consistent(self) -> bool:
        return not self.indexed_without_record and not self.records_without_index


class Migrator:
    """Moves accounts of the single-Redis layout into their slot groups; while any is left, on first use too."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySpace,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] = lambda account_id: None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.legacy = LegacyKeys(keys.prefix)
        self.clock = clock
        self.on_change = on_change  # this process's own memory hears of a move at once
        self.cluster = is_cluster(client)
        self._active_until = float("-inf")
        self._active = False
        if not self.cluster:
            self._migrate = Script(client, "migrate_account")
            self._generations = Script(client, "migrate_generations")
            self._event_counts = Script(client, "migrate_event_counts")

    # The service's fallback while legacy records exist -------------------------------------------

    def active(self) -> bool:
        """Whether legacy records may exist (one EXISTS, remembered for ACTIVE_CACHE_SECONDS); never on a cluster."""
        if self.cluster:
            return False
        now = self.clock()
        if now < self._active_until:
            return self._active
        with store_errors():
            # A completed run deletes the legacy counter; until then it marks a deployment with legacy records.
            found = int(self.redis.exists(self.legacy.index, self.legacy.generation))
        self._active, self._active_until = found > 0, now + ACTIVE_CACHE_SECONDS
        return self._active

    def ensure_current(self, account_id: str) -> bool:
        """Move the account into its slot group if it is still in the legacy layout; True if it moved.

        One script call while legacy records exist (two when the account has cached tokens), nothing
        after. Call it before reading or changing an account.
        """
        if not self.active() or not LEGACY_ACCOUNT_ID.fullmatch(account_id):
            return False
        return self.migrate_account(account_id)

    # One account ---------------------------------------------------------------------------------

    def migrate_account(self, account_id: str) -> bool:
        """Move one account (hash, index entries, cached tokens); True if it moved. Idempotent."""
        outcome, _ = self._move(account_id)
        return outcome == MOVED

    def _move(self, account_id: str, members: Iterable[bytes] = ()) -> tuple[int, int]:
        """(outcome, tokens moved). `members`: the legacy cache set as last seen (none: the script says)."""
        self.refuse_on_cluster()
        for _ in range(MAX_ATTEMPTS):
            with store_errors():
                answer = cast(list[Any], self._call(account_id, members))
            outcome = int(answer[0])
            if outcome != REPLAN:
                if outcome == MOVED:
                    self.on_change(account_id)
                return outcome, int(answer[1])
            members = cast(list[bytes], answer[1])  # the cache set held keys not declared: declare them
        raise MigrationRefused(f"account {account_id}: its cached tokens kept changing while it was moved; run again")

    def _call(self, account_id: str, members: Iterable[bytes], client: Any = None) -> Any:
        """Run migrate_account.lua for one account (on `client`, a pipeline, if given)."""
        tokens, dropped = self._slot_keys(account_id, members)
        group = self.keys.group_of(account_id)
        return self._migrate(
            legacy_account=self.legacy.key_for(account_id),
            legacy_cache=self.legacy.key_for(account_id, CACHE),
            legacy_verifying=self.legacy.key_for(account_id, VERIFYING),
            legacy_index=self.legacy.index,
            legacy_revoked=self.legacy.revoked,
            legacy_generation=self.legacy.generation,
            account=self.keys.key_for(account_id),
            cache=self.keys.key_for(account_id, CACHE),
            index=self.keys.index(group),
            revoked=self.keys.revoked(group),
            generation=self.keys.generation(group),
            slot_keys=[*(name for pair in tokens for name in pair), *dropped],
            account_id=account_id,
            channel=self.keys.channel,
            n_tokens=len(tokens),
            client=client,
        )

    def _slot_keys(self, account_id: str, members: Iterable[bytes]) -> tuple[list[tuple[str, str]], list[str]]:
        """The legacy cache set's keys: (legacy, new) names of tokens, and the keys to drop (failures, locks)."""
        tokens: list[tuple[str, str]] = []
        dropped: list[str] = []
        slots: set[str] = set()
        for member in members:
            parsed = self.legacy.parse(member)
            name = member.decode("utf-8", "surrogateescape")
            if parsed is not None and parsed.account_id == account_id and parsed.kind == TOKEN and parsed.slot:
                tokens.append((name, self.keys.key_for(account_id, TOKEN, parsed.slot)))
                slots.add(parsed.slot)
            else:
                dropped.append(name)
                if parsed is not None and parsed.kind == FAILURE and parsed.slot:
                    slots.add(parsed.slot)
        dropped += [self.legacy.key_for(account_id, LOCK, slot) for slot in sorted(slots)]
        return tokens, dropped

    # A whole run ---------------------------------------------------------------------------------

    def raise_generations(self) -> int:
        """Raise every group's generation counter to at least the legacy one; how many were raised."""
        self.refuse_on_cluster()
        with store_errors():
            return int(
                self._generations(
                    legacy_generation=self.legacy.generation,
                    generations=[self.keys.generation(g) for g in self.keys.groups],
                )
            )

    def count_legacy(self) -> int:
        """Ids in the legacy index (for a progress bar); 0 on a cluster."""
        if self.cluster:
            return 0
        with store_errors():
            return int(self.redis.zcard(self.legacy.index))

    def run(
        self,
        *,
        batch: int = DEFAULT_BATCH,
        limit: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> MigrationReport:
        """Move every legacy account; resumable (migrated ids leave the legacy index) and idempotent.

        `limit` stops after that many accounts were handled (a partial run: run again to go on).
        `on_progress` is called with the number of accounts handled in each batch.
        """
        self.refuse_on_cluster()
        report = MigrationReport()
        self.raise_generations()
        with store_errors():
            self._event_counts(legacy_counts=self.legacy.event_counts, counts=self.keys.event_counts(0))
        handled = 0
        for ids in self._legacy_ids(batch):
            if limit is not None and handled + len(ids) > limit:
                ids = ids[: limit - handled]
                report.complete = False
            handled += len(ids)
            self._migrate_batch(ids, report)
            if on_progress is not None:
                on_progress(len(ids))
            if not report.complete:
                break
        report.remaining = self._remaining()
        if report.complete and report.remaining == 0 and not report.problems:
            # Nothing legacy is left: the legacy counter goes too (its value lives on in every group's),
            # and with it the service's fallback (`active`).
            with store_errors():
                self.redis.delete(self.legacy.generation)
            self._active_until = float("-inf")
        return report

    def _migrate_batch(self, ids: list[str], report: MigrationReport) -> None:
        """Move a batch of accounts: their cache sets in one round trip, their scripts in another."""
        valid = []
        for account_id in ids:
            if LEGACY_ACCOUNT_ID.fullmatch(account_id):
                valid.append(account_id)
            else:
                report.problems.append(Problem(account_id[:200], NOT_AN_ID))
        if not valid:
            return
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for account_id in valid:
                pipe.smembers(self.legacy.key_for(account_id, CACHE))
            members: list[Any] = pipe.execute(raise_on_error=False)
            pipe = self.redis.pipeline(transaction=False)
            for account_id, cached in zip(valid, members):
                self._call(account_id, () if isinstance(cached, Exception) else cached, client=pipe)
            answers: list[Any] = pipe.execute(raise_on_error=False)
        for account_id, answer in zip(valid, answers):
            if isinstance(answer, redis.exceptions.ResponseError):
                # A key of the account holds another type than this service writes: named, never shown.
                report.problems.append(Problem(account_id, "a legacy key of the account is not of the expected type"))
                continue
            if isinstance(answer, Exception):
                with store_errors():
                    raise answer
            outcome = int(answer[0])
            if outcome == REPLAN:
                try:
                    outcome, tokens = self._move(account_id, cast(list[bytes], answer[1]))
                except MigrationRefused as exc:
                    report.problems.append(Problem(account_id, exc.message))
                    continue
            else:
                tokens = int(answer[1])
                if outcome == MOVED:
                    self.on_change(account_id)
            report.tokens_moved += tokens
            if outcome == MOVED:
                report.moved += 1
            elif outcome == NEW_WINS:
                report.already_current += 1
            elif outcome == CLEANED:
                report.cleaned += 1

    def _legacy_ids(self, batch: int) -> Iterator[list[str]]:
        """Ids of the legacy index in order, then of its revoked set and of legacy hashes missing from
        the index (SCAN), in batches.

        The index is read after the last id handled, not from its start: an id that could not be
        moved stays in it and is not read again (the next run tries it again).
        """
        after = "-"
        while True:
            with store_errors():
                found = cast(list[bytes], self.redis.zrangebylex(self.legacy.index, after, "+", start=0, num=batch))
            if not found:
                break
            ids = [raw.decode("utf-8", "replace") for raw in found]
            yield ids
            after = "(" + found[-1].decode("utf-8", "surrogateescape")
        # Ids in the legacy revoked set but not its index (never written so; swept for a clean end).
        with store_errors():
            stray = [raw.decode("utf-8", "replace") for raw in self.redis.sscan_iter(self.legacy.revoked, count=batch)]
        for start in range(0, len(stray), batch):
            yield stray[start : start + batch]
        seen: set[str] = set()
        for names in self._scan(self.legacy.account_scan_pattern, batch, kind="hash"):
            ids = []
            for name in names:
                parsed = self.legacy.parse(name)
                if parsed is not None and parsed.kind is None and parsed.account_id not in seen:
                    seen.add(parsed.account_id)
                    ids.append(parsed.account_id)
            if ids:
                yield ids

    def _remaining(self) -> int:
        with store_errors():
            indexed = int(self.redis.zcard(self.legacy.index))
        unindexed = sum(1 for _ in self._unindexed_legacy_records(DEFAULT_BATCH))
        return indexed + unindexed

    def _unindexed_legacy_records(self, batch: int) -> Iterator[str]:
        for names in self._scan(self.legacy.account_scan_pattern, batch, kind="hash"):
            ids = [p.account_id for p in map(self.legacy.parse, names) if p is not None and p.kind is None]
            if not ids:
                continue
            with store_errors():
                pipe = self.redis.pipeline(transaction=False)
                for account_id in ids:
                    pipe.zscore(self.legacy.index, account_id)
                scores = pipe.execute()
            yield from (account_id for account_id, score in zip(ids, scores) if score is None)

    def _scan(self, pattern: str, batch: int, *, kind: str | None = None) -> Iterator[list[bytes]]:
        """Keys matching `pattern`, in batches (SCAN, never KEYS); each name once."""
        seen: set[bytes] = set()
        cursor = 0
        while True:
            with store_errors():
                cursor, names = cast(
                    tuple[int, list[bytes]], self.redis.scan(cursor, match=pattern, count=batch, _type=kind)
                )
            fresh = [name for name in names if name not in seen]
            seen.update(fresh)
            if fresh:
                yield fresh
            if cursor == 0:
                return

    def refuse_on_cluster(self) -> None:
        """Raise MigrationRefused on a Redis Cluster (which never held the single-Redis layout)."""
        if self.cluster:
            raise MigrationRefused(
                "vault migrate moves records of the single-Redis layout; a Redis Cluster never held it, "
                "so there is nothing to migrate here (REDIS_CLUSTER=true)."
            )

    # Legacy events -------------------------------------------------------------------------------

    def legacy_events(self) -> LegacyEvents:
        """The legacy stream's length, its deliveries still pending, and its delivery state's keys."""
        if self.cluster:
            return LegacyEvents(0, 0, 0)
        pending = 0
        with store_errors():
            length = int(self.redis.xlen(self.legacy.events))
            try:
                groups: list[dict[str, Any]] = self.redis.xinfo_groups(self.legacy.events) if length else []
            except redis.exceptions.ResponseError:
                groups = []  # no stream
            for group in groups:
                pending += int(group.get("pending") or 0) + self._unread(group)
        endpoint_keys = 0
        for names in self._scan(self.legacy.endpoint_scan_pattern, DEFAULT_BATCH):
            parsed = [(name, p) for name, p in ((n, self.legacy.parse_endpoint(n)) for n in names) if p is not None]
            endpoint_keys += len(parsed)
            with store_errors():
                pipe = self.redis.pipeline(transaction=False)
                counted = [(name, p) for name, p in parsed if p.part in ("retry", LEGACY_WAITING)]
                for name, p in counted:
                    if p.part == "retry":
                        pipe.zcard(name)
                    else:
                        pipe.llen(name)
                pending += sum(int(n) for n in pipe.execute()) if counted else 0
        return LegacyEvents(length, pending, endpoint_keys)

    def _unread(self, group: dict[str, Any]) -> int:
        """Entries the group has not read yet (its lag; counted when Redis does not know it)."""
        lag = group.get("lag")
        if lag is not None:
            return int(lag)
        last = group.get("last-delivered-id") or b"0-0"
        last = last.decode() if isinstance(last, bytes) else str(last)
        return len(cast(list[Any], self.redis.xrange(self.legacy.events, f"({last}", "+")))

    def drop_legacy_events(self) -> int:
        """Delete the legacy stream (with its consumer groups) and its delivery state; how many keys."""
        self.refuse_on_cluster()
        names: list[bytes] = []
        for batch in self._scan(self.legacy.endpoint_scan_pattern, DEFAULT_BATCH):
            names += [name for name in batch if self.legacy.parse_endpoint(name) is not None]
        with store_errors():
            self._event_counts(legacy_counts=self.legacy.event_counts, counts=self.keys.event_counts(0))
            deleted = int(self.redis.delete(self.legacy.events))
            for start in range(0, len(names), DEFAULT_BATCH):
                deleted += int(self.redis.delete(*names[start : start + DEFAULT_BATCH]))
        return deleted

    # check ---------------------------------------------------------------------------------------

    def check(self, *, batch: int = DEFAULT_BATCH) -> LayoutCheck:
        """Legacy records left, and whether every group's index and its account hashes agree."""
        indexed_without, records_without = self._consistency(batch)
        accounts = self._accounts()
        if self.cluster:
            return LayoutCheck(
                0, 0, 0, 0, LegacyEvents(0, 0, 0), accounts, indexed_without, records_without, cluster=True
            )
        with store_errors():
            legacy_indexed = int(self.redis.zcard(self.legacy.index))
        records = other = 0
        for names in self._scan(self.legacy.account_scan_pattern, batch):
            for parsed in map(self.legacy.parse, names):
                if parsed is None:
                    continue
                if parsed.kind is None:
                    records += 1
                else:
                    other += 1
        unindexed = sum(1 for _ in self._unindexed_legacy_records(batch))
        return LayoutCheck(
            legacy_indexed,
            records,
            unindexed,
            other,
            self.legacy_events(),
            accounts,
            indexed_without,
            records_without,
        )

    def _accounts(self) -> int:
        with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for group in self.keys.groups:
                pipe.zcard(self.keys.index(group))
            return sum(int(n) for n in pipe.execute())

    def _consistency(self, batch: int) -> tuple[list[str], list[str]]:
        """(ids indexed without their hash, hashes not indexed), each confirmed by a second, atomic look
        (a change between the two reads is not a fault)."""
        suspects: set[str] = set()
        misplaced: list[str] = []  # in another group's index than their own: never written so
        for group in self.keys.groups:
            after = "-"
            while True:
                with store_errors():
                    found = cast(
                        list[bytes], self.redis.zrangebylex(self.keys.index(group), after, "+", start=0, num=batch)
                    )
                    if not found:
                        break
                    ids = [raw.decode("utf-8", "replace") for raw in found]
                    pipe = self.redis.pipeline(transaction=False)
                    for account_id in ids:
                        pipe.exists(self.keys.key_for(account_id))
                    exists = pipe.execute()
                misplaced += [a for a in ids if self.keys.group_of(a) != group]
                suspects.update(a for a, e in zip(ids, exists) if not e and self.keys.group_of(a) == group)
                after = "(" + found[-1].decode("utf-8", "surrogateescape")
        pattern = self.keys.account_scan_pattern
        for names in self._scan_all(pattern, batch):
            ids = [p.account_id for p in map(self.keys.parse, names) if p is not None and p.kind is None]
            if not ids:
                continue
            with store_errors():
                pipe = self.redis.pipeline(transaction=False)
                for account_id in ids:
                    pipe.zscore(self.keys.index(self.keys.group_of(account_id)), account_id)
                scores = pipe.execute()
            suspects.update(a for a, s in zip(ids, scores) if s is None)
        indexed_without, records_without = list(misplaced), []
        for account_id in sorted(suspects):
            group = self.keys.group_of(account_id)
            with store_errors():
                # One slot (the group's hash tag): a MULTI reads both at one moment, on a cluster too.
                pipe = self.redis.pipeline(transaction=True)
                pipe.exists(self.keys.key_for(account_id))
                pipe.zscore(self.keys.index(group), account_id)
                exists, score = pipe.execute()
            if score is not None and not exists:
                indexed_without.append(account_id)
            elif exists and score is None:
                records_without.append(account_id)
        return sorted(indexed_without), records_without

    def _scan_all(self, pattern: str, batch: int) -> Iterator[list[bytes]]:
        """SCAN over the whole deployment: every master of a cluster, or the one Redis."""
        if not self.cluster:
            yield from self._scan(pattern, batch, kind="hash")
            return
        names: list[bytes] = []
        with store_errors():
            for name in self.redis.scan_iter(match=pattern, count=batch, _type="hash"):
                names.append(name)
                if len(names) >= batch:
                    yield names
                    names = []
        if names:
            yield names
