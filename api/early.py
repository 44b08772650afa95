"""What the answers made before Flask share (`api.hotpath`, `api.hotproxy`): the middleware, the caller
from memory, and a failure that leaves the request to the app."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from api.context import EXTENSION
from auth.callers import Caller

if TYPE_CHECKING:
    from flask import Flask

    from app import Services

T = TypeVar("T")


class EarlyAnswers:
    """WSGI middleware in front of the Flask app (inside `api.admission.Admission`) that answers some requests."""

    def __init__(self, app: Callable, flask_app: Flask) -> None:
        self.app = app
        self._flask = flask_app

    @property
    def services(self) -> Services:
        return self._flask.extensions[EXTENSION]


def remembered_caller(services: Services, environ: dict) -> Caller | None:
    """The caller of the request's `Authorization: Bearer` key if this worker can tell it without Redis."""
    scheme, _, presented = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return None
    return services.api_keys.remembered(presented)


def attempt(log: logging.Logger, what: str, prepare: Callable[[], T | None]) -> T | None:
    """`prepare()`; None if it failed. Nothing is sent or counted before it returns: the app answers instead."""
    try:
        return prepare()
    except Exception as exc:
        where = "".join(traceback.format_tb(exc.__traceback__)[-3:])  # never the exception's text
        log.error("%s path failed (%s), the app answers instead\n%s", what, type(exc).__name__, where)
        return None
