"""api.callback.parse_message: the callback body's validation, field by field."""

from __future__ import annotations

import pytest

from api.callback import CallbackMessage, parse_message
from core.errors import InvalidRequest

SECRET = "wZtQppu1huik4cYBAhYXnZS29pSudTBne2SE6WEM5C5"


def body(**fields) -> dict:
    """Trackunit's documented example message, with `fields` changed (None removes one)."""
    message = {
        "type": "INSTALLED",
        "irisAppId": "@organization/appname",
        "accountId": "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3",
        "clientId": "0oa10o3h43eulvWtz358",
        "clientSecret": SECRET,
        **fields,
    }
    return {k: v for k, v in message.items() if v is not None}


def refused(value) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse_message(value)
    return info.value.message


def test_documented_installed_message_parses():
    assert parse_message(body()) == CallbackMessage(
        "INSTALLED", "@organization/appname", "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3", "0oa10o3h43eulvWtz358", SECRET
    )


def test_extra_fields_are_tolerated():
    assert parse_message(body(installedBy="someone", scopes=["asset.view"], version=2)).client_secret == SECRET


def test_secret_is_not_in_the_message_repr():
    assert SECRET not in repr(parse_message(body()))


@pytest.mark.parametrize("value", [[], "INSTALLED", None, 42, True], ids=["list", "string", "null", "int", "bool"])
def test_body_that_is_not_an_object_is_refused(value):
    refused(value)


@pytest.mark.parametrize("field", ["type", "irisAppId", "accountId", "clientId", "clientSecret"])
@pytest.mark.parametrize(
    "bad",
    [None, "", "  ", 7, 1.5, False, [], {}, ["x"]],
    ids=["missing", "empty", "blank", "int", "float", "bool", "list", "object", "list_of_str"],
)
def test_missing_empty_or_non_string_field_is_refused_by_name(field, bad):
    message = refused(body(**{field: bad}) if bad is not None else {k: v for k, v in body().items() if k != field})
    assert field in message


@pytest.mark.parametrize(
    "account_id", ["a/b", "a b", "a.b", "a:b", "{a}", "a*", "ä", "a\n", "\na", "a\x00", "a" * 129, "٣"]
)
def test_account_id_outside_1_to_128_letters_digits_dash_underscore_is_refused(account_id):
    assert "accountId" in refused(body(accountId=account_id))


@pytest.mark.parametrize("account_id", ["a", "A-z_09", "x" * 128, "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"])
def test_account_id_of_1_to_128_allowed_characters_is_accepted(account_id):
    assert parse_message(body(accountId=account_id)).account_id == account_id


@pytest.mark.parametrize("field", ["clientId", "clientSecret", "irisAppId"])
def test_over_long_or_control_character_fields_are_refused(field):
    refused(body(**{field: "x" * 1025}))
    refused(body(**{field: "abc\x7f"}))


def test_refusal_never_quotes_the_secret():
    assert SECRET not in refused(body(clientSecret=SECRET + "\n"))
    assert SECRET not in refused(body(clientSecret=SECRET * 30))


@pytest.mark.parametrize("kind", ["UNINSTALLED", "SUSPENDED"])
def test_other_types_need_no_credentials(kind):
    message = parse_message(body(type=kind, clientId=None, clientSecret=None))
    assert (message.type, message.client_id, message.client_secret) == (kind, None, None)


def test_other_types_still_need_a_valid_account_id():
    refused(body(type="UNINSTALLED", accountId="a/b", clientId=None, clientSecret=None))
