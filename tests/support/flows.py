"""Steps several test modules share: asking for tokens, waiting for a condition (installing: `installer`)."""

from __future__ import annotations

import time

from tests.support.constants import ACCOUNT


def get_token(client, headers, account_id: str = ACCOUNT, **params):
    return client.get(f"/v1/accounts/{account_id}/token", query_string=params, headers=headers)


def ok_token(client, headers, account_id: str = ACCOUNT, **params) -> dict:
    response = get_token(client, headers, account_id, **params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def wait_for(condition, timeout: float = 10.0):
    """Poll `condition` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")
