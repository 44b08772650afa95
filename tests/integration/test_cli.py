"""The operator commands (`flask --app app vault|accounts ...`) against a real redis-server."""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.config import Config
from tests.support.constants import APP_ID, OLD_KEY, VAULT_KEY
from tests.support.records import read_sealed, write_sealed
from tests.support.rotation import (
    KEYS,
    NEW_ID,
    OLD_ID,
    SLOT,
    THIRD_KEY,
    account,
    cached,
    creds,
    install_many,
    repository,
    token_cache,
    token_key,
)
from vault.keys import KEY_SIZE, parse_key
from vault.layout import KeySpace

ROOT = Path(__file__).resolve().parents[2]


# Helpers ---------------------------------------------------------------------------------------


def run(make_app, *args: str, input: str | None = None, **overrides: str):
    """Invoke a command the way `flask --app app ...` does, with the test environment + overrides."""
    app = make_app(**overrides)
    return app.test_cli_runner().invoke(args=list(args), input=input)


def rotate(make_app, *args: str, keys: tuple[str, ...] = (VAULT_KEY, OLD_KEY)):
    return run(make_app, "vault", "rotate", *args, VAULT_KEY=keys[0], VAULT_PREVIOUS_KEYS=",".join(keys[1:]))


def check(make_app, *args: str, keys: tuple[str, ...] = (VAULT_KEY,)):
    return run(make_app, "vault", "check", *args, VAULT_KEY=keys[0], VAULT_PREVIOUS_KEYS=",".join(keys[1:]))


def report_of(result) -> dict:
    return json.loads(result.stdout)


def rows(report: dict) -> dict[tuple[str, str], dict]:
    return {
        (row["key_id"], row["record"]): {k: v for k, v in row.items() if k not in ("key_id", "record")}
        for row in report["keys"]
    }


def clean_env() -> dict[str, str]:
    """No service configuration at all (only what finds the interpreter)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


# vault keygen ----------------------------------------------------------------------------------------


def test_keygen_prints_a_new_key_that_vault_key_accepts(make_app, env):
    first, second = run(make_app, "vault", "keygen"), run(make_app, "vault", "keygen")
    assert first.exit_code == 0 and second.exit_code == 0
    assert len(parse_key(first.stdout.strip(), "VAULT_KEY")) == KEY_SIZE
    assert first.stdout != second.stdout and first.stdout.count("\n") == 1
    as_hex = run(make_app, "vault", "keygen", "--hex").stdout.strip()
    assert len(as_hex) == 64 and len(parse_key(as_hex, "VAULT_KEY")) == KEY_SIZE
    Config.from_env({**env, "VAULT_KEY": first.stdout.strip(), "VAULT_PREVIOUS_KEYS": as_hex})


def test_keygen_needs_no_configuration():
    for args in (["keygen"], ["keygen", "--hex"]):
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert len(parse_key(done.stdout.strip(), "VAULT_KEY")) == KEY_SIZE
    # `flask vault keygen` builds the app first (wsgi.py): without configuration it stops, naming what is missing.
    flask = subprocess.run(
        [sys.executable, "-m", "flask", "vault", "keygen"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flask.returncode != 0 and "REDIS_URL is missing" in flask.stderr and not flask.stdout.strip()


def test_flask_app_factory_without_configuration_says_what_is_missing_in_one_line():
    # `flask --app app` calls create_app() itself: a missing variable is one line, never a traceback.
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "vault", "check"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and not done.stdout.strip()
    assert done.stderr.strip() == "Error: configuration error: REDIS_URL is missing"


# vault rotate -----------------------------------------------------------------------------------------


class WebProcess(threading.Thread):
    """Re-installs, deletes and refreshes tokens the way the service does, with the new key, until stopped."""

    def __init__(self, redis_client, reinstall: list[int], delete: list[int], refresh: list[int]) -> None:
        super().__init__(daemon=True, name="web-process")
        self.accounts = repository(redis_client, VAULT_KEY, OLD_KEY)
        self.tokens = token_cache(redis_client, VAULT_KEY, OLD_KEY)
        ops = (
            [("reinstall", i) for i in reinstall] + [("delete", i) for i in delete] + [("refresh", i) for i in refresh]
        )
        random.Random(7).shuffle(ops)
        self.ops = ops
        self.credentials: dict[int, object] = {}  # latest credentials written per account
        self.token_values: dict[int, str] = {}  # latest token written per account
        self.deleted: set[int] = set()
        self.done = 0
        self.started_writing = threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            version = 0
            while not self.stop.is_set():
                version += 1
                for kind, i in self.ops:
                    if self.stop.is_set():
                        break
                    if kind == "reinstall":
                        self.accounts.install(account(i), APP_ID, creds(i, version))
                        self.credentials[i] = creds(i, version)
                    elif kind == "delete" and i not in self.deleted:
                        self.accounts.delete(account(i))
                        self.deleted.add(i)
                    elif kind == "refresh":
                        value = f"token-{i}-v{version}"
                        assert self.tokens.put(
                            account(i), self.accounts.get(account(i)).generation, SLOT, cached(value, 30_000)
                        )
                        self.token_values[i] = value
                    self.done += 1
                    self.started_writing.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
            self.started_writing.set()


def test_rotating_10000_accounts_while_the_service_writes_loses_and_clobbers_nothing(make_app, redis_client, capsys):
    n, token_every = 10_000, 40
    started = time.monotonic()
    install_many(redis_client, n, tokens_every=token_every)  # AccountRepository.install in a loop, old key
    installed_in = time.monotonic() - started
    with_token = set(range(0, n, token_every))
    shuffled = list(range(n))
    random.Random(3).shuffle(shuffled)
    reinstall, delete = shuffled[:500], shuffled[500:800]
    refresh = sorted(with_token - set(shuffled[:800]))[:100]
    web = WebProcess(redis_client, reinstall, delete, refresh)

    web.start()
    assert web.started_writing.wait(30) and not web.errors
    before, began = web.done, time.monotonic()
    result = rotate(make_app, "--json")
    took, during = time.monotonic() - began, web.done - before
    web.stop.set()
    web.join(30)
    assert not web.is_alive() and not web.errors
    assert during > 0  # the service wrote while the rotation ran

    assert result.exit_code == 0, result.output
    report = report_of(result)
    totals = report["totals"]
    assert totals["failed to open"] == 0 and totals["skipped"] == 0 and totals["re-sealed"] > 0
    assert {kid for kid, _ in rows(report)} <= {OLD_ID, NEW_ID} and report["complete"]

    # Only the new key from here on: every record opens, and holds what was last written to it.
    new_only = repository(redis_client, VAULT_KEY)
    layout = KeySpace("test")
    with_keys = {
        layout.parse(key).account_id for key in redis_client.scan_iter(match=layout.account_scan_pattern, count=1000)
    }
    assert len(with_keys) == n - len(web.deleted)
    for i in range(n):
        loaded = new_only.load(account(i))
        if i in web.deleted:
            assert loaded is None and redis_client.zscore(KEYS.index(KEYS.group_of(account(i))), account(i)) is None
            assert account(i) not in with_keys  # nothing of a deleted account came back
        else:
            expected = web.credentials.get(i, creds(i))
            assert loaded[1] == expected and loaded[1].client_secret == expected.client_secret, account(i)
    new_tokens = token_cache(redis_client, VAULT_KEY)
    tokens_left = with_token - set(web.credentials) - web.deleted  # a re-install or delete drops the tokens
    for i in with_token:
        token = new_tokens.get(account(i), SLOT)
        if i in tokens_left:
            assert token.access_token == web.token_values.get(i, f"token-{i}-v0"), account(i)
            assert 0 < redis_client.pttl(token_key(i)) <= (30_000 if i in web.token_values else 10_000 + i) * 1000
        else:
            assert token is None and not redis_client.exists(token_key(i))

    checked = check(make_app, "--json")
    assert checked.exit_code == 0, checked.output
    assert rows(report_of(checked)) == {
        (NEW_ID, "credentials"): {"opens": n - len(web.deleted), "failed to open": 0},
        (NEW_ID, "token"): {"opens": len(tokens_left), "failed to open": 0},
    }
    records = n + len(with_token)
    with capsys.disabled():
        print(
            f"\n  10,000 accounts + {len(with_token)} tokens installed in {installed_in:.1f} s; rotate: "
            f"{records} records in {took:.2f} s ({records / took:.0f} records/s), {during} concurrent writes, "
            f"totals {totals}"
        )


def test_rotate_is_idempotent_and_resumes_after_a_partial_run(make_app, redis_client):
    install_many(redis_client, 300, tokens_every=10)

    partial = rotate(make_app, "--limit", "100", "--batch", "50")
    assert partial.exit_code == 0, partial.output
    assert "Stopped after re-sealing 100 record(s)" in partial.stdout
    midway = check(make_app, "--json", keys=(VAULT_KEY, OLD_KEY))
    assert midway.exit_code == 0
    counted = rows(report_of(midway))
    assert sum(v["opens"] for (kid, _), v in counted.items() if kid == NEW_ID) == 100
    assert sum(v["opens"] for (kid, _), v in counted.items() if kid == OLD_ID) == 230
    assert "230 record(s) are not under the current key" in check(make_app, keys=(VAULT_KEY, OLD_KEY)).stdout
    assert check(make_app).exit_code == 1  # the new key alone does not open them yet

    rest = rotate(make_app, "--json")
    assert rest.exit_code == 0 and report_of(rest)["totals"]["re-sealed"] == 230
    assert report_of(rest)["totals"]["already current"] == 100

    again = rotate(make_app)
    assert again.exit_code == 0, again.output
    lines = again.stdout.splitlines()
    assert lines[0] == f"Re-sealing every record under key id {NEW_ID} (VAULT_KEY)."
    assert lines[1].split() == [
        "key",
        "id",
        "record",
        "re-sealed",
        "already",
        "current",
        "changed",
        "concurrently",
        "skipped",
        "failed",
        "to",
        "open",
    ]
    assert lines[2].split() == [NEW_ID, "(current)", "credentials", "0", "300", "0", "0", "0"]
    assert lines[3].split() == [NEW_ID, "(current)", "token", "0", "30", "0", "0", "0"]
    assert lines[4].split() == ["total", "0", "330", "0", "0", "0"]
    assert "the previous keys can be dropped" in again.stdout
    final = check(make_app)
    assert final.exit_code == 0 and "330 record(s)" in final.stdout


def test_rotate_exits_non_zero_when_a_record_does_not_open(make_app, redis_client):
    install_many(redis_client, 4)
    repository(redis_client, THIRD_KEY).install(account(2), APP_ID, creds(2))
    result = rotate(make_app)
    assert result.exit_code == 1
    assert f"account {account(2)}: credentials: sealed with unknown key id" in result.stdout
    assert "1 record(s) do not open with the configured keys" in result.stdout
    assert "can be dropped" not in result.stdout
    assert report_of(rotate(make_app, "--json"))["totals"] == {
        "re-sealed": 0,
        "already current": 3,
        "changed concurrently": 0,
        "skipped": 0,
        "failed to open": 1,
    }


# vault check ------------------------------------------------------------------------------------------


def test_check_reports_a_tampered_record_by_account_without_printing_it(make_app, redis_client, caplog):
    install_many(redis_client, 5, VAULT_KEY, tokens_every=1)
    key = KEYS.key_for(account(3))
    sealed = read_sealed(redis_client, key)
    tampered = bytearray(sealed)
    tampered[len(tampered) // 2] ^= 0x01
    write_sealed(redis_client, key, bytes(tampered))
    caplog.set_level(logging.DEBUG)

    text, as_json = check(make_app), check(make_app, "--json")

    assert text.exit_code == 1 and as_json.exit_code == 1
    assert f"account {account(3)}: credentials: failed to open a value sealed with key id {NEW_ID}" in text.stdout
    assert report_of(as_json)["problems"] == [
        {
            "account_id": account(3),
            "record": "credentials",
            "key_id": NEW_ID,
            "reason": f"failed to open a value sealed with key id {NEW_ID}",
        }
    ]
    assert rows(report_of(as_json)) == {
        (NEW_ID, "credentials"): {"opens": 4, "failed to open": 1},
        (NEW_ID, "token"): {"opens": 5, "failed to open": 0},
    }
    printed = text.output + as_json.output + caplog.text
    body = bytes(tampered)[5:]
    traces = [
        repr(bytes(tampered)),
        bytes(tampered).hex(),
        body.hex(),
        body[:24].hex(),
        body[24:].hex(),
        base64.b64encode(bytes(tampered)).decode(),
        base64.b64encode(body).decode(),
        repr(sealed),
        sealed.hex(),
    ]
    assert not [trace for trace in traces if trace in printed]
    secrets = [creds(i).client_secret for i in range(5)] + [creds(i).client_id for i in range(5)]
    assert not [secret for secret in secrets if secret in printed]


def test_commands_end_with_one_line_when_redis_is_down(make_app, redis_server, redis_client):
    install_many(redis_client, 2)
    app = make_app()
    redis_server.stop()
    for args in (["vault", "check"], ["vault", "rotate"], ["accounts", "list"], ["accounts", "show", account(1)]):
        result = app.test_cli_runner().invoke(args=args)
        assert result.exit_code == 1, (args, result.output)
        assert "Error: The credential store (Redis) is unavailable." in result.output
        assert "Traceback" not in result.output


# accounts ---------------------------------------------------------------------------------------------


def test_accounts_list_show_and_delete(make_app, redis_client, caplog):
    install_many(redis_client, 3, VAULT_KEY, tokens_every=1)
    secrets = [creds(i).client_secret for i in range(3)] + [creds(i).client_id for i in range(3)]

    listed = run(make_app, "accounts", "list")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["account", "id", "status"]
    assert [line.split()[:2] for line in lines[1:]] == [[account(i), "active"] for i in range(3)]
    assert "3 account(s)" in listed.stderr
    as_json = [json.loads(line) for line in run(make_app, "accounts", "list", "--json").stdout.splitlines()]
    assert [a["account_id"] for a in as_json] == [account(i) for i in range(3)]
    assert set(as_json[0]) == {"account_id", "iris_app_id", "status", "installed_at", "updated_at"}

    shown = run(make_app, "accounts", "show", account(1))
    assert shown.exit_code == 0
    assert f"account_id:         {account(1)}" in shown.stdout and f"iris_app_id:        {APP_ID}" in shown.stdout
    assert f"credentials_key_id: {NEW_ID}" in shown.stdout and "revoked_until:      -" in shown.stdout
    shown_json = json.loads(run(make_app, "accounts", "show", account(1), "--json").stdout)
    assert shown_json["status"] == "active" and shown_json["credentials_key_id"] == NEW_ID
    assert not [s for s in secrets if s in listed.output + shown.output + json.dumps(shown_json)]
    missing = run(make_app, "accounts", "show", "nope")
    assert missing.exit_code == 1 and "account nope is not installed" in missing.output
    assert run(make_app, "accounts", "show", "not/an-id").exit_code == 2

    refused = run(make_app, "accounts", "delete", account(1), input="n\n")
    assert refused.exit_code == 1 and redis_client.exists(KEYS.key_for(account(1)))
    caplog.set_level(logging.INFO, logger="itv.audit")
    deleted = run(make_app, "accounts", "delete", account(1), input="y\n")
    assert deleted.exit_code == 0 and f"deleted account {account(1)}" in deleted.stdout
    assert [(r.getMessage(), r.account_id, r.key_name) for r in caplog.records if r.name == "itv.audit"] == [
        ("account_deleted", account(1), "cli")
    ]
    assert not list(redis_client.scan_iter(KEYS.pattern(account(1))))
    assert redis_client.zscore(KEYS.index(KEYS.group_of(account(1))), account(1)) is None
    again = run(make_app, "accounts", "delete", account(1), "--yes")
    assert again.exit_code == 1 and "is not installed" in again.output
    assert run(make_app, "accounts", "delete", account(2), "--yes").exit_code == 0
    assert [line.split()[0] for line in run(make_app, "accounts", "list").stdout.splitlines()[1:]] == [account(0)]
    assert run(make_app, "accounts", "list").stderr.strip() == "1 account(s)"
