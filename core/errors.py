"""Every error the service answers with: a small class each, with its HTTP status and code.

The API turns any `VaultError` into `{"error": {"code", "message"}}` (and a
`Retry-After` header when `retry_after` is set). Messages are written for the
caller and never contain a secret.
"""

from __future__ import annotations


class VaultError(Exception):
    status: int = 500
    code: str = "internal_error"
    message: str = "The service failed to handle the request."
    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        if retry_after is not None:
            self.retry_after = max(1, int(retry_after))


class InvalidRequest(VaultError):
    status, code, message = 400, "invalid_request", "The request is malformed."


class InvalidPath(VaultError):
    status, code, message = 400, "invalid_path", "The proxied path is not allowed."


class InvalidScope(VaultError):
    status, code, message = 400, "invalid_scope", "A requested scope is not in the app's manifest."


class Unauthorized(VaultError):
    status, code, message = 401, "unauthorized", "A valid API key is required (Authorization: Bearer <key>)."


class InvalidIdentity(VaultError):
    status, code, message = 401, "invalid_identity", "The Trackunit-Identity header is missing or invalid."


class UnknownApp(VaultError):
    status, code, message = 403, "unknown_app", "The callback is for another Iris App."


class ScopeNotGranted(VaultError):
    status, code = 403, "scope_not_granted"
    message = "Trackunit refused a requested scope: the account did not grant it."


class AccountNotFound(VaultError):
    status, code, message = 404, "account_not_found", "No such account is installed."


class CredentialsRevoked(VaultError):
    status, code = 410, "credentials_revoked"
    message = "Trackunit refused the account's credentials (the app was probably uninstalled)."


class RequestTimeout(VaultError):
    status, code, message = 408, "request_timeout", "The request body did not arrive in time."


class PayloadTooLarge(VaultError):
    status, code, message = 413, "payload_too_large", "The request body is too large."


class UnsupportedMediaType(VaultError):
    status, code, message = 415, "unsupported_media_type", "The body must be application/json."


class RecordUnreadable(VaultError):
    status, code = 500, "record_unreadable"
    message = "A stored record could not be opened with the configured vault keys."


class AuthError(VaultError):
    status, code, message = 502, "auth_error", "Trackunit's token endpoint gave an unexpected answer."


class UpstreamTimeout(VaultError):
    status, code = 504, "upstream_timeout"
    message = "Trackunit's API did not answer within the proxy's deadline (PROXY_DEADLINE)."


class UpstreamUnavailable(VaultError):
    status, code, message = 503, "upstream_unavailable", "Trackunit's API could not be reached."
    retry_after = 5


class Overloaded(VaultError):
    status, code = 503, "overloaded"
    message = "The service has too many requests in flight; retry after Retry-After."
    retry_after = 1  # slots free up as fast as calls end: a second is enough to find one


class StoreUnavailable(VaultError):
    status, code, message = 503, "store_unavailable", "The credential store (Redis) is unavailable."
    retry_after = 5


class MigrationRefused(VaultError):
    """Moving an account out of the single-Redis layout cannot be done here (a cluster never held it) or now."""

    status, code, retry_after = 503, "migration_refused", 1


class IdentityUnavailable(VaultError):
    status, code = 503, "identity_unavailable"
    message = "Trackunit's signing keys (JWKS) could not be fetched."
    retry_after = 10


class AuthUnavailable(VaultError):
    status, code, message = 503, "auth_unavailable", "Trackunit's token endpoint is unavailable."
    retry_after = 5


# API keys: who may do what (api.apikeys) -------------------------------------------------------


class Forbidden(VaultError):
    """The key is valid but lacks the permission the request needs (the message names it, never the key)."""

    status, code, message = 403, "forbidden", "The API key lacks the permission this request needs."

    def __init__(self, permission: str) -> None:
        super().__init__(f"The API key lacks the permission {permission!r} this request needs.")


class ScopeNotAllowed(VaultError):
    """A requested scope is outside the key's scope ceiling (Trackunit is not called)."""

    status, code = 403, "scope_not_allowed"
    message = "A requested scope is outside the API key's scope ceiling."


class RateLimited(VaultError):
    """The key's own rate limit is used up; retry after `Retry-After`."""

    status, code, message = 429, "rate_limited", "The API key's rate limit is used up: retry after Retry-After."
    retry_after = 1


class EventsExpired(VaultError):
    """`after` names an event older than the retention: events after it were trimmed (the feed says the oldest)."""

    status, code = 410, "events_expired"
    message = "Events after this id are no longer retained; start again from the oldest id available."

    def __init__(self, oldest: str | None) -> None:
        super().__init__()
        self.oldest = oldest
