"""`apikeys create NAME`, `apikeys list`, `apikeys revoke NAME`: managed API keys, seen by every worker within 1 s."""

from __future__ import annotations

import json
import time

import click
from flask import g

from api.accounts import iso
from api.requestlog import audit
from cli.groups import apikeys_group, services, stderr, table, vault_errors
from core import logs
from core.config import ConfigError, scope_ceiling, valid_key_name
from core.permissions import KeyPolicy, PolicyError, parse_permissions, parse_rate, parse_scopes
from vault.apikeys import ManagedKey

_NAME_HELP = "1-64 of A-Z a-z 0-9 _ . - (named in audit lines; never the key)"


def _name(ctx, param, value: str) -> str:
    if not valid_key_name(value):  # the same rule as API_KEYS names
        raise click.BadParameter(f"a name is {_NAME_HELP}")
    return value


@apikeys_group.command("create")
@click.argument("name", callback=_name)
@click.option("--allow", "allow", required=True, help="Permissions, comma-separated: token:read, proxy:read, ...")
@click.option("--scopes", default=None, help='Scope ceiling, e.g. "asset.view account.view" (default: none).')
@click.option("--rate", default=None, help="Rate limit N/PERIOD, PERIOD one of second, minute, hour, day.")
@click.option("--expires", type=click.IntRange(min=1), default=None, help="Days until the key stops working.")
@vault_errors
def create(name: str, allow: str, scopes: str | None, rate: str | None, expires: int | None) -> None:
    """A new key NAME; the key is printed once, on stdout, and never stored (only its keyed digest)."""
    s = services()
    if any(key.name == name for key in s.config.api_keys):
        raise click.ClickException(f"{name} is the name of an API_KEYS entry: choose another")
    try:
        policy = KeyPolicy(
            permissions=parse_permissions(allow),
            scopes=scope_ceiling(parse_scopes(scopes), s.config.app_scopes) if scopes is not None else None,
            rate=parse_rate(rate) if rate is not None else None,
        )
    except (PolicyError, ConfigError) as exc:
        raise click.BadParameter(str(exc)) from None
    now = time.time()
    key = s.managed_keys.create(name, policy, expires=int(now) + expires * 86400 if expires else None, now=now)
    if key is None:
        raise click.ClickException(f"a managed key named {name} exists: revoke it first")
    logs.REDACTION.add_secrets([key])  # whatever this process logs from here on cannot show it
    g.api_key_name = "cli"  # the audit line names who did it
    audit("apikey_created", apikey=name, permissions=policy.named)
    click.echo(key)
    click.echo(f"created key {name}: store it now, it is not shown again", file=stderr())


@apikeys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@vault_errors
def list_keys(as_json: bool) -> None:
    """Every managed key: name, permissions, scope ceiling, rate, created, expires, last used (never the key)."""
    records = services().managed_keys.all()
    shown = [_shown(record) for record in records]
    if as_json:
        for item in shown:
            click.echo(json.dumps(item))
        return
    header = ["name", "permissions", "scopes", "rate", "created", "expires", "last used"]
    rows = [[("-" if item[h] is None else item[h]) for h in _FIELDS] for item in shown]
    if rows:
        for line in table(header, rows):
            click.echo(line)
    click.echo(f"{len(rows)} managed key(s)", file=stderr())


_FIELDS = ("name", "permissions", "scopes", "rate", "created", "expires", "last_used")


def _shown(record: ManagedKey) -> dict[str, str | None]:
    policy = record.policy
    return {
        "name": record.name,
        "permissions": ",".join(policy.named) or None,
        "scopes": " ".join(sorted(policy.scopes)) if policy.scopes is not None else None,
        "rate": str(policy.rate) if policy.rate is not None else None,
        "created": iso(record.created),
        "expires": iso(record.expires) if record.expires is not None else None,
        "last_used": iso(record.last_used) if record.last_used is not None else None,
        "vault_key_id": record.kid,  # the public id of the vault key its digest is under (rotation)
    }


@apikeys_group.command("revoke")
@click.argument("name", callback=_name)
@vault_errors
def revoke(name: str) -> None:
    """Remove key NAME: refused by every worker within a second."""
    if not services().managed_keys.revoke(name):
        raise click.ClickException(f"no managed key named {name}")
    g.api_key_name = "cli"
    audit("apikey_revoked", apikey=name)
    click.echo(f"revoked key {name}")
