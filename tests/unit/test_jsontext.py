"""core.jsontext: untrusted JSON gives a value or InvalidJson, never a RecursionError."""

from __future__ import annotations

import pytest

from core import jsontext


@pytest.mark.parametrize(
    "text",
    ["[" * 30_000 + "]" * 30_000, '{"a":' * 30_000 + "1" + "}" * 30_000, "[" * 33 + "]" * 33],
    ids=["arrays past the recursion limit", "objects past the recursion limit", "one past MAX_DEPTH"],
)
def test_deep_nesting_is_invalid_json(text):
    with pytest.raises(jsontext.InvalidJson, match="nested too deeply"):
        jsontext.loads(text)


def test_nesting_up_to_the_limit_is_parsed():
    assert jsontext.loads("[" * 32 + "]" * 32) is not None
    assert jsontext.loads('{"a": [{"b": [1, {"c": null}]}]}', max_depth=5) == {"a": [{"b": [1, {"c": None}]}]}
    with pytest.raises(jsontext.InvalidJson):
        jsontext.loads('{"a": [{"b": [1, {"c": null}]}]}', max_depth=4)


@pytest.mark.parametrize("data", [b"{", b"\xff\xfe", b"", b"[1,]", "NaN-ish"])
def test_what_is_not_json_is_invalid_json_and_quotes_nothing(data):
    with pytest.raises(jsontext.InvalidJson) as caught:
        jsontext.loads(data)
    assert str(caught.value) == "not valid JSON"


def test_a_long_flat_document_is_fine():
    assert len(jsontext.loads("[" + ",".join(["1"] * 20_000) + "]")) == 20_000
