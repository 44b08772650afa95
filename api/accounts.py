"""`/v1/accounts`: what operators may see and do with installed accounts (never their secrets)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt

from flask import Blueprint, request

from api.context import services
from api.requestlog import audit
from core import tunables
from core.errors import AccountNotFound, InvalidRequest
from vault.accounts import AccountRecord, valid_account_id

bp = Blueprint("accounts", __name__, url_prefix="/v1/accounts")


def iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def account_json(record: AccountRecord) -> dict:
    return {
        "account_id": record.account_id,
        "iris_app_id": record.iris_app_id,
        "status": record.status,
        "installed_at": iso(record.installed_at),
        "updated_at": iso(record.updated_at),
    }


@bp.get("")
def list_accounts():
    raw_limit = request.args.get("limit", str(tunables.DEFAULT_PAGE_SIZE))
    # isdigit() alone accepts '²' or '٣' (int() fails on the first): ASCII digits only.
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= tunables.MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {tunables.MAX_PAGE_SIZE}.")
    cursor = request.args.get("cursor") or None
    after = decode_cursor(cursor) if cursor is not None else None
    records, last = services().accounts.page(int(raw_limit), after)
    return {"accounts": [account_json(r) for r in records], "next_cursor": encode_cursor(last) if last else None}


def encode_cursor(account_id: str) -> str:
    """The opaque `next_cursor` for paging on after `account_id`."""
    return base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The account id a cursor of `encode_cursor` names; InvalidRequest for anything else."""
    try:
        account_id = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        if valid_account_id(account_id):
            return account_id
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    raise InvalidRequest("cursor is not a cursor this service returned")


@bp.get("/<account_id>")
def show_account(account_id: str):
    record = services().accounts.get(account_id)
    if record is None:
        raise AccountNotFound()
    return account_json(record)


@bp.delete("/<account_id>")
def delete_account(account_id: str):
    if not services().accounts.delete(account_id):
        raise AccountNotFound()
    audit("account_deleted", account_id=account_id)
    return "", 204
