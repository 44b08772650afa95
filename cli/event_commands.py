"""`events list|replay|stats|deliver`: the outbox and the webhook deliveries, for operators (never a secret)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from typing import Any

import click
from flask.cli import AppGroup

from cli.groups import services, stderr, table, vault_errors
from events.shape import event_json
from vault.outbox import parse_id

events_group = AppGroup("events", help="Account lifecycle events: the outbox and webhook deliveries.")


def _since(ctx, param, value: str | None) -> int | None:
    """An ISO 8601 time (UTC unless it says otherwise) or epoch seconds, as epoch milliseconds."""
    if value is None:
        return None
    try:
        return int(float(value) * 1000)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("an ISO 8601 time (2026-12-01T10:00:00Z) or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _row(shown: dict) -> list[str]:
    return [shown["id"], shown["type"], shown["data"]["account_id"], shown["timestamp"]]


@events_group.command("list")
@click.option("--failed", is_flag=True, help="The events marked failed, per webhook endpoint.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="The newest this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as GET /v1/events has them.")
@vault_errors
def list_events(failed: bool, limit: int, as_json: bool) -> None:
    """The newest events in order (or, with --failed, those no endpoint took)."""
    s = services()
    if not failed:
        shown = [event_json(e) for e in s.events.outbox.last(limit)]
        for item in shown:
            if as_json:
                click.echo(json.dumps(item))
        if not as_json and shown:
            for line in table(["id", "type", "account id", "timestamp"], [_row(item) for item in shown]):
                click.echo(line)
        click.echo(f"{len(shown)} event(s)", file=stderr())
        return
    rows, count = [], 0
    for state in s.events.delivery.endpoints:
        marked = state.failed(limit)
        found = s.events.outbox.get([event_id for event_id, _ in marked])
        for event_id, when in marked:
            count += 1
            event = found.get(event_id)
            item = event_json(event) if event else {"id": event_id, "type": "(no longer retained)", "data": {}}
            failed_at = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if as_json:
                click.echo(json.dumps({"endpoint": state.id, "failed_at": failed_at, **item}))
            else:
                rows.append([state.id, item["id"], item["type"], item["data"].get("account_id", "-"), failed_at])
    if rows:
        for line in table(["endpoint", "id", "type", "account id", "failed at"], rows):
            click.echo(line)
    click.echo(f"{count} failed event(s)", file=stderr())


@events_group.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--since", callback=_since, help="Every retained event from this time on (ISO 8601 or epoch seconds).")
@click.option("--endpoint", "only", help="Only to this endpoint (its id, as `events stats` shows it).")
@vault_errors
def replay(event_ids: tuple[str, ...], since: int | None, only: str | None) -> None:
    """Deliver events again to every webhook endpoint (the same ids: receivers deduplicate)."""
    s = services()
    if bool(event_ids) == (since is not None):
        raise click.UsageError("give event ids, or --since, not both")
    for event_id in event_ids:
        if parse_id(event_id) is None:
            raise click.BadParameter(f"{event_id!r} is not an event id", param_hint="EVENT_IDS")
    if since is not None:
        events = s.events.outbox.since(since, 100_000)
    else:
        found = s.events.outbox.get(list(event_ids))
        missing = [event_id for event_id in event_ids if event_id not in found]
        if missing:
            raise click.ClickException(f"not retained (or never written): {', '.join(missing)}")
        events = [found[event_id] for event_id in event_ids]
    targets = [e for e in s.events.delivery.endpoints if only is None or e.id == only]
    if not targets:
        raise click.ClickException("no such webhook endpoint (WEBHOOK_URL)" if only else "WEBHOOK_URL is not set")
    for state in targets:
        state.replay(events)
        click.echo(f"endpoint {state.id}: {len(events)} event(s) due now")


@events_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@vault_errors
def stats(as_json: bool) -> None:
    """The outbox (length, ends, counts by type) and each endpoint's delivery (pending, retrying, failed)."""
    s = services()
    info = s.events.outbox.info()
    report: dict[str, Any] = {
        "events": {"length": info.length, "oldest": info.first_id, "newest": info.last_id, "appended": info.added},
        "by_type": s.events.outbox.counts(),
        "delivery": s.events.mode,
        "endpoints": [vars(state.stats()) for state in s.events.delivery.endpoints],
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    for name, value in report["events"].items():
        click.echo(f"{name + ':':<12}{'-' if value is None else value}")
    for kind, count in sorted(report["by_type"].items()):
        click.echo(f"  {kind:<24}{count}")
    click.echo(f"delivery:   {report['delivery']}")
    rows = [
        [e["endpoint_id"], e["lease_holder"] or "-", e["pending"], "-" if e["lag"] is None else e["lag"]]
        + [e["retrying"], e["held_accounts"], e["failed"]]
        for e in report["endpoints"]
    ]
    if rows:
        header = ["endpoint", "delivering", "pending", "unread", "retrying", "held accounts", "failed"]
        for line in table(header, rows):
            click.echo(line)


@events_group.command("deliver")
@vault_errors
def deliver() -> None:
    """Deliver webhooks in this process until SIGTERM (the Procfile's `worker`; set EVENT_DELIVERY=worker)."""
    s = services()
    if not s.events.delivery.endpoints:
        raise click.ClickException("WEBHOOK_URL is not set: nothing to deliver")
    # The handler only records the signal: Event.set() there could deadlock on the lock that
    # Event.wait() holds at the moment the signal arrives (both run in this thread).
    signals: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    s.events.delivery.start()
    click.echo(f"delivering to {len(s.events.delivery.endpoints)} endpoint(s)", file=stderr())
    while not signals:
        time.sleep(0.2)
    s.events.delivery.stop()
