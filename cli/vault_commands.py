"""`vault keygen`, `vault rotate`, `vault check`: sealing keys and the sealed records in Redis."""

from __future__ import annotations

import dataclasses
import json

import click

from cli.groups import services, stderr, table, vault_errors, vault_group
from events.signing import generate_secret
from vault.keys import generate_key, parse_key
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
    return Rotation(s.redis, s.config.keyring, s.accounts.keys, s.config.iris_app_id)


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
    """Open every record with the configured keys and count them per key id.

    Lists every record that does not open (account id and which record, never
    its content). Exit status 1 if any does not open.
    """
    rotation = _rotation()
    with _progress(rotation, "Checking accounts") as bar:
        report = rotation.check(batch=batch, on_progress=_advance(bar))
    if as_json:
        click.echo(json.dumps(report_dict(report), indent=2))
    else:
        click.echo(f"{report.records} record(s); current key id {report.current_key_id} (VAULT_KEY).")
        for line in [*_report_lines(report), *_problem_lines(report)]:
            click.echo(line)
        older = sum(sum(c.values()) for kid, _, c in report.rows() if kid != report.current_key_id)
        if older:
            click.echo(
                f"{older} record(s) are not under the current key: run `vault rotate` before dropping a previous key."
            )
    if report.problems:
        raise SystemExit(1)
