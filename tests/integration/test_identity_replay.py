"""A verified Trackunit-Identity token is tied to the message it came with."""
from tests.conftest import APP_ID
from tests.support.flows import ACCOUNT


def message(sim, **changes) -> dict:
    creds = sim.add_account(ACCOUNT, ("asset.view", "account.view"), APP_ID)
    return {"type": "INSTALLED", "irisAppId": APP_ID, "accountId": ACCOUNT,
            "clientId": creds["clientId"], "clientSecret": creds["clientSecret"], **changes}


def test_the_same_message_again_is_accepted(client, sim):
    token = sim.identity_token({"irisAppId": APP_ID, "accountId": ACCOUNT})
    body = message(sim)
    for _ in range(2):  # Trackunit retrying after a lost answer
        response = client.post("/appinstall", json=body, headers={"Trackunit-Identity": token})
        assert response.status_code == 200


def test_the_same_token_with_other_credentials_is_refused_and_changes_nothing(client, sim, redis_client):
    token = sim.identity_token({"irisAppId": APP_ID, "accountId": ACCOUNT})
    assert client.post("/appinstall", json=message(sim), headers={"Trackunit-Identity": token}).status_code == 200
    before = {k: redis_client.dump(k) for k in redis_client.keys("test:account:*")}
    forged = message(sim, clientId="0oaATTACKER000000000", clientSecret="attacker-secret")
    response = client.post("/appinstall", json=forged, headers={"Trackunit-Identity": token})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_identity"
    assert {k: redis_client.dump(k) for k in redis_client.keys("test:account:*")} == before


def test_the_same_token_cannot_uninstall(client, sim, auth_headers):
    token = sim.identity_token({"irisAppId": APP_ID, "accountId": ACCOUNT})
    assert client.post("/appinstall", json=message(sim), headers={"Trackunit-Identity": token}).status_code == 200
    response = client.post("/appinstall", json={"type": "UNINSTALLED", "irisAppId": APP_ID, "accountId": ACCOUNT},
                           headers={"Trackunit-Identity": token})
    assert response.status_code == 401
    assert client.get(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 200
