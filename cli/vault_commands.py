"""`vault keygen`, `vault rotate`, `vault migrate`, `vault check`: sealing keys and the records in Redis."""

from __future__ import annotations

import dataclasses
import json

import click

from cli.groups import services, stderr, table, vault_errors, vault_group
from events.signing import generate_secret
from vault.keys import generate_key, parse_key
from vault.layout import GROUPS
from vault.migration import LayoutCheck, LegacyEvents, MigrationReport, Migrator
from vault.replicas import Replicas
from vault.rotation import DEFAULT_BATCH, FAILED, RESEALED, SKIPPED, Record, Report, Rotation

MAX_PROBLEMS_SHOWN = 100


@click.command("keygen")
@click.option("--hex", "as_hex", is_flag=True, help="64 hex characters instead of base64 (VAULT_KEY takes both).")
@click.option("--webhook", is_flag=True, help="A WEBHOOK_SECRET instead (whsec_ + base64, Standard Webhooks).")
def keygen(as_hex: bool, webhook: bool) -> None:
    """Print a new random 32-byte key for VAULT_KEY, or with --webhook for WEBHOOK_SECRET (and nothing else)."""
    if webhook:
        click.echo(generate_secret())
        return
    key = generate_key()
    click.echo(parse_key(key, "the new key").hex() if as_hex else key)


# `flask ... vault keygen`: Flask has built the app before it gets here, so this needs the configuration;
# `python -m cli keygen` (cli/__main__.py) runs the same command without any.
vault_group.add_command(keygen)


def _rotation() -> Rotation:
    s = services()
    replicas = Replicas(s.redis, wanted=s.config.redis_wait_replicas, timeout_ms=s.config.redis_wait_timeout)
    return Rotation(s.redis, s.config.keyring, s.accounts.keys, s.config.iris_app_id, replicas=replicas)


def _progress(rotation: Rotation, label: str):
    """A progress bar over the installed accounts (on stderr, so stdout stays the report)."""
    return click.progressbar(length=max(1, rotation.count_accounts()), label=label, file=stderr(), show_pos=True)


def _advance(bar):
    def on_progress(records: list[Record]) -> None:
        bar.update(sum(1 for r in records if r.kind == "credentials"))

    return on_progress


def report_dict(report: Report) -> dict:
    """The report as `--json` prints it."""
    return {
        "current_key_id": report.current_key_id,
        "complete": report.complete,
        "keys": [{"key_id": kid, "record": kind, **counts} for kid, kind, counts in report.rows()],
        "totals": {o: report.total(o) for o in report.outcomes},
        "problems": [dataclasses.asdict(p) for p in report.problems],
    }


def _report_lines(report: Report) -> list[str]:
    rows = [
        [f"{kid} (current)" if kid == report.current_key_id else kid, kind, *counts.values()]
        for kid, kind, counts in report.rows()
    ]
    rows.append(["total", "", *(report.total(o) for o in report.outcomes)])
    return table(["key id", "record", *report.outcomes], rows)


def _problem_lines(report: Report) -> list[str]:
    if not report.problems:
        return []
    lines = [f"{len(report.problems)} record(s) do not open (account, record, reason):"]
    lines += [f"  {problem}" for problem in report.problems[:MAX_PROBLEMS_SHOWN]]
    if len(report.problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"  ... and {len(report.problems) - MAX_PROBLEMS_SHOWN} more (--json lists them all)")
    return lines


@vault_group.command("rotate")
@click.option(
    "--batch",
    default=DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Records read and written per round trip (SCAN COUNT).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after re-sealing this many records (run again to go on).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@vault_errors
def rotate(batch: int, limit: int | None, as_json: bool) -> None:
    """Re-seal every record under the current VAULT_KEY.

    Credentials and cached tokens sealed with a key of VAULT_PREVIOUS_KEYS are
    opened and sealed again with VAULT_KEY. Safe while the service runs (a
    record it changes meanwhile is left as it wrote it), safe to interrupt and
    to run again (records already under VAULT_KEY are skipped). Set VAULT_KEY
    and VAULT_PREVIOUS_KEYS on every web process first, then run this.
    Exit status 1 if a record does not open or kept changing.
    """
    rotation = _rotation()
    legacy = _migrator().check(batch=batch).remaining
    if legacy:
        # Rotation re-seals the slot groups' records only: a record left in the older layout would stay
        # under the previous key, and dropping that key would make it unreadable once it moves.
        raise click.ClickException(
            f"{legacy} record(s) are still in the single-Redis layout: run `flask --app app vault migrate` "
            "first, then rotate."
        )
    if not as_json:
        click.echo(f"Re-sealing every record under key id {rotation.current_key_id} (VAULT_KEY).")
    with _progress(rotation, "Re-sealing accounts") as bar:
        report = rotation.rotate(batch=batch, limit=limit, on_progress=_advance(bar))
    failed, skipped = report.total(FAILED), report.total(SKIPPED)
    if as_json:
        click.echo(json.dumps(report_dict(report), indent=2))
    else:
        for line in [*_report_lines(report), *_problem_lines(report)]:
            click.echo(line)
        if not report.complete:
            click.echo(f"Stopped after re-sealing {report.total(RESEALED)} record(s) (--limit): run again to go on.")
        if skipped:
            click.echo(f"{skipped} record(s) changed on every attempt and are still under an older key: run again.")
        if failed:
            click.echo(f"{failed} record(s) do not open with the configured keys: they were left as they are.")
        if report.complete and not failed and not skipped:
            click.echo(
                f"Every record is under key id {report.current_key_id}. Once every process runs with this "
                "VAULT_KEY, the previous keys can be dropped (`vault check` confirms)."
            )
    if failed or skipped:
        raise SystemExit(1)


@vault_group.command("check")
@click.option(
    "--batch",
    default=DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Records read per round trip (SCAN COUNT).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@vault_errors
def check(batch: int, as_json: bool) -> None:
    """Open every record with the configured keys and count them per key id; check the layout.

    Lists every record that does not open (account id and which record, never
    its content). Then counts the records of the single-Redis layout still to
    migrate (0: `vault migrate` is done) and checks that every slot group's
    index and its account records agree. Exit status 1 if a record does not
    open or an index and the records disagree (legacy records still to migrate
    are reported, as records under a previous key are, with status 0).
    """
    rotation = _rotation()
    with _progress(rotation, "Checking accounts") as bar:
        report = rotation.check(batch=batch, on_progress=_advance(bar))
    layout = _migrator().check(batch=batch)
    if as_json:
        click.echo(json.dumps({**report_dict(report), "layout": layout_dict(layout)}, indent=2))
    else:
        click.echo(f"{report.records} record(s); current key id {report.current_key_id} (VAULT_KEY).")
        for line in [*_report_lines(report), *_problem_lines(report)]:
            click.echo(line)
        older = sum(sum(c.values()) for kid, _, c in report.rows() if kid != report.current_key_id)
        if older:
            click.echo(
                f"{older} record(s) are not under the current key: run `vault rotate` before dropping a previous key."
            )
        for line in _layout_lines(layout):
            click.echo(line)
        if layout.remaining:
            click.echo(
                "Records in the single-Redis layout are not counted per key id above: run `vault migrate`, then "
                "`vault rotate`, before dropping a previous key."
            )
    if report.problems or not layout.consistent:
        raise SystemExit(1)


# vault migrate -------------------------------------------------------------------------------------------


def _migrator() -> Migrator:
    s = services()
    return Migrator(s.redis, s.accounts.keys)


def _events_dict(events: LegacyEvents) -> dict:
    return dataclasses.asdict(events)


def migration_dict(report: MigrationReport, events: LegacyEvents, dropped: int | None) -> dict:
    """The migration's report as `vault migrate --json` prints it."""
    return {
        "moved": report.moved,
        "already_current": report.already_current,
        "cleaned": report.cleaned,
        "tokens_moved": report.tokens_moved,
        "remaining": report.remaining,
        "complete": report.complete,
        "problems": [dataclasses.asdict(p) for p in report.problems],
        "legacy_events": _events_dict(events),
        "legacy_event_keys_dropped": dropped,
    }


def layout_dict(layout: LayoutCheck) -> dict:
    """The layout part of `vault check --json`."""
    return {
        "cluster": layout.cluster,
        "legacy_records_remaining": layout.remaining,
        "legacy_indexed": layout.legacy_indexed,
        "legacy_records": layout.legacy_records,
        "legacy_unindexed": layout.legacy_unindexed,
        "legacy_other_keys": layout.legacy_other_keys,
        "legacy_events": _events_dict(layout.events),
        "accounts": layout.accounts,
        "consistent": layout.consistent,
        "indexed_without_record": layout.indexed_without_record,
        "records_without_index": layout.records_without_index,
    }


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:MAX_PROBLEMS_SHOWN])
    return shown + (
        f" ... and {len(ids) - MAX_PROBLEMS_SHOWN} more (--json lists them all)"
        if len(ids) > MAX_PROBLEMS_SHOWN
        else ""
    )


def _layout_lines(layout: LayoutCheck) -> list[str]:
    lines = [f"{layout.accounts} account(s) in {GROUPS} slot groups."]
    if layout.cluster:
        lines.append("Redis Cluster: no single-Redis layout to migrate.")
    elif layout.remaining:
        lines.append(
            f"Migration: {layout.remaining} legacy record(s) remaining in the single-Redis layout: "
            "run `flask --app app vault migrate`."
        )
    else:
        lines.append("Migration: 0 legacy records remaining (done).")
    if layout.events.stream_length:
        lines.append(_legacy_events_line(layout.events))
    if layout.indexed_without_record:
        lines.append(f"{len(layout.indexed_without_record)} indexed account(s) have no record: ")
        lines[-1] += _ids(layout.indexed_without_record)
    if layout.records_without_index:
        lines.append(f"{len(layout.records_without_index)} account record(s) are missing from their group's index: ")
        lines[-1] += _ids(layout.records_without_index)
    return lines


def _legacy_events_line(events: LegacyEvents) -> str:
    return (
        f"Legacy event stream: {events.stream_length} event(s), {events.pending_deliveries} webhook "
        "delivery(ies) pending (not moved; `vault migrate --drop-legacy-events` deletes them)."
    )


def pending_message(events: LegacyEvents) -> str:
    """Why `vault migrate` refuses while webhook deliveries of the legacy event stream are pending."""
    return (
        f"{events.pending_deliveries} webhook delivery(ies) of the legacy event stream are still pending "
        f"({events.stream_length} event(s) in it). This release delivers the slot groups' streams only: the "
        "legacy deliveries drain only under the release before slot groups, before this one is deployed "
        "(README: Upgrading from the single-Redis layout). To migrate anyway, leaving them undelivered in the "
        "legacy stream, add --force; to delete the legacy stream and its delivery state, add --drop-legacy-events."
    )


@vault_group.command("migrate")
@click.option(
    "--batch",
    default=DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Account ids read per round trip.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many accounts (run again to go on).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--force", is_flag=True, help="Migrate although legacy webhook deliveries are still pending.")
@click.option(
    "--drop-legacy-events",
    is_flag=True,
    help="Delete the legacy event stream and its webhook delivery state (its events are not moved).",
)
@vault_errors
def migrate(batch: int, limit: int | None, as_json: bool, force: bool, drop_legacy_events: bool) -> None:
    """Move the records of the single-Redis layout into the slot groups.

    Accounts (credentials, status, generation) and their cached tokens (with
    their remaining TTL) move byte for byte; failure markers and locks are
    dropped. Safe while the service runs (it moves an account on first use
    meanwhile; an account installed anew since the upgrade keeps its new
    record), safe to interrupt and to run again (moved accounts leave the
    legacy index). Run it once every process runs this release. Events of the
    legacy stream are not moved: while a webhook delivery of it is pending
    this refuses, unless --force or --drop-legacy-events. A single Redis only.
    Exit status 1 if an account could not be moved.
    """
    migrator = _migrator()
    migrator.refuse_on_cluster()
    events = migrator.legacy_events()
    if events.pending_deliveries and not force and not drop_legacy_events:
        raise click.ClickException(pending_message(events))
    dropped = migrator.drop_legacy_events() if drop_legacy_events else None
    if not as_json:
        click.echo(f"Moving the accounts of the single-Redis layout into {GROUPS} slot groups.")
    bar = click.progressbar(
        length=max(1, migrator.count_legacy()), label="Migrating accounts", file=stderr(), show_pos=True
    )
    with bar:
        report = migrator.run(batch=batch, limit=limit, on_progress=bar.update)
    if as_json:
        click.echo(json.dumps(migration_dict(report, events, dropped), indent=2))
    else:
        for line in _migration_lines(report, events, dropped):
            click.echo(line)
    if report.problems:
        raise SystemExit(1)


def _migration_lines(report: MigrationReport, events: LegacyEvents, dropped: int | None) -> list[str]:
    lines = table(
        ["moved", "already current", "cleaned", "tokens moved", "remaining"],
        [[report.moved, report.already_current, report.cleaned, report.tokens_moved, report.remaining]],
    )
    if report.problems:
        lines.append(f"{len(report.problems)} account(s) were not moved:")
        lines += [f"  {problem}" for problem in report.problems[:MAX_PROBLEMS_SHOWN]]
        if len(report.problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(report.problems) - MAX_PROBLEMS_SHOWN} more (--json lists them all)")
    if not report.complete:
        lines.append("Stopped early (--limit): run again to go on.")
    elif report.remaining == 0 and not report.problems:
        lines.append("Every account is in the slot-group layout (`vault check` confirms).")
    if dropped is not None:
        lines.append(f"Dropped the legacy event stream and its webhook delivery state ({dropped} key(s)).")
    elif events.stream_length:
        lines.append(_legacy_events_line(events))
    return lines
