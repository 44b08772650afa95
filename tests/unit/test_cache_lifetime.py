"""How long a token is cached (`auth.tokens.cache_lifetime`) and how Trackunit's answers are judged
(`auth.trackunit.TrackunitAuth`, against the simulator over real HTTP; no Redis involved).
"""

from __future__ import annotations

import pytest

from auth.fetcher import cache_lifetime
from auth.trackunit import TokenGrant, TrackunitAuth
from core import tunables
from core.errors import AuthError, AuthUnavailable, CredentialsRevoked, ScopeNotGranted
from tests.support.redis_server import free_port

ACCOUNT = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"
SCOPES = ("account.view", "asset.view")


# cache_lifetime -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expires_in, margin, ttl, window",
    [
        (3600, 300, 3300, 30.0),  # Trackunit's usual answer: 5 minutes early, refresh in the last 30 s
        (3600, 0, 3600, 30.0),
        (1051, 300, 751, 30.0),  # 4% of 751 s is just over 30 s: capped
        (600, 300, 300, 12.0),  # 4% of the cache lifetime
        (300, 300, 150, 6.0),  # the default lifetime when expires_in is missing
        (100, 300, 50, 2.0),  # a margin longer than the lifetime shrinks to half of it
        (25, 0, 25, 1.0),  # short-lived: refresh ahead in the last 4%
        (2, 300, 1, 0.04),
        (1, 300, 1, 0.04),  # margin floor(1/2) = 0: still cached for its whole second
    ],
)
def test_cache_lifetime_table(expires_in, margin, ttl, window):
    assert cache_lifetime(expires_in, margin) == (ttl, pytest.approx(window))


@pytest.mark.parametrize("margin", [0, 1, 30, 300, 3600, 86400])
def test_cache_lifetime_invariants(margin):
    for expires_in in [*range(1, 700), 3599, 3600, 7200, 86400]:
        ttl, window = cache_lifetime(expires_in, margin)
        assert isinstance(ttl, int)
        assert 0 < ttl <= expires_in
        assert ttl >= expires_in / 2, "never cached for less than half the token's life"
        assert ttl == expires_in - min(margin, expires_in // 2)
        assert 0 < window <= tunables.REFRESH_AHEAD_SECONDS
        assert window <= ttl * tunables.REFRESH_AHEAD_FRACTION + 1e-9
        assert ttl - window >= ttl * (1 - tunables.REFRESH_AHEAD_FRACTION) - 1e-9


# TrackunitAuth against the simulator -----------------------------------------------------------------


@pytest.fixture
def creds(sim):
    return sim.add_account(ACCOUNT, SCOPES)


@pytest.fixture
def auth(sim_server):
    return TrackunitAuth(f"{sim_server.url}/apptoken")


def fetch(auth, creds, scopes=SCOPES):
    return auth.fetch_token(creds["clientId"], creds["clientSecret"], scopes)


def answer_200(sim, body) -> None:
    """Make the simulator's token endpoint answer 200 with exactly `body` (a JSON object, or text)."""
    sim.configure(fail_status=200, fail_body=body)


def refused(auth, creds, error: type[Exception]) -> Exception:
    """The exception `fetch` raises, checked to be `error` and to carry no secret."""
    with pytest.raises(error) as info:
        fetch(auth, creds)
    text = f"{info.value} {info.value!r} {getattr(info.value, 'message', '')}"
    assert creds["clientSecret"] not in text
    return info.value


def test_grant_from_a_real_answer(auth, creds, sim):
    grant = fetch(auth, creds)
    assert isinstance(grant, TokenGrant)
    assert grant.token_type == "Bearer"
    assert grant.expires_in == 3600
    assert grant.scope == "account.view asset.view"
    assert grant.access_token.startswith("sim-")
    assert grant.access_token not in repr(grant)
    assert sim.token_requests == 1
    assert sim.last_token_request == {
        "grant_type": "client_credentials",
        "client_id": creds["clientId"],
        "scope": "account.view asset.view",
        "content_type": "application/x-www-form-urlencoded",
    }


@pytest.mark.parametrize(
    "body, expires_in, scope",
    [
        ({"access_token": "t", "token_type": "Bearer", "expires_in": 3600, "scope": "asset.view"}, 3600, "asset.view"),
        ({"access_token": "t", "token_type": "bearer", "expires_in": 60}, 60, ""),  # case-insensitive; no scope
        ({"access_token": "t", "expires_in": 60}, 60, ""),  # token_type missing: Bearer
        ({"access_token": "t", "token_type": "Bearer", "expires_in": "120"}, 120, ""),  # a number as a string
        ({"access_token": "t", "token_type": "Bearer"}, tunables.DEFAULT_EXPIRES_IN, ""),  # missing: short, not forever
        ({"access_token": "t", "token_type": "Bearer", "expires_in": 1, "extra": [1, 2]}, 1, ""),
    ],
)
def test_acceptable_answers(auth, creds, sim, body, expires_in, scope):
    answer_200(sim, body)
    grant = fetch(auth, creds)
    assert (grant.access_token, grant.token_type, grant.expires_in, grant.scope) == ("t", "Bearer", expires_in, scope)


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer", "expires_in": 3600},  # no access_token
        {"access_token": "", "token_type": "Bearer", "expires_in": 3600},
        {"access_token": 42, "token_type": "Bearer", "expires_in": 3600},
        {"access_token": "t", "token_type": "MAC", "expires_in": 3600},
        {"access_token": "t", "token_type": None, "expires_in": 3600},
        {"access_token": "t", "token_type": "Bearer", "expires_in": 0},
        {"access_token": "t", "token_type": "Bearer", "expires_in": -60},
        {"access_token": "t", "token_type": "Bearer", "expires_in": "soon"},
        {"access_token": "t", "token_type": "Bearer", "expires_in": "-5"},
        {"access_token": "t", "token_type": "Bearer", "expires_in": True},
        {"access_token": "t", "token_type": "Bearer", "expires_in": [3600]},
        {"access_token": "t", "token_type": "Bearer", "expires_in": 3600, "scope": ["asset.view"]},
        "<html>maintenance</html>",
        '["access_token", "t"]',
        "",
    ],
)
def test_unacceptable_200_answers_are_auth_errors(auth, creds, sim, body):
    answer_200(sim, body)
    refused(auth, creds, AuthError)
    assert sim.token_requests == 1  # an unusable answer is not retried


def test_oversized_answer_is_refused_unread(auth, creds, sim):
    padding = "x" * (tunables.MAX_TOKEN_RESPONSE_BYTES + 1)
    answer_200(sim, {"access_token": "t", "token_type": "Bearer", "expires_in": 60, "padding": padding})
    refused(auth, creds, AuthError)


def test_invalid_scope_means_not_granted(auth, creds):
    with pytest.raises(ScopeNotGranted):
        fetch(auth, creds, ("account.alert.view",))  # the simulator's client was not granted it


@pytest.mark.parametrize(
    "status, body",
    [(401, {"error": "invalid_client"}), (400, {"error": "invalid_client"}), (400, {"error": "unauthorized_client"})],
)
def test_refused_client_means_revoked(auth, creds, sim, status, body):
    sim.configure(fail_status=status, fail_body=body)
    refused(auth, creds, CredentialsRevoked)
    assert sim.token_requests == 1


def test_revoked_at_the_simulator_means_revoked(auth, creds, sim):
    sim.revoke(ACCOUNT)
    refused(auth, creds, CredentialsRevoked)


@pytest.mark.parametrize(
    "status, body, in_message, not_in_message",
    [
        (400, {"error": "unsupported_grant_type"}, "unsupported_grant_type", None),
        (400, {"error": "invalid_request", "error_description": "details"}, "invalid_request", "details"),
        (403, {"error": "access_denied"}, "403", None),
        (400, {"error": "<script>alert(1)</script>"}, "no error code", "<script>"),
        (400, {"error": "x" * 65}, "no error code", "x" * 65),
        (400, {"error": 7}, "no error code", None),
        (404, "<html>not found</html>", "404", "html"),
        (302, {}, "302", None),
    ],
)
def test_other_answers_are_auth_errors_naming_the_code(auth, creds, sim, status, body, in_message, not_in_message):
    sim.configure(fail_status=status, fail_body=body)
    error = refused(auth, creds, AuthError)
    assert in_message in error.message
    if not_in_message:
        assert not_in_message not in error.message
    assert sim.token_requests == 1


@pytest.mark.parametrize("status", [429, 503])  # every retryable status, through the API: test_token_failures.py
def test_retryable_statuses_are_retried_then_unavailable(auth, creds, sim, status):
    sim.configure(fail_status=status)
    error = refused(auth, creds, AuthUnavailable)
    assert str(status) in error.message
    assert error.retry_after and error.retry_after >= 1
    assert sim.token_requests == 1 + tunables.TRACKUNIT_RETRIES


def test_transient_failure_then_success(auth, creds, sim):
    sim.configure(fail_status=502, fail_count=1)
    assert fetch(auth, creds).expires_in == 3600
    assert sim.token_requests == 2


def test_unreachable_endpoint_is_unavailable(creds):
    auth = TrackunitAuth(f"http://127.0.0.1:{free_port()}/apptoken")
    refused(auth, creds, AuthUnavailable)
