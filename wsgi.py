"""The production entry point (gunicorn `wsgi:app`): configuration comes only from the environment.

A missing or malformed variable stops the process with one line naming it;
there is never a fallback to an in-memory store.
"""

import sys

from core.config import ConfigError

try:
    from app import create_app

    app = create_app()
    # This worker delivers webhooks too, unless EVENT_DELIVERY says another process does (README, "Events").
    app.extensions["vault"].events.start_in_web()
except ConfigError as exc:
    print(f"iris-token-vault: configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None
