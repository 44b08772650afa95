"""Operator commands: `flask --app app vault ...` and `flask --app app accounts ...`."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

vault_group = AppGroup("vault", help="Sealing keys and sealed records.")
accounts_group = AppGroup("accounts", help="Installed accounts.")


def init_app(app: Flask) -> None:
    app.cli.add_command(vault_group)
    app.cli.add_command(accounts_group)
