"""proxy.call.raw_target: the upstream path and query, found by position in the request target as sent."""

from __future__ import annotations

import pytest

from core.errors import InvalidPath
from proxy.call import raw_target

A = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RAW_URI": f"/v1/accounts/{A}/proxy/api/x?q=1&r=%20"}, ("api/x", "q=1&r=%20")),
        ({"RAW_URI": f"/v1/accounts/{A}/proxy/api/a%2Fb"}, ("api/a%2Fb", "")),  # still encoded
        ({"RAW_URI": f"/v1/accounts/{A}/prox%79/api/x"}, ("api/x", "")),  # the route's segment, decoded
        ({"RAW_URI": "/v1/accounts/proxy/proxy/api/x"}, ("api/x", "")),  # by position, whatever the id
        ({"RAW_URI": f"http://vault.example:8000/v1/accounts/{A}/proxy/api/x?q"}, ("api/x", "q")),
        ({"REQUEST_URI": f"/v1/accounts/{A}/proxy/api/x"}, ("api/x", "")),
        ({"RAW_URI": f"/base/v1/accounts/{A}/proxy/api/x", "SCRIPT_NAME": "/base"}, ("api/x", "")),
    ],
)
def test_the_upstream_path_and_query_as_sent(environ, expected):
    assert raw_target(environ) == expected


def test_without_a_raw_target_the_fallback_is_read():
    assert raw_target({}, f"/v1/accounts/{A}/proxy/api/x?") == ("api/x", "")


@pytest.mark.parametrize(
    "target",
    [
        f"/v1/accounts/{A}/token",
        f"/v1/accounts/{A}/proxy",
        f"/v1/accounts/{A}/proxy%2Fapi/x",  # "proxy/api" is not the route's segment
        # An encoded "/" or an empty segment would shift the route against the decoded path Flask routes.
        f"/v1/accounts/{A}%2Fproxy%2Fapi/proxy/x",
        f"/v1/accounts%2F{A}/proxy/proxy/x",
        "//v1/accounts/proxy/proxy/x",
        # Not absolute-form ("x:" then one slash): a route-shaped path after "//" must not be taken instead
        # of the one the request was routed by.
        f"x:/v1/accounts/{A}/proxy/a://h/v1/accounts/{A}/proxy/api/z",
        "http://vault.example",
        "http://vault.example?x=1",
        "*",
    ],
)
def test_a_target_without_a_path_below_the_route_is_refused(target):
    with pytest.raises(InvalidPath):
        raw_target({"RAW_URI": target})


def test_closing_a_call_closes_its_deadline_even_when_the_connection_fails_to_close():
    from proxy.call import close_call
    from proxy.upstream import UpstreamResponse

    class Deadline:
        closed = False

        def close(self):
            self.closed = True

    def failing():
        raise OSError("the socket is gone")

    deadline = Deadline()
    with pytest.raises(OSError):
        close_call(UpstreamResponse(200, [], iter(()), failing), deadline)  # type: ignore[arg-type]
    assert deadline.closed
