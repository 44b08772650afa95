"""`accounts list`, `accounts show ID`, `accounts delete ID`: what the HTTP API offers, for operators."""

from __future__ import annotations

import json

import click
from flask import g

from api.accounts import account_json, iso
from api.requestlog import audit
from cli.groups import accounts_group, services, stderr, table, vault_errors
from core import tunables
from vault.accounts import valid_account_id
from vault.rotation import key_id_of


def _account_id(ctx, param, value: str) -> str:
    if not valid_account_id(value):
        raise click.BadParameter("an account id is 1-128 of A-Z a-z 0-9 _ -")
    return value


@accounts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as GET /v1/accounts has them.")
@vault_errors
def list_accounts(as_json: bool) -> None:
    """Every installed account, in id order."""
    repository = services().accounts
    rows, cursor, count = [], None, 0
    while True:
        records, cursor = repository.page(tunables.MAX_PAGE_SIZE, cursor)
        for record in records:
            count += 1
            shown = account_json(record)
            if as_json:
                click.echo(json.dumps(shown))
            else:
                rows.append([shown["account_id"], shown["status"], shown["installed_at"], shown["updated_at"]])
        if cursor is None:
            break
    if not as_json:
        if rows:
            for line in table(["account id", "status", "installed at", "updated at"], rows):
                click.echo(line)
        click.echo(f"{count} account(s)", file=stderr())


@accounts_group.command("show")
@click.argument("account_id", callback=_account_id)
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@vault_errors
def show_account(account_id: str, as_json: bool) -> None:
    """One account: status, times, and the id of the key its credentials are sealed with (never them)."""
    s = services()
    record = s.accounts.get(account_id)
    if record is None:
        raise click.ClickException(f"account {account_id} is not installed")
    sealed = s.accounts.sealed_credentials(account_id)
    shown = {
        **account_json(record),
        "generation": record.generation,
        "revoked_until": iso(record.revoked_until) if record.revoked_until else None,
        "credentials_key_id": key_id_of(sealed),  # the key's public id, not the key and not the value
    }
    if as_json:
        click.echo(json.dumps(shown))
        return
    for name, value in shown.items():
        click.echo(f"{name + ':':<20}{'-' if value is None else value}")


@accounts_group.command("delete")
@click.argument("account_id", callback=_account_id)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@vault_errors
def delete_account(account_id: str, yes: bool) -> None:
    """Remove every trace of an account (as DELETE /v1/accounts/ID); it comes back only by re-installing."""
    s = services()
    if not yes:
        click.confirm(f"Delete account {account_id} and its cached tokens?", abort=True)
    if not s.accounts.delete(account_id, via="cli"):
        raise click.ClickException(f"account {account_id} is not installed")
    g.api_key_name = "cli"  # the audit line names who did it
    audit("account_deleted", account_id=account_id)
    click.echo(f"deleted account {account_id}")
