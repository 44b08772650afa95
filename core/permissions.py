"""What an API key may do: its permissions, scope ceiling and rate limit, parsed from text (no Flask, no Redis)."""

from __future__ import annotations

import dataclasses
import enum
import re


class Permission(enum.StrEnum):
    """One permission of an API key (README "Keys and permissions"); `admin` holds every other one."""

    TOKEN_READ = "token:read"  # GET /v1/accounts/{id}/token: the raw token leaves the vault
    PROXY_READ = "proxy:read"  # proxy calls with GET or HEAD
    PROXY_WRITE = "proxy:write"  # proxy calls with every served method
    ACCOUNTS_READ = "accounts:read"  # GET /v1/accounts, GET /v1/accounts/{id}
    ACCOUNTS_DELETE = "accounts:delete"  # DELETE /v1/accounts/{id}
    EVENTS_READ = "events:read"  # the event feed (/v1/events)
    ADMIN = "admin"  # all of the above, and every /v1 path no other permission names


EVERY = frozenset(Permission)
# What holding a permission grants besides itself: proxy:write is every method, so GET and HEAD too.
_IMPLIES = {Permission.ADMIN: EVERY, Permission.PROXY_WRITE: frozenset({Permission.PROXY_READ})}
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# The moving window keeps one Redis list entry per request within the window, so N is bounded.
MAX_RATE = 999_999
_RATE = re.compile(r"^([1-9][0-9]{0,5})/(second|minute|hour|day)$")
_SCOPE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_LIST_SEPARATORS = re.compile(r"[\s,+]+")


class PolicyError(ValueError):
    """A permission list, scope ceiling or rate cannot be parsed (the message quotes only that text)."""


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """`amount` requests per moving window of `period` (second, minute, hour or day)."""

    amount: int
    period: str

    @property
    def seconds(self) -> int:
        return PERIODS[self.period]

    def __str__(self) -> str:
        return f"{self.amount}/{self.period}"


@dataclasses.dataclass(frozen=True)
class KeyPolicy:
    """What one key may do: `permissions` (implied ones included), a scope ceiling (None: any), a rate (None: none)."""

    permissions: frozenset[Permission] = EVERY
    scopes: frozenset[str] | None = None
    rate: RateLimit | None = None

    def allows(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def named(self) -> list[str]:
        """The permissions as an operator wrote them: `admin` alone when it holds all, else the sorted list."""
        if Permission.ADMIN in self.permissions:
            return [Permission.ADMIN.value]
        return sorted(p.value for p in self.permissions)


ADMIN = KeyPolicy()


def parse_permissions(text: str) -> frozenset[Permission]:
    """`proxy:read+accounts:read` (or separated by commas or spaces) → the permissions, implied ones added."""
    names = [name for name in _LIST_SEPARATORS.split(text.strip()) if name]
    if not names:
        raise PolicyError("no permission given")
    found: set[Permission] = set()
    for name in names:
        try:
            permission = Permission(name)
        except ValueError:
            raise PolicyError(f"{name[:40]!r} is not a permission (one of {', '.join(Permission)})") from None
        found |= {permission, *_IMPLIES.get(permission, ())}
    return frozenset(found)


def parse_scopes(text: str) -> frozenset[str]:
    """A scope ceiling: scope names separated by spaces, commas or `+`."""
    scopes = [scope for scope in _LIST_SEPARATORS.split(text.strip()) if scope]
    if not scopes:
        raise PolicyError("the scope ceiling is empty")
    for scope in scopes:
        if not _SCOPE.match(scope):
            raise PolicyError(f"{scope[:40]!r} is not a scope name")
    return frozenset(scopes)


def parse_rate(text: str) -> RateLimit:
    """`N/PERIOD`: N from 1 to MAX_RATE, PERIOD one of second, minute, hour, day (`20/second`)."""
    match = _RATE.match(text.strip())
    if match is None:
        raise PolicyError(
            f"{text[:40]!r} is not a rate: write N/second, N/minute, N/hour or N/day, N from 1 to {MAX_RATE}"
        )
    return RateLimit(int(match[1]), match[2])
