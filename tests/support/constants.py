"""The values every test shares: the test deployment's keys, API key, app id and scopes, and the default account."""

from __future__ import annotations

import base64

VAULT_KEY = base64.b64encode(bytes(range(32))).decode()
OLD_KEY = base64.b64encode(bytes(range(100, 132))).decode()
API_KEY = "test-api-key-0123456789"
APP_ID = "@organization/appname"
APP_SCOPES = "asset.view account.view account.alert.view?"
ACCOUNT = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"
GRANTED = ("asset.view", "account.view")  # the scopes an account grants unless a test says otherwise
