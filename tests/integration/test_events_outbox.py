"""The outbox: every account change writes its event in the same script, and the feed shows them in order.

Against a real redis-server and the simulator as Trackunit; the app in process (Flask's test client).
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.support.constants import ACCOUNT, APP_ID, GRANTED
from tests.support.flows import ok_token, wait_for
from vault.layout import KeySpace
from vault.outbox import parse_id

KEYS = KeySpace("test")

OTHER = "acc-other"


def feed(client, headers, **params) -> dict:
    response = client.get("/v1/events", query_string=params, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def types_of(client, headers, account_id: str = ACCOUNT) -> list[str]:
    return [e["type"] for e in feed(client, headers, limit=500)["events"] if e["data"]["account_id"] == account_id]


def test_an_account_life_is_told_in_order(installer, make_app, auth_headers, sim):
    # Each forced refresh below must ask Trackunit: main bounds them with FORCE_REFRESH_FLOOR (unknown here).
    client = make_app(FORCE_REFRESH_FLOOR="0").test_client()
    installer = installer.to(client)
    installer.install()
    assert types_of(client, auth_headers) == ["account.installed"]
    ok_token(client, auth_headers)
    ok_token(client, auth_headers, force_refresh="true")  # a second token of the same credentials: no event
    assert types_of(client, auth_headers) == ["account.installed", "account.verified"]
    installer.install()  # new credentials: verified again once they work
    ok_token(client, auth_headers, force_refresh="true")
    sim.revoke(ACCOUNT)
    assert client.get(f"/v1/accounts/{ACCOUNT}/token?force_refresh=true", headers=auth_headers).status_code == 410
    assert client.delete(f"/v1/accounts/{ACCOUNT}", headers=auth_headers).status_code == 204
    events = [e for e in feed(client, auth_headers)["events"] if e["data"]["account_id"] == ACCOUNT]
    assert [e["type"] for e in events] == [
        "account.installed",
        "account.verified",
        "account.reinstalled",
        "account.verified",
        "account.revoked",
        "account.deleted",
    ]
    installed, verified, reinstalled, _, revoked, deleted = (e["data"] for e in events)
    assert installed.keys() == {"account_id", "iris_app_id", "installed_at"} and installed["iris_app_id"] == APP_ID
    assert verified["scope"] == "account.view asset.view"
    assert reinstalled.keys() == {"account_id", "iris_app_id", "installed_at", "updated_at"}
    assert revoked["retry_after"] >= 1
    assert deleted["via"] == "api"
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids) and all(e["timestamp"].endswith("Z") for e in events)


def test_a_revoked_account_that_works_again_is_reactivated(installer, make_app, auth_headers, sim):
    client = make_app(REVOKED_RETRY_AFTER="1").test_client()
    installer = installer.to(client)
    installer.install()
    sim.revoke(ACCOUNT)
    token_url = f"/v1/accounts/{ACCOUNT}/token"
    assert client.get(token_url, headers=auth_headers).status_code == 410
    installer.install()  # a re-install of a revoked account: it works again
    assert types_of(client, auth_headers)[-3:] == ["account.revoked", "account.reinstalled", "account.reactivated"]

    # Revoked again, then Trackunit accepts the same credentials once more: the next probe reactivates it.
    creds = installer.credentials()
    assert installer.post(installer.message(creds=creds)).status_code == 200
    sim.revoke(ACCOUNT)
    assert client.get(token_url, headers=auth_headers).status_code == 410
    sim.add_account(ACCOUNT, GRANTED, APP_ID, client_id=creds["clientId"], client_secret=creds["clientSecret"])
    wait_for(lambda: client.get(token_url, headers=auth_headers).status_code == 200)
    # These credentials had never worked: their first token verifies them, and reactivates the account.
    assert types_of(client, auth_headers)[-3:] == ["account.revoked", "account.verified", "account.reactivated"]


def test_uninstalled_verification_and_cli_delete_tell_their_events(installer, client, auth_headers, sim, app):
    installer.install()
    sim.revoke(ACCOUNT)
    body = {"type": "UNINSTALLED", "irisAppId": APP_ID, "accountId": ACCOUNT}
    assert installer.post(body).status_code == 202  # the vault checks the credentials in the background
    wait_for(lambda: "account.revoked" in types_of(client, auth_headers))
    result = app.test_cli_runner().invoke(args=["accounts", "delete", ACCOUNT, "--yes"])
    assert result.exit_code == 0, result.output
    last = feed(client, auth_headers)["events"][-1]
    assert last["type"] == "account.deleted" and last["data"]["via"] == "cli"


def test_verify_on_install_fetches_in_the_background(installer, make_app, auth_headers, sim):
    app = make_app(VERIFY_ON_INSTALL="true")
    client = app.test_client()
    installer.to(client).install()
    events = wait_for(lambda: types_of(client, auth_headers)[1:] and types_of(client, auth_headers))
    assert events == ["account.installed", "account.verified"]
    assert sim.token_requests == 1
    # A revoked set of credentials is found at verification.
    creds = installer.credentials(OTHER)
    sim.revoke(OTHER)
    assert installer.to(client).post(installer.message(OTHER, creds=creds)).status_code == 200
    assert wait_for(lambda: types_of(client, auth_headers, OTHER)[1:]) == ["account.revoked"]


def test_no_secret_or_token_is_in_any_event(installer, client, auth_headers, redis_client):
    creds = installer.install()
    token = ok_token(client, auth_headers)["access_token"]
    installer.install()
    raw = json.dumps([[k.decode(), {f.decode(): v.decode() for f, v in e.items()}] for k, e in _entries(redis_client)])
    shown = json.dumps(feed(client, auth_headers))
    sealed = redis_client.hget(KEYS.key_for(ACCOUNT), "cred.0")
    for secret in (creds["clientSecret"], token, sealed.decode("latin-1")[:20]):
        assert secret not in raw and secret not in shown


def _entries(redis_client):
    found = [entry for group in KEYS.groups for entry in redis_client.xrange(KEYS.events(group))]
    assert found  # the account's group has them
    return found


def test_the_feed_pages_and_resumes(installer, client, auth_headers):
    for n in range(5):
        installer.install(f"acc-{n}")
    first = feed(client, auth_headers, limit=2)
    assert [e["data"]["account_id"] for e in first["events"]] == ["acc-0", "acc-1"]
    rest = feed(client, auth_headers, after=first["next"], limit=500)
    assert [e["data"]["account_id"] for e in rest["events"]] == ["acc-2", "acc-3", "acc-4"]
    empty = feed(client, auth_headers, after=rest["next"])
    assert empty == {"events": [], "next": rest["next"]}


def test_the_feed_long_polls_until_an_event_exists(installer, app, client, auth_headers):
    installer.install("acc-0")
    start = feed(client, auth_headers)["next"]
    answer: dict = {}
    polling = threading.Thread(target=lambda: answer.update(feed(client, auth_headers, after=start, wait=20)))
    polling.start()
    watcher = app.extensions["vault"].events.watcher
    wait_for(lambda: watcher.waiting == 1)  # the long-poll waits: nothing after `start` yet
    installer.install("acc-1")
    polling.join(30)
    # Woken by the event: a poll that had run out its wait answers an empty list.
    assert [e["data"]["account_id"] for e in answer["events"]] == ["acc-1"]
    assert feed(client, auth_headers, after=start, wait=1)["events"] == answer["events"]
    assert feed(client, auth_headers, after=answer["next"], wait=1)["events"] == []


def test_an_expired_position_is_refused_with_the_oldest_id(installer, make_app, auth_headers, redis_client):
    app = make_app(EVENT_MAX_COUNT="100")
    client = app.test_client()
    svc = app.extensions["vault"]
    first = None
    appended = []
    for n in range(400):
        svc.accounts.install(f"acc-{n}", APP_ID, _creds(n))
        group = KEYS.group_of(f"acc-{n}")
        appended.append(redis_client.xrevrange(KEYS.events(group), count=1)[0][0].decode())  # its event's id
        if first is None:
            first = feed(client, auth_headers)["events"][0]["id"]
    info = svc.events.outbox.info()
    assert info.length <= 112  # each of the 16 groups trimmed to its share of the cap, ceil(100 / 16)
    retained = {e.id for e in svc.events.outbox.after(None, 500)}
    response = client.get("/v1/events", query_string={"after": first}, headers=auth_headers)
    assert response.status_code == 410
    error = response.get_json()["error"]
    # Where to go on: the newest id a trim removed (every group is complete after it).
    resume = max(set(appended) - retained, key=parse_id)
    assert error["code"] == "events_expired" and error["oldest"] == resume
    after_resume = [e["id"] for e in feed(client, auth_headers, after=resume, limit=500)["events"]]
    assert after_resume == sorted((i for i in retained if parse_id(i) > parse_id(resume)), key=parse_id)


def _creds(n: int):
    from vault.accounts import Credentials

    return Credentials(f"client-{n}", f"secret-{n}")


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "501"}, {"wait": "31"}, {"wait": "-1"}, {"after": "x"}, {"after": "1-2-3"}],
)
def test_the_feed_refuses_bad_parameters(client, auth_headers, params):
    response = client.get("/v1/events", query_string=params, headers=auth_headers)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"


def test_the_feed_needs_the_api_key(client):
    assert client.get("/v1/events").status_code == 401
