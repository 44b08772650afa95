"""A client for backend services: Trackunit API calls for an account, tokens handled by Iris Token Vault.

from iris_vault_client import trackunit_session

session = trackunit_session("https://vault.example.com", VAULT_API_KEY, account_id)
assets = session.get("/api/asset/v1/assets").json()
"""

from .auth import VaultAuth, VaultError
from .events import EventStream, WebhookVerificationError, verify_webhook
from .session import DEFAULT_API_URL, TrackunitSession, trackunit_session

__all__ = [
    "VaultAuth",
    "VaultError",
    "TrackunitSession",
    "trackunit_session",
    "DEFAULT_API_URL",
    "EventStream",
    "WebhookVerificationError",
    "verify_webhook",
]
