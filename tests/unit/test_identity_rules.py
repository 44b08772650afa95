"""What a verified identity token can be held to: its jti binding, its iat, the message's content."""

import json

import pytest

from auth.identity import issued_at, message_digest, replay_rule
from core import tunables
from vault.layout import KeySpace

NOW = 1_800_000_000


def test_no_jti_means_no_binding():
    assert replay_rule({"iss": "x", "exp": NOW + 60}, NOW) is None
    assert replay_rule({"jti": ""}, NOW) is None


def test_the_binding_lives_until_exp_plus_leeway_at_most_the_window():
    assert replay_rule({"jti": "j", "exp": NOW + 300}, NOW).ttl == 300 + tunables.IDENTITY_LEEWAY
    assert replay_rule({"jti": "j", "exp": NOW + 10**9}, NOW).ttl == tunables.IDENTITY_REPLAY_WINDOW
    assert replay_rule({"jti": "j"}, NOW).ttl == tunables.IDENTITY_REPLAY_WINDOW
    assert replay_rule({"jti": "j", "exp": NOW - tunables.IDENTITY_LEEWAY - 5}, NOW).ttl == 1


def test_the_rule_names_the_issuer():
    assert replay_rule({"jti": "j", "iss": "https://a"}, NOW).issuer == "https://a"
    assert replay_rule({"jti": "j", "iss": 5}, NOW).issuer == ""


@pytest.mark.parametrize(
    "claims, expected", [({"iat": NOW}, NOW), ({"iat": NOW + 0.9}, NOW), ({}, None), ({"iat": True}, None)]
)
def test_issued_at(claims, expected):
    assert issued_at(claims) == expected


def test_a_message_is_its_content_not_its_bytes():
    body = {"type": "INSTALLED", "accountId": "a", "clientSecret": "s-é"}
    same = json.loads(json.dumps(dict(reversed(list(body.items()))), indent=3, ensure_ascii=False))
    assert message_digest(body) == message_digest(same)
    assert message_digest(body) != message_digest({**body, "clientSecret": "t"})
    assert message_digest({"a": 1}) != message_digest({"a": "1"})


def test_binding_keys_never_collide_across_issuers_apps_or_jtis():
    keys = KeySpace("p")
    names = {
        keys.identity("a", "@o/app", "j"),
        keys.identity("b", "@o/app", "j"),
        keys.identity("a", "@o/other", "j"),
        keys.identity("a", "@o/app", "k"),
        keys.identity("a:", "@o/app", "j"),
        keys.identity("a", ":@o/app", "j"),
    }
    assert len(names) == 6
    assert all(name.startswith("p:identity:") and len(name) == len("p:identity:") + 64 for name in names)
