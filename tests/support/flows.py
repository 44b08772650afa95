"""Steps several test modules share: installing as Trackunit does, asking for tokens."""
from __future__ import annotations

import time

from tests.conftest import APP_ID

ACCOUNT = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"


def install(client, sim, account_id: str = ACCOUNT, scopes=("asset.view", "account.view")) -> dict:
    """Install as Trackunit does: new credentials at the simulator, the INSTALLED callback signed with its key."""
    creds = sim.add_account(account_id, scopes, APP_ID)
    body = {"type": "INSTALLED", "irisAppId": APP_ID, "accountId": account_id,
            "clientId": creds["clientId"], "clientSecret": creds["clientSecret"]}
    identity = sim.identity_token({"irisAppId": APP_ID, "accountId": account_id})
    response = client.post("/appinstall", json=body, headers={"Trackunit-Identity": identity})
    assert response.status_code == 200, response.get_data(as_text=True)
    return creds


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
