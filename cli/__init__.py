"""Operator commands: `flask --app app vault ...` and `flask --app app accounts ...`.

    flask --app app vault keygen        a new VAULT_KEY (also: python -m cli keygen, with no configuration)
    flask --app app vault rotate        re-seal every record under VAULT_KEY (reads old ones with VAULT_PREVIOUS_KEYS)
    flask --app app vault check         open every record; exit 1 if any does not open
    flask --app app accounts list|show ID|delete ID
    flask --app app apikeys create NAME --allow PERMS [--scopes "..."] [--rate N/PERIOD] [--expires DAYS]
    flask --app app apikeys list [--json] | revoke NAME
    flask --app app events list [--failed]|replay ID...|--since TIME|stats|deliver

Flask builds the app (and so reads and validates the whole configuration)
before it looks up any app command, so every `flask ...` command needs the
service's environment; `python -m cli keygen` is the one that needs none.
No command ever prints a secret or sealed bytes, except `apikeys create` its new key, once.
"""

from __future__ import annotations

from flask import Flask

from cli import account_commands, apikey_commands, vault_commands
from cli.event_commands import events_group
from cli.groups import accounts_group, apikeys_group, vault_group

__all__ = ["accounts_group", "apikeys_group", "init_app", "vault_group"]

# Importing these modules registers their commands on the groups.
COMMAND_MODULES = (vault_commands, account_commands, apikey_commands)


def init_app(app: Flask) -> None:
    app.cli.add_command(vault_group)
    app.cli.add_command(accounts_group)
    app.cli.add_command(apikeys_group)
    app.cli.add_command(events_group)
