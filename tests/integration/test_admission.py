"""The in-flight count in-process: a slot is held until the answer is closed, and given back
whatever happens (the gunicorn tests in test_concurrency.py show it under real load)."""

from __future__ import annotations

import pytest

from app import create_app


@pytest.fixture
def app_with_limit(env):
    app = create_app({**env, "MAX_IN_FLIGHT": "1"})
    yield app
    app.extensions["vault"].close()


def test_a_slot_is_held_until_the_answer_is_closed(app_with_limit, auth_headers):
    client = app_with_limit.test_client()
    held = client.get("/v1/accounts", headers=auth_headers, buffered=False)  # not closed yet: in flight
    assert held.status_code == 200
    refused = client.get("/v1/accounts", headers=auth_headers)
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "overloaded"
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-Request-ID"]  # refused by the app itself: logged and shaped like any error
    assert client.get("/healthz").status_code == 200  # never counted, never refused
    held.close()
    assert client.get("/v1/accounts", headers=auth_headers).status_code == 200


def test_a_slot_is_given_back_after_an_error(app_with_limit, auth_headers):
    client = app_with_limit.test_client()
    for _ in range(3):  # errors end their request like any answer
        with client.get("/v1/accounts/nope", headers=auth_headers) as response:
            assert response.status_code == 404
        with client.get("/v1/accounts", headers={"Authorization": "Bearer wrong-key-0123456789"}) as response:
            assert response.status_code == 401
        assert app_with_limit.wsgi_app.in_flight == 0
    assert client.get("/v1/accounts", headers=auth_headers).status_code == 200


def test_an_answer_dropped_without_close_gives_its_slot_back(app_with_limit, auth_headers):
    client = app_with_limit.test_client()
    for _ in range(3):
        assert client.get("/v1/accounts", headers=auth_headers).status_code == 200  # never closed
    assert app_with_limit.wsgi_app.in_flight == 0
