"""Command line: ``python -m simulator serve`` and ``python -m simulator install``."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
from typing import NoReturn

import requests

from . import ServerThread, create_simulator
from .tls import make_certificates


def _serve(args: argparse.Namespace) -> int:
    app = create_simulator(expires_in=args.expires_in)
    certificates, scratch = None, None
    if args.tls or args.tls_port is not None:
        if args.cert_dir is None:
            scratch = tempfile.mkdtemp(prefix="simulator-tls-")
        certificates = make_certificates(args.cert_dir or scratch or ".")
    servers = [
        ServerThread(app, args.host, args.port, log_requests=not args.quiet, tls=certificates if args.tls else None)
    ]
    if args.tls_port is not None:  # a second listener, HTTPS, on the same state
        servers.append(ServerThread(app, args.host, args.tls_port, log_requests=not args.quiet, tls=certificates))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)  # stop cleanly under process managers
    with contextlib.ExitStack() as stack:
        if scratch is not None:
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        for server in servers:
            stack.enter_context(server)
        server = servers[0]
        print(f"Trackunit simulator on {server.url}", flush=True)
        print(f"  token URL: {server.url}/apptoken", flush=True)
        print(f"  JWKS URL:  {server.url}/api/marketplace/jwks", flush=True)
        print(f"  API URL:   {server.url}  (e.g. GET {server.url}/api/asset/v1/assets)", flush=True)
        print(f"  control:   {server.url}/_sim/...", flush=True)
        for extra in servers[1:]:
            print(f"  HTTPS:     {extra.url}  (the same simulator: same accounts, tokens and counters)", flush=True)
        if certificates is not None:
            print(f"  CA bundle: {certificates.ca}  (trust this certificate to verify the HTTPS listener)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


def _exit_on_signal(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def _install(args: argparse.Namespace) -> int:
    payload = {
        "callbackUrl": args.callback,
        "accountId": args.account,
        "irisAppId": args.app_id,
        "scopes": args.scopes.split(),
        "type": args.type,
        "jti": not args.no_jti,
        "accountClaims": not args.no_account_claims,
    }
    if args.identity_token:
        payload["identityToken"] = args.identity_token
    try:
        # The simulator waits up to 10 s for the callback, so wait longer here.
        answer = requests.post(args.simulator.rstrip("/") + "/_sim/install", json=payload, timeout=(5, 30))
    except requests.RequestException as exc:
        print(f"simulator unreachable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        result = answer.json()
    except ValueError:
        result = {"status": answer.status_code, "text": answer.text}
    print(json.dumps(result, indent=2))
    status = result.get("callbackStatus") if isinstance(result, dict) else None
    return 0 if answer.ok and isinstance(status, int) and 200 <= status < 300 else 1


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run a subcommand; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the simulator")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5001, help="0 picks a free port")
    serve.add_argument("--expires-in", type=int, default=3600, help="lifetime of issued tokens (s)")
    serve.add_argument("--tls", action="store_true", help="serve HTTPS (a fresh test CA; its path is printed)")
    serve.add_argument(
        "--tls-port",
        type=int,
        default=None,
        help="also serve HTTPS on this port (0 picks a free one), beside plain HTTP on --port",
    )
    serve.add_argument(
        "--cert-dir",
        default=None,
        help="where ca.pem, cert.pem and key.pem are written (default: a new temporary directory)",
    )
    serve.add_argument("--quiet", action="store_true", help="no access log line per request")
    serve.set_defaults(func=_serve)

    install = sub.add_parser("install", help="make a running simulator call an app's tokenCallback")
    install.add_argument("--simulator", required=True, help="simulator base URL")
    install.add_argument("--callback", required=True, help="the app's tokenCallback URL")
    install.add_argument("--account", required=True, help="account id")
    install.add_argument("--app-id", default="@organization/appname")
    install.add_argument("--scopes", default="asset.view account.view", help="space-separated")
    install.add_argument("--type", default="INSTALLED")
    install.add_argument(
        "--no-jti",
        action="store_true",
        help="sign the identity without a jti (as an issuer may: Trackunit documents no claims)",
    )
    install.add_argument(
        "--no-account-claims", action="store_true", help="sign the identity without irisAppId and accountId claims"
    )
    install.add_argument("--identity-token", help="send this Trackunit-Identity token instead of signing one")
    install.set_defaults(func=_install)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
