"""Seal and open values with XChaCha20-Poly1305 (libsodium's AEAD, via PyNaCl).

A sealed value is `version | key id | nonce | ciphertext+tag`. The associated
data binds it to where it belongs (purpose, app, account, scope set), so a
sealed value copied to another account, or from a credential to a token slot,
fails to open. The header (version and key id) is authenticated too.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.secret
import nacl.utils

from vault.keys import KEY_ID_SIZE, KeyRing

VERSION = b"\x01"
NONCE_SIZE = nacl.secret.Aead.NONCE_SIZE  # 24
TAG_SIZE = nacl.secret.Aead.MACBYTES  # 16
HEADER_SIZE = len(VERSION) + KEY_ID_SIZE
MIN_SEALED_SIZE = HEADER_SIZE + NONCE_SIZE + TAG_SIZE


class SealError(Exception):
    """A value did not open: wrong key, wrong associated data, or tampered."""


def associated_data(*parts: str) -> bytes:
    """Length-prefixed context parts, so no two different contexts collide."""
    out = bytearray(b"itv-aad-v1")
    for part in parts:
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


class Sealer:
    """Seals with the key ring's current key; opens with any key it holds."""

    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring

    def __repr__(self) -> str:
        return f"<Sealer {self._keyring!r}>"

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        key = self._keyring.current
        header = VERSION + key.id
        nonce = nacl.utils.random(NONCE_SIZE)
        box = key.aead.encrypt(plaintext, aad=header + aad, nonce=nonce)
        return header + bytes(box)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        if len(sealed) < MIN_SEALED_SIZE or sealed[:1] != VERSION:
            raise SealError("not a sealed value of a known version")
        key = self._keyring.find(sealed[1:HEADER_SIZE])
        if key is None:
            raise SealError(f"sealed with unknown key id {sealed[1:HEADER_SIZE].hex()}")
        try:
            return key.aead.decrypt(sealed[HEADER_SIZE:], aad=sealed[:HEADER_SIZE] + aad)
        except nacl.exceptions.CryptoError:
            raise SealError(f"failed to open a value sealed with key id {key.id.hex()}") from None

    @staticmethod
    def key_id_of(sealed: bytes) -> str:
        """The id of the key that sealed a value (for operators; not secret)."""
        return sealed[1:HEADER_SIZE].hex()
