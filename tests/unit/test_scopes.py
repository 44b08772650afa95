import pytest

from auth.scopes import requested_scopes, scope_id
from core.config import AppScopes
from core.errors import InvalidScope

SCOPES = AppScopes.parse("asset.view account.view account.alert.view?")


def test_default_is_required_scopes():
    assert requested_scopes(None, SCOPES) == ("account.view", "asset.view")
    assert requested_scopes("  ", SCOPES) == ("account.view", "asset.view")


def test_order_separators_and_duplicates_normalise_to_one_slot():
    a = requested_scopes("asset.view account.alert.view", SCOPES)
    b = requested_scopes("account.alert.view,asset.view,,asset.view", SCOPES)
    assert a == b == ("account.alert.view", "asset.view")
    assert scope_id(a) == scope_id(b)
    assert scope_id(a) != scope_id(("asset.view",))


def test_unknown_scope_refused():
    with pytest.raises(InvalidScope):
        requested_scopes("asset.view account.user.manage", SCOPES)
