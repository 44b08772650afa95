"""Which scopes a token is for: parsing a request's scopes against the app manifest.

Scope order and duplicates never matter: the same set always normalises to the
same tuple, and so to the same cache slot (`scope_id`).
"""

from __future__ import annotations

import hashlib
import re

from core.config import AppScopes
from core.errors import InvalidScope

_SEPARATORS = re.compile(r"[\s,]+")
MAX_SCOPE_PARAM = 4096


def requested_scopes(raw: str | None, app_scopes: AppScopes) -> tuple[str, ...]:
    """The sorted, de-duplicated scopes asked for; none → the manifest's required scopes."""
    if raw is None or not raw.strip():
        if not app_scopes.required:
            raise InvalidScope("The app has no required scopes: name the scopes you need.")
        return app_scopes.required
    if len(raw) > MAX_SCOPE_PARAM:
        raise InvalidScope("Too many scopes requested.")
    scopes = sorted({s for s in _SEPARATORS.split(raw) if s})
    if not scopes:  # only separators: the same as naming none
        return requested_scopes(None, app_scopes)
    unknown = [s for s in scopes if s not in app_scopes.all]
    if unknown:
        shown = ", ".join(repr(s[:64]) for s in unknown[:5])
        raise InvalidScope(f"Not in the app manifest (APP_SCOPES): {shown}.")
    return tuple(scopes)


def scope_id(scopes: tuple[str, ...]) -> str:
    """A short, stable name for a scope set, used in Redis key names."""
    return hashlib.blake2b(" ".join(scopes).encode(), digest_size=8).hexdigest()
