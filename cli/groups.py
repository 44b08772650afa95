"""The command groups and what their commands share: the services, error handling, tables."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from core.errors import VaultError

if TYPE_CHECKING:
    from app import Services

vault_group = AppGroup("vault", help="Sealing keys and sealed records.")
accounts_group = AppGroup("accounts", help="Installed accounts (never their credentials).")
apikeys_group = AppGroup("apikeys", help="Managed API keys: create (printed once), list, revoke.")

F = TypeVar("F", bound=Callable)


def services() -> Services:
    """The app's `Services`, built once by create_app."""
    return current_app.extensions["vault"]  # where create_app puts them (as api.context.services reads them)


def vault_errors(command: F) -> F:
    """A service error (Redis down, ...) ends the command with its one-line message, exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except VaultError as exc:
            raise click.ClickException(exc.message) from None

    return wrapper  # type: ignore[return-value]


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Left-aligned text columns, numbers right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(header))]
    return [
        "  ".join(cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(row, widths, numeric)).rstrip()
        for row in cells
    ]


def stderr():
    """The current sys.stderr (looked up at call time: click's CliRunner replaces it)."""
    return sys.stderr
