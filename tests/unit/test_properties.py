"""Property tests (Hypothesis) of the callback parser and of sealing.

parse_message: for any JSON value it either returns a message that obeys the rules (and equals what
an independent reading of the rules expects) or raises InvalidRequest, never anything else, and never
quotes a value; every valid message round-trips through its JSON body.

Sealer: any bytes under any associated data come back as they went in; a sealed value with any one byte
changed, any prefix of it, another key, or another account's (or app's, or purpose's) associated data
never opens (SealError); a value sealed under a previous key still opens after rotation.

Deterministic (derandomize, no example database) and without deadlines: the same examples every run.
"""

from __future__ import annotations

import json
import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from api.callback import INSTALLED, MAX_FIELD, UNINSTALLED, CallbackMessage, parse_message
from core.errors import InvalidRequest
from vault.accounts import credentials_aad
from vault.keys import KEY_SIZE, KeyRing
from vault.seal import MIN_SEALED_SIZE, Sealer, SealError, associated_data

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200)
FIELDS = ("type", "irisAppId", "accountId", "clientId", "clientSecret")
ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


# Strategies ------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# Strings at the edges of the rules: blank (Unicode spaces too), control characters, exactly at and just past
# the length limits, the account id alphabet.
edge_texts = st.one_of(
    st.sampled_from(
        [
            "",
            "\x00",
            "x\x1f",
            "x\x7f",
            "a\nb",
            "\x80",
            "é",
            "a-b_C9",
            INSTALLED,
            UNINSTALLED,
            "INSTALLED ",
            "installed",
            "@organization/appname",
            "acc.1",
            "acc/1",
            "acc 1",
            "acc:1",
        ]
    ),
    st.text(alphabet=" \t\r\n\u00a0\u2003\u3000\u2028", min_size=1, max_size=3),
    st.sampled_from([MAX_FIELD - 1, MAX_FIELD, MAX_FIELD + 1]).map(lambda n: "x" * n),
    st.sampled_from([127, 128, 129]).map(lambda n: "a" * n),
    st.from_regex(ACCOUNT_ID, fullmatch=True),
    st.text(max_size=40),
)
valid_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in range(0x20)] + ["\x7f"]),
    min_size=1,
    max_size=MAX_FIELD,
).filter(lambda s: s.strip() != "")
valid_messages = st.one_of(
    st.builds(
        CallbackMessage,
        type=st.just(INSTALLED),
        iris_app_id=valid_text,
        account_id=st.from_regex(ACCOUNT_ID, fullmatch=True),
        client_id=valid_text,
        client_secret=valid_text,
    ),
    st.builds(
        CallbackMessage,
        type=valid_text.filter(lambda t: t != INSTALLED),
        iris_app_id=valid_text,
        account_id=st.from_regex(ACCOUNT_ID, fullmatch=True),
    ),
)


ABSENT = object()


def near(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a valid value; sometimes absent, an edge-case string or any JSON value."""
    return st.integers(0, 9).flatmap(
        lambda roll: st.just(ABSENT) if roll == 0 else edge_texts if roll == 1 else json_values if roll == 2 else valid
    )


# Objects with the five known fields near validity (about half are valid messages), plus unknown fields.
callback_like = st.builds(
    lambda known, extra: {**extra, **{k: v for k, v in known.items() if v is not ABSENT}},
    st.fixed_dictionaries(
        {
            "type": near(st.sampled_from([INSTALLED, INSTALLED, UNINSTALLED, "SOMETHING_ELSE"]) | valid_text),
            "irisAppId": near(valid_text),
            "accountId": near(st.from_regex(ACCOUNT_ID, fullmatch=True)),
            "clientId": near(valid_text),
            "clientSecret": near(valid_text),
        }
    ),
    st.dictionaries(st.text(max_size=10).filter(lambda k: k not in FIELDS), json_values, max_size=2),
)


# The rules, read independently of the implementation -------------------------------------------------


def acceptable_text(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.strip() != ""
        and len(value) <= MAX_FIELD
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    )


def expected_message(body: object) -> CallbackMessage | None:
    """The message the rules ask for, or None where they ask for a refusal."""
    if not isinstance(body, dict):
        return None
    kind, app_id, account_id = body.get("type"), body.get("irisAppId"), body.get("accountId")
    if not all(acceptable_text(v) for v in (kind, app_id, account_id)) or not ACCOUNT_ID.fullmatch(account_id):
        return None
    if kind != INSTALLED:
        return CallbackMessage(kind, app_id, account_id)
    client_id, client_secret = body.get("clientId"), body.get("clientSecret")
    if not (acceptable_text(client_id) and acceptable_text(client_secret)):
        return None
    return CallbackMessage(kind, app_id, account_id, client_id, client_secret)


def body_of(message: CallbackMessage) -> dict:
    body = {"type": message.type, "irisAppId": message.iris_app_id, "accountId": message.account_id}
    if message.type == INSTALLED:
        body |= {"clientId": message.client_id, "clientSecret": message.client_secret}
    return body


# parse_message ------------------------------------------------------------------------------------------


def check_parse(body: object) -> None:
    expected = expected_message(body)
    try:
        parsed = parse_message(body)
    except InvalidRequest as exc:
        assert expected is None, f"refused a valid body: {exc.message}"
        assert exc.status == 400 and exc.code == "invalid_request"
        return
    # Anything but InvalidRequest propagates and fails the test.
    assert expected is not None, f"accepted an invalid body as {parsed!r}"
    assert parsed == expected
    for value in (parsed.type, parsed.iris_app_id, parsed.account_id):
        assert acceptable_text(value)
    assert ACCOUNT_ID.fullmatch(parsed.account_id)
    if parsed.type == INSTALLED:
        assert acceptable_text(parsed.client_id) and acceptable_text(parsed.client_secret)
    else:
        assert parsed.client_id is None and parsed.client_secret is None


@PROPERTY
@given(json_values)
def test_any_json_value_is_parsed_by_the_rules_or_refused_with_invalid_request(body):
    check_parse(body)


@PROPERTY
@given(callback_like)
def test_any_callback_like_object_is_parsed_by_the_rules_or_refused_with_invalid_request(body):
    check_parse(body)


# Concrete values at each edge of the rules, tried in every field of valid messages (exhaustively, so
# that every edge is checked every run): blank and Unicode-blank, control characters, lengths at and
# just past the limits, account ids one character off the alphabet, and values that are not strings.
EDGE_VALUES = [
    "",
    " ",
    "\t",
    "\u00a0",
    "\u2003 ",
    "\u3000",
    "x\x00",
    "\x1fx",
    "x\x7f",
    "a\nb",
    "\x80",
    "é",
    "x" * (MAX_FIELD - 1),
    "x" * MAX_FIELD,
    "x" * (MAX_FIELD + 1),
    "a" * 127,
    "a" * 128,
    "a" * 129,
    "acc.1",
    "acc/1",
    "acc 1",
    "acc:1",
    "acc@1",
    "acc+1",
    "ACC_1-z",
    INSTALLED,
    UNINSTALLED,
    "INSTALLED ",
    "installed",
    None,
    0,
    1.5,
    True,
    [],
    ["x"],
    {},
    {"x": "y"},
]
MISSING = object()


@settings(PROPERTY, max_examples=50)
@given(valid_messages)
def test_a_valid_body_with_any_one_field_at_an_edge_is_parsed_by_the_rules_or_refused(message):
    body = body_of(message)
    for field in FIELDS:
        for value in [*EDGE_VALUES, MISSING]:
            changed = {**body, field: value}
            if value is MISSING:
                del changed[field]
            check_parse(changed)


@PROPERTY
@given(
    callback_like,
    st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=24, max_size=48),
    st.sampled_from(["", "\x00", "\n", " " * 2000]),
)
def test_a_refusal_never_quotes_the_secret(body, secret, spoiler):
    body = {**body, "clientSecret": "S3CR3T" + secret + spoiler}  # valid, or refused for itself
    try:
        parse_message(body)
    except InvalidRequest as exc:
        assert "S3CR3T" not in exc.message and secret not in exc.message


@PROPERTY
@given(valid_messages, st.dictionaries(st.text(max_size=10).filter(lambda k: k not in FIELDS), json_values, max_size=3))
def test_a_valid_message_round_trips_through_its_json_body(message, extra):
    wire = json.loads(json.dumps({**extra, **body_of(message)}))
    assert parse_message(wire) == message
    assert parse_message(body_of(parse_message(wire))) == message


# Sealing ------------------------------------------------------------------------------------------------

keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)
parts = st.text(max_size=24)


@PROPERTY
@given(keys, st.binary(max_size=2048), st.binary(max_size=256))
def test_seal_then_open_gives_back_any_bytes_under_any_associated_data(key, plaintext, aad):
    sealer = Sealer(KeyRing(key))
    sealed = sealer.seal(plaintext, aad=aad)
    assert sealer.open(sealed, aad=aad) == plaintext
    assert len(sealed) == MIN_SEALED_SIZE + len(plaintext)
    assert sealer.seal(plaintext, aad=aad) != sealed  # a fresh nonce every time


@PROPERTY
@given(keys, st.binary(max_size=512), st.binary(max_size=64), st.data())
def test_any_single_changed_byte_is_refused(key, plaintext, aad, data):
    sealer = Sealer(KeyRing(key))
    sealed = bytearray(sealer.seal(plaintext, aad=aad))
    index = data.draw(st.integers(0, len(sealed) - 1), label="index")
    sealed[index] ^= data.draw(st.integers(1, 255), label="xor")
    try:
        sealer.open(bytes(sealed), aad=aad)
    except SealError:
        return
    raise AssertionError(f"byte {index} changed and the value still opened")


@PROPERTY
@given(keys, st.binary(max_size=256), st.binary(max_size=64), st.data())
def test_any_prefix_is_refused(key, plaintext, aad, data):
    sealer = Sealer(KeyRing(key))
    sealed = sealer.seal(plaintext, aad=aad)
    cut = data.draw(st.integers(0, len(sealed) - 1), label="length")
    try:
        sealer.open(sealed[:cut], aad=aad)
    except SealError:
        return
    raise AssertionError(f"a {cut}-byte prefix of a {len(sealed)}-byte value opened")


@PROPERTY
@given(keys, keys, st.binary(max_size=256), st.binary(max_size=64))
def test_another_key_is_refused_even_with_the_right_key_id_slot(key, other, plaintext, aad):
    assume(key != other)
    sealed = Sealer(KeyRing(key)).seal(plaintext, aad=aad)
    for ring in (KeyRing(other), KeyRing(other, [other])):
        try:
            Sealer(ring).open(sealed, aad=aad)
        except SealError:
            continue
        raise AssertionError("opened with another key")
    # The sealing key's id with another key's AEAD: the tag still refuses it.
    forged = bytearray(sealed)
    forged[1:5] = KeyRing(other).current.id
    try:
        Sealer(KeyRing(other)).open(bytes(forged), aad=aad)
    except SealError:
        pass
    else:
        raise AssertionError("opened with another key under its key id")


@PROPERTY
@given(keys, st.binary(max_size=256), parts, parts, parts, parts)
def test_another_accounts_or_apps_associated_data_is_refused(key, plaintext, app, account, other_app, other_account):
    assume((app, account) != (other_app, other_account))
    sealer = Sealer(KeyRing(key))
    sealed = sealer.seal(plaintext, aad=credentials_aad(app, account))
    for aad in (
        credentials_aad(other_app, other_account),
        associated_data("token", app, account),
        associated_data("credentials", app + account),
        associated_data("credentials", app, account, ""),
    ):
        try:
            sealer.open(sealed, aad=aad)
        except SealError:
            continue
        raise AssertionError(f"opened under {aad!r}")
    assert sealer.open(sealed, aad=credentials_aad(app, account)) == plaintext


@PROPERTY
@given(keys, keys, st.binary(max_size=256), st.binary(max_size=64))
def test_a_value_sealed_under_a_previous_key_opens_after_rotation(old, new, plaintext, aad):
    assume(old != new)
    sealed = Sealer(KeyRing(old)).seal(plaintext, aad=aad)
    rotated = Sealer(KeyRing(new, [old]))
    assert rotated.open(sealed, aad=aad) == plaintext
    assert Sealer.key_id_of(rotated.seal(plaintext, aad=aad)) == KeyRing(new).current.id.hex()
