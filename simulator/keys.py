"""The simulator's signing key: it stands in for Trackunit's JWKS-published keys."""

from __future__ import annotations

import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


class SigningKey:
    """An RSA-2048 key pair with a random ``kid``.

    The private half never leaves this object (no accessor, no repr), so a
    test failure message can never print it.
    """

    def __init__(self, kid: str | None = None) -> None:
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid: str = kid or secrets.token_urlsafe(12)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"

    def public_jwk(self) -> dict[str, Any]:
        """The public key as one JWK, as a JWKS publishes it."""
        jwk = RSAAlgorithm.to_jwk(self._private_key.public_key(), as_dict=True)
        # RFC 7517: "use" and "key_ops" should not both be present; keep "use".
        return {"kty": jwk["kty"], "kid": self.kid, "use": "sig", "alg": "RS256", "n": jwk["n"], "e": jwk["e"]}

    def jwks(self) -> dict[str, Any]:
        """The public JWK set served at ``/api/marketplace/jwks``."""
        return {"keys": [self.public_jwk()]}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        headers: dict[str, Any] | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """Sign ``claims`` with the ``kid`` header (``headers`` may override it).

        ``algorithm`` may be any RSA algorithm, or ``"none"`` to build an
        unsigned token for negative tests.
        """
        all_headers = {"kid": self.kid, **(headers or {})}
        if algorithm == "none":
            return jwt.encode(claims, None, algorithm="none", headers=all_headers)  # type: ignore[arg-type]
        if algorithm not in _RSA_ALGORITHMS:
            raise ValueError(f"unsupported algorithm for an RSA key: {algorithm!r}")
        return jwt.encode(claims, self._private_key, algorithm=algorithm, headers=all_headers)
