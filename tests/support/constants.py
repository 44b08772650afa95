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


def service_env(redis_url: str, trackunit_url: str, *, key_prefix: str = "test") -> dict[str, str]:
    """The test deployment's environment: the shared keys, one Redis and the simulator as Trackunit."""
    return {
        "REDIS_URL": redis_url,
        "VAULT_KEY": VAULT_KEY,
        "API_KEYS": f"ops:{API_KEY}",
        "IRIS_APP_ID": APP_ID,
        "APP_SCOPES": APP_SCOPES,
        "TRACKUNIT_TOKEN_URL": f"{trackunit_url}/apptoken",
        "TRACKUNIT_JWKS_URL": f"{trackunit_url}/api/marketplace/jwks",
        "TRACKUNIT_API_URL": trackunit_url,
        "KEY_PREFIX": key_prefix,
        # Under gunicorn (as in production) /metrics needs a token or an explicit opening; tests scrape it openly.
        "METRICS_PUBLIC": "true",
        # Off unless a test is about it: a background fetch after every install would race the many tests
        # that count Trackunit's token requests or expect an account's first token to be fetched.
        "VERIFY_ON_INSTALL": "false",
    }
