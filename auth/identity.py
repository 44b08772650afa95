"""Verifying the `Trackunit-Identity` JWT that signs every install callback.

The claims are not documented, so the checks are defensive: the signature must
verify against a key from Trackunit's JWKS with an asymmetric algorithm; time
claims are checked when present; `aud` only when an audience is configured.
The JWKS is cached and refetched (rate-limited) when an unknown `kid` appears.
What a verified token can be held to beyond that (its `jti`, its `iat`) is read
from the claims by `replay_rule` and `issued_at`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import ssl
import threading
import time
from typing import Any

import jwt

from core import tunables
from core.errors import IdentityUnavailable, InvalidIdentity

# Asymmetric algorithms only: never "none", never HS* (a public key is no secret).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_TOKEN_LENGTH = 16 * 1024


class IdentityVerifier:
    """Checks a Trackunit-Identity token; one instance per process (it holds the JWKS cache)."""

    def __init__(self, jwks_url: str, *, audience: str | None = None, ca_bundle: str | None = None) -> None:
        self.audience = audience
        self.jwks = jwt.PyJWKClient(
            jwks_url,
            cache_jwk_set=True,
            lifespan=tunables.JWKS_CACHE_SECONDS,
            timeout=tunables.JWKS_TIMEOUT,
            ssl_context=ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None,
        )
        # PyJWKClient's own cooldown also starts at every routine fetch, so a key rotated within
        # 30 s of one would be refused; unknown kids are rate-limited here instead (see _may_refetch).
        self._refetch_lock = threading.Lock()
        self._last_refetch: float | None = None

    def verify(self, token: str | None) -> dict[str, Any]:
        """The verified claims, or InvalidIdentity / IdentityUnavailable."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidIdentity()
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.InvalidTokenError, RecursionError):  # PyJWT parses the header's JSON with json.loads
            raise InvalidIdentity() from None
        if header.get("alg") not in ALGORITHMS:
            raise InvalidIdentity("The Trackunit-Identity token must use an asymmetric signature.")
        key = self._signing_key(header.get("kid"))
        allowed = _algorithms_for(key)
        if header["alg"] not in allowed:
            raise InvalidIdentity("The Trackunit-Identity token's algorithm does not match its key.")
        options: jwt.types.Options = {"verify_aud": self.audience is not None}
        if self.audience is not None:
            options["require"] = ["aud"]
        try:
            return jwt.decode(
                token,
                key,
                algorithms=allowed,
                audience=self.audience,
                leeway=tunables.IDENTITY_LEEWAY,
                options=options,
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidIdentity(f"The Trackunit-Identity token was refused: {_reason(exc)}.") from None
        except RecursionError:  # claims nested a few thousand deep; only after a valid signature
            raise InvalidIdentity("The Trackunit-Identity token's claims are nested too deeply.") from None

    def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        try:
            if kid is not None:
                key = self.jwks.match_kid(self.jwks.get_signing_keys(), kid)
                if key is None and self._may_refetch():
                    key = self.jwks.match_kid(self.jwks.get_signing_keys(refresh=True), kid)
                if key is None:
                    raise InvalidIdentity("The Trackunit-Identity token is signed by an unknown key.")
                return key
            # No kid: accept only when the JWKS holds exactly one signing key.
            keys = self.jwks.get_jwk_set().keys
            if len(keys) != 1:
                raise InvalidIdentity("The Trackunit-Identity token names no key (kid).")
            return keys[0]
        except (jwt.PyJWKClientConnectionError, RecursionError):  # unreachable, or a JWKS no parser survives
            raise IdentityUnavailable() from None
        except (jwt.PyJWKClientError, jwt.PyJWKSetError):
            raise InvalidIdentity("The Trackunit-Identity token is signed by an unknown key.") from None

    def _may_refetch(self) -> bool:
        """An unknown kid refetches the JWKS at most once per JWKS_REFRESH_COOLDOWN (routine fetches do not count)."""
        with self._refetch_lock:
            now = time.monotonic()
            if self._last_refetch is not None and now - self._last_refetch < tunables.JWKS_REFRESH_COOLDOWN:
                return False
            self._last_refetch = now
            return True


def _algorithms_for(key: jwt.PyJWK) -> list[str]:
    """The algorithms a JWK may verify: its own `alg`, else those of its key type."""
    if "alg" in key._jwk_data:  # PyJWK keeps the JWK; the alg it names pins the algorithm
        return [key.algorithm_name] if key.algorithm_name in ALGORITHMS else []
    if key.key_type == "RSA":
        return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    return [key.algorithm_name] if key.algorithm_name in ALGORITHMS else []


def _reason(exc: jwt.InvalidTokenError) -> str:
    """A short reason safe to return: PyJWT's messages hold no secret, but keep them brief."""
    return {
        jwt.ExpiredSignatureError: "expired",
        jwt.ImmatureSignatureError: "not yet valid",
        jwt.InvalidAudienceError: "wrong audience",
        jwt.MissingRequiredClaimError: "a required claim is missing",
        jwt.InvalidSignatureError: "bad signature",
        jwt.InvalidAlgorithmError: "algorithm not allowed",
    }.get(type(exc), "malformed")


@dataclasses.dataclass(frozen=True)
class ReplayRule:
    """A token with a `jti` may carry one message only, for as long as the token lives."""

    issuer: str
    jti: str
    ttl: int  # seconds: the token's `exp` plus leeway, at most IDENTITY_REPLAY_WINDOW


def replay_rule(claims: dict[str, Any], now: float) -> ReplayRule | None:
    """The binding a verified token supports, or None when it has no `jti` (nothing to bind to)."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        return None
    expires = claims.get("exp")
    window = tunables.IDENTITY_REPLAY_WINDOW
    ttl = int(expires - now) + tunables.IDENTITY_LEEWAY if isinstance(expires, (int, float)) else window
    issuer = claims.get("iss")
    return ReplayRule(issuer=issuer if isinstance(issuer, str) else "", jti=jti, ttl=max(1, min(ttl, window)))


def issued_at(claims: dict[str, Any]) -> int | None:
    """The token's `iat` in whole seconds (PyJWT has checked it is a number), or None."""
    value = claims.get("iat")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def message_digest(body: Any) -> str:
    """A digest of a JSON message's content: the same message re-serialised (spacing, key order) is the same."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
