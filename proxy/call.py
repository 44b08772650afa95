"""One proxied call for an account: the request target, the exchange, and one retry after a refused token.

Both ways a proxied call is answered go through here: the Flask view (`api.proxy`) and, for a
call whose key and token the worker remembers, `api.hotproxy` before Flask. So the rules that
decide what is sent upstream, and when it is sent again, live in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

from werkzeug.datastructures import Headers

from auth.tokens import IssuedToken, Source, TokenService
from core.deadline import FetchDeadline
from core.errors import InvalidPath
from proxy.upstream import TrackunitApi, UpstreamResponse, forwarded_headers

ROUTE_SEGMENTS = 5  # "", "v1", "accounts", the account id, "proxy"; the upstream path is the rest
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")  # scheme "://" authority (RFC 3986)


def raw_target(environ: Mapping[str, object], fallback: str = "") -> tuple[str, str]:
    """The path below the route's `/proxy/` and the query, exactly as the caller sent them (still encoded).

    Found by position, not by searching for "/proxy/": the route is
    `/v1/accounts/<account_id>/proxy/<path>`, so the upstream path is what follows the fifth '/'
    of the raw path, whatever the account id is (`proxy` included). `fallback`: the target to use
    when the server kept no raw one (Flask's `request.full_path`).
    """
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or fallback)
    if not raw.startswith("/"):
        # Absolute-form (http://host/v1/...): the path is what follows the authority. Anything else
        # ("x:/v1/...") could put a second route-shaped path later in the target than the one routed.
        authority = _ABSOLUTE_FORM.match(raw)
        if authority is None or not raw[authority.end() :].startswith("/"):
            raise InvalidPath("The request target is not a path or an absolute URL.")
        raw = raw[authority.end() :]
    path, _, query = raw.partition("?")
    script = str(environ.get("SCRIPT_NAME", ""))  # the operator's mount point; never a client header
    if script and path.startswith(script + "/"):
        path = path[len(script) :]
    parts = path.split("/", ROUTE_SEGMENTS)
    # The route's segments, decoded, must be the ones Flask routed (PATH_INFO is the decoded path):
    # an encoded "/" in one of them, or an empty one ("//v1/..."), would move the upstream path.
    if (
        len(parts) <= ROUTE_SEGMENTS
        or unquote(parts[1]) != "v1"
        or unquote(parts[2]) != "accounts"
        or "/" in unquote(parts[3])
        or unquote(parts[4]) != "proxy"
    ):
        raise InvalidPath("A path below the API is required.")
    return parts[ROUTE_SEGMENTS], query


def exchange(
    tokens: TokenService,
    api: TrackunitApi,
    method: str,
    url: str,
    incoming: Mapping[str, str] | Headers,
    body: bytes | None,
    token: IssuedToken,
    account_id: str,
    scope: str | None,
) -> tuple[UpstreamResponse, FetchDeadline]:
    """Send the call with `token`; the answer and its started deadline, which the caller closes when it is sent.

    A 401 to a cached token (revoked early, say) gets one forced refresh and one retry, unless the
    refresh hands back this very token (a forced refresh fetched it within FORCE_REFRESH_FLOOR).
    Raises the service's errors (UpstreamTimeout, UpstreamUnavailable, a refresh's refusal), with
    everything it opened closed.
    """
    deadline = api.deadline()  # over the whole exchange: both sends, and the answer's last byte
    upstream = None
    try:
        upstream = api.send(method, url, forwarded_headers(incoming, token.access_token), body, deadline)
        if upstream.status == 401 and token.source is Source.CACHE:
            refreshed = tokens.get_token(account_id, scope, force_refresh=True)
            if refreshed.access_token != token.access_token:
                upstream.close()
                upstream = api.send(method, url, forwarded_headers(incoming, refreshed.access_token), body, deadline)
    except BaseException:
        if upstream is not None:
            close_call(upstream, deadline)  # e.g. the forced refresh after a 401 failed: never sent
        else:
            deadline.close()
        raise
    return upstream, deadline


def close_call(upstream: UpstreamResponse, deadline: FetchDeadline) -> None:
    """End a call: its connection closed (dropped if its answer is unread), then its deadline, come what may."""
    try:
        upstream.close()
    finally:
        deadline.close()
