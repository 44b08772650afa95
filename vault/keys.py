"""The key ring: the current sealing key and older ones kept only to open records.

Keys are 32 random bytes given as base64 or 64 hex characters. Each key has a
short public id (a keyed BLAKE2b of the key) that is stored beside every
sealed value, so a record names the key that opened it without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

import nacl.secret
import nacl.utils

KEY_SIZE = nacl.secret.Aead.KEY_SIZE  # 32
KEY_ID_SIZE = 4
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


class InvalidKey(ValueError):
    """Raised by parse_key; the message names the variable, never the value."""


def parse_key(text: str, name: str) -> bytes:
    """Decode a 32-byte key written as base64 (standard or URL-safe) or hex."""
    text = text.strip()
    if _HEX_KEY.match(text):
        return bytes.fromhex(text)
    try:
        padded = text + "=" * (-len(text) % 4)
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey(f"{name} is not base64 or 64 hex characters") from None
    if len(raw) != KEY_SIZE:
        raise InvalidKey(f"{name} must be {KEY_SIZE} bytes, got {len(raw)}")
    return raw


def generate_key() -> str:
    """A new random key, base64-encoded as VAULT_KEY takes it."""
    return base64.b64encode(nacl.utils.random(KEY_SIZE)).decode("ascii")


def key_id(key: bytes) -> bytes:
    """A short, stable, non-secret id for `key`."""
    return hashlib.blake2b(key, digest_size=KEY_ID_SIZE, person=b"itv-key-id").digest()


class SealingKey:
    """One key with its AEAD; never print it (the Aead's str() is the key)."""

    __slots__ = ("id", "aead", "_raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_SIZE:
            raise ValueError(f"a sealing key is {KEY_SIZE} bytes")
        self.id = key_id(raw)
        self.aead = nacl.secret.Aead(raw)
        self._raw = raw

    def derive(self, label: bytes) -> bytes:
        """A 32-byte subkey for one purpose, named by `label`: HMAC-SHA256(key, label).

        This is HKDF-Expand's single block with the label as its info (HKDF-Extract adds nothing to
        a key that is already 32 random bytes); a distinct label per purpose keeps the subkeys
        independent of each other and of the sealing key.
        """
        return hmac.new(self._raw, b"iris-token-vault/" + label + b"\x01", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"<SealingKey id={self.id.hex()}>"

    __str__ = __repr__


class KeyRing:
    """The current key (seals and opens) and previous keys (open only)."""

    def __init__(self, current: bytes, previous: list[bytes] | tuple[bytes, ...] = ()) -> None:
        self.current = SealingKey(current)
        self._by_id: dict[bytes, SealingKey] = {}
        for key in [self.current, *(SealingKey(raw) for raw in previous)]:
            self._by_id.setdefault(key.id, key)

    @property
    def keys(self) -> list[SealingKey]:
        """Every key, the current one first, then the previous ones in the order configured."""
        return list(self._by_id.values())

    def find(self, kid: bytes) -> SealingKey | None:
        return self._by_id.get(kid)

    @property
    def ids(self) -> list[str]:
        return [kid.hex() for kid in self._by_id]

    def __repr__(self) -> str:
        return f"<KeyRing current={self.current.id.hex()} keys={len(self._by_id)}>"
