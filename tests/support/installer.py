"""Installing an account the way Trackunit does: one helper for every test that sends a signed callback.

Trackunit creates the account's client (here: at the simulator), signs a `Trackunit-Identity`
JWT with its published key and POSTs the INSTALLED message to `/appinstall`. `Installer` does
those steps one by one (for tests that change one of them) or all at once (`install`), against
the Flask test client or a vault served over HTTP (a thread, gunicorn); `through_simulator`
lets the simulator's own `/_sim/install` do them, as `python -m simulator install` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import requests

from tests.support.constants import ACCOUNT, APP_ID, GRANTED

SIGN = "sign"  # `post(token=SIGN)`: sign an identity for the body


class Installer:
    """`vault` is a Flask test client or the base URL of a served vault; `sim` the simulator's state.

    `sim_url` (the simulator over HTTP) is needed by `through_simulator` only.
    """

    def __init__(self, sim: Any, vault: Any, *, sim_url: str | None = None) -> None:
        self.sim, self.vault, self.sim_url = sim, vault, sim_url

    def to(self, vault: Any) -> Installer:
        """The same installer, sending to another vault (an app built with other settings)."""
        return Installer(self.sim, vault, sim_url=self.sim_url)

    def credentials(self, account_id: str = ACCOUNT, scopes: Sequence[str] = GRANTED) -> dict:
        """A new client for the account at the simulator (its token endpoint accepts only the newest)."""
        return self.sim.add_account(account_id, tuple(scopes), APP_ID)

    def message(
        self, account_id: str = ACCOUNT, *, scopes: Sequence[str] = GRANTED, creds: dict | None = None, **fields: Any
    ) -> dict:
        """An INSTALLED body carrying new credentials (or `creds`), plus `fields`."""
        creds = creds if creds is not None else self.credentials(account_id, scopes)
        return {
            "type": "INSTALLED",
            "irisAppId": APP_ID,
            "accountId": account_id,
            "clientId": creds["clientId"],
            "clientSecret": creds["clientSecret"],
            **fields,
        }

    def identity(
        self, body: object = None, *, names: bool = True, jti: bool = True, expires_in: int = 300, **claims: Any
    ) -> str:
        """A Trackunit-Identity signed with the simulator's published key.

        It names the body's app and account (`names=False`: it names neither), plus `claims`
        (a claim given as None is left out); `jti=False` leaves out the unique token id.
        """
        named = {}
        if names and isinstance(body, dict):
            named = {"irisAppId": body.get("irisAppId"), "accountId": body.get("accountId")}
        return self.sim.identity_token({**named, **claims}, jti=jti, expires_in=expires_in)

    def post(
        self,
        body: object,
        token: str | None = SIGN,
        *,
        data: str | bytes | None = None,
        content_type: str = "application/json",
        **claims: Any,
    ) -> Any:
        """POST the callback. The identity is signed for `body` (plus `claims`) unless a token, or None
        (no header), is given; `data` replaces the JSON of `body` as the raw request body."""
        if token == SIGN:
            token = self.identity(body, **claims)
        headers = {"Trackunit-Identity": token} if token is not None else {}
        payload = json.dumps(body) if data is None else data
        if isinstance(self.vault, str):
            return requests.post(
                f"{self.vault}/appinstall", data=payload, headers={**headers, "Content-Type": content_type}, timeout=15
            )
        return self.vault.post("/appinstall", data=payload, content_type=content_type, headers=headers)

    def install(self, account_id: str = ACCOUNT, scopes: Sequence[str] = GRANTED, **claims: Any) -> dict:
        """New credentials at the simulator, then the signed INSTALLED callback; returns the credentials."""
        creds = self.credentials(account_id, scopes)
        response = self.post(self.message(account_id, creds=creds), **claims)
        assert response.status_code == 200, (
            response.text if isinstance(response, requests.Response) else response.get_data(as_text=True)
        )
        return creds

    def through_simulator(
        self, account_id: str = ACCOUNT, scopes: Sequence[str] = GRANTED, *, callback_status: int = 200, **extra: Any
    ) -> dict:
        """The simulator's `/_sim/install` makes the credentials, signs and POSTs the callback to the
        served vault (`extra`: its options, e.g. `type`, `identityToken`, `jti`, `accountClaims`)."""
        assert self.sim_url is not None and isinstance(self.vault, str), "needs the simulator and vault URLs"
        response = requests.post(
            f"{self.sim_url}/_sim/install",
            timeout=30,
            json={
                "callbackUrl": f"{self.vault}/appinstall",
                "accountId": account_id,
                "irisAppId": APP_ID,
                "scopes": list(scopes),
                **extra,
            },
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["callbackStatus"] == callback_status, result
        return result
