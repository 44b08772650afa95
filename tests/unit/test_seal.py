"""Sealing: round trip, and every single flipped byte (header, nonce, ciphertext, tag, AAD) refused."""

import os

import pytest

from vault.keys import KeyRing, SealingKey, generate_key, key_id, parse_key
from vault.seal import HEADER_SIZE, NONCE_SIZE, TAG_SIZE, Sealer, SealError, associated_data

KEY = bytes(range(32))
OLD = bytes(range(100, 132))
AAD = associated_data("credentials", "@org/app", "account-1")


def test_round_trip():
    sealer = Sealer(KeyRing(KEY))
    sealed = sealer.seal(b"secret", aad=AAD)
    assert sealer.open(sealed, aad=AAD) == b"secret"
    assert b"secret" not in sealed
    assert len(sealed) == HEADER_SIZE + NONCE_SIZE + len(b"secret") + TAG_SIZE


def test_every_flipped_byte_is_refused():
    sealer = Sealer(KeyRing(KEY))
    sealed = sealer.seal(b"client secret value", aad=AAD)
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(SealError):
            sealer.open(bytes(tampered), aad=AAD)


def test_other_associated_data_is_refused():
    sealer = Sealer(KeyRing(KEY))
    sealed = sealer.seal(b"s", aad=AAD)
    for other in (
        associated_data("credentials", "@org/app", "account-2"),
        associated_data("credentials", "@org/other", "account-1"),
        associated_data("token", "@org/app", "account-1"),
        associated_data("credentials", "@org/app", "account-"),
    ):
        with pytest.raises(SealError):
            sealer.open(sealed, aad=other)


def test_associated_data_parts_do_not_run_together():
    assert associated_data("ab", "c") != associated_data("a", "bc")


def test_truncated_and_empty_values_are_refused():
    sealer = Sealer(KeyRing(KEY))
    sealed = sealer.seal(b"s", aad=AAD)
    for value in (b"", sealed[:HEADER_SIZE], sealed[:-1], b"\x02" + sealed[1:]):
        with pytest.raises(SealError):
            sealer.open(value, aad=AAD)


def test_previous_key_opens_old_records_and_new_ones_use_current():
    old = Sealer(KeyRing(OLD)).seal(b"old", aad=AAD)
    rotated = Sealer(KeyRing(KEY, [OLD]))
    assert rotated.open(old, aad=AAD) == b"old"
    fresh = rotated.seal(b"new", aad=AAD)
    assert Sealer.key_id_of(fresh) == key_id(KEY).hex()
    assert Sealer.key_id_of(old) == key_id(OLD).hex()
    with pytest.raises(SealError):
        Sealer(KeyRing(KEY)).open(old, aad=AAD)  # old key dropped: unknown key id


def test_keys_never_print():
    key = SealingKey(KEY)
    ring = KeyRing(KEY, [OLD])
    for text in (repr(key), str(key), repr(ring), repr(Sealer(ring))):
        assert KEY.hex() not in text and OLD.hex() not in text
        assert "\\x" not in text


def test_parse_key_accepts_base64_urlsafe_and_hex():
    import base64

    raw = os.urandom(32)
    assert parse_key(base64.b64encode(raw).decode(), "K") == raw
    assert parse_key(base64.urlsafe_b64encode(raw).decode().rstrip("="), "K") == raw
    assert parse_key(raw.hex(), "K") == raw
    assert len(parse_key(generate_key(), "K")) == 32


@pytest.mark.parametrize("bad", ["", "not base64!!", "YWJj", "00" * 31])
def test_parse_key_refuses_wrong_sizes_without_echoing(bad):
    with pytest.raises(ValueError) as info:
        parse_key(bad, "VAULT_KEY")
    assert "VAULT_KEY" in str(info.value)
    if bad:
        assert bad not in str(info.value)
