"""The running app's services, typed: `services()` rather than `current_app.extensions["vault"]`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from app import Services

EXTENSION = "vault"  # the key under app.extensions (create_app puts the Services there)


def services() -> Services:
    """The Services of the app handling the current request (or CLI command)."""
    return current_app.extensions[EXTENSION]
