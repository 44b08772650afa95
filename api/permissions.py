"""Which permission a `/v1` request needs: the one table of route endpoint (and method) → permission.

A `/v1` path that no entry names needs `admin`: a route added later is closed to every scoped key
until it is given its permission here (deny by default).
"""

from __future__ import annotations

from core.permissions import Permission

READ_METHODS = frozenset({"GET", "HEAD"})

# Flask endpoint -> (permission for GET/HEAD, permission for every other method).
BY_ENDPOINT: dict[str, tuple[Permission, Permission]] = {
    "tokens.get_token": (Permission.TOKEN_READ, Permission.TOKEN_READ),
    "proxy.proxy": (Permission.PROXY_READ, Permission.PROXY_WRITE),
    "accounts.list_accounts": (Permission.ACCOUNTS_READ, Permission.ACCOUNTS_READ),
    "accounts.show_account": (Permission.ACCOUNTS_READ, Permission.ACCOUNTS_READ),
    "accounts.delete_account": (Permission.ACCOUNTS_DELETE, Permission.ACCOUNTS_DELETE),
    "events.list_events": (Permission.EVENTS_READ, Permission.ADMIN),  # the feed; it serves GET only
}


def required(endpoint: str | None, method: str) -> Permission:
    """The permission a request needs (`endpoint` None: no route matched)."""
    is_read = method in READ_METHODS
    entry = BY_ENDPOINT.get(endpoint) if endpoint is not None else None
    if entry is not None:
        return entry[0] if is_read else entry[1]
    return Permission.ADMIN
