"""Logging setup: one JSON object per line, and a redaction net under every handler.

Code never logs a secret on purpose; the net is for accidents. It replaces
the configured secrets (vault keys, API keys, the Redis password) wherever
they appear, and anything shaped like a bearer token, a client secret or a
URL password.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterable

REDACTED = "[redacted]"
_PATTERNS = [
    re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.I),
    re.compile(r"((?:client_?secret|access_?token|api_?key|password|vault_key)[\"']?\s*[:=]\s*[\"']?)[^\"'\s&,}]+", re.I),
    re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+(?=@)", re.I),
]
# Substrings without which no pattern can match: a cheap test that skips the regexes on the hot path.
_TRIGGERS = ("bearer", "secret", "access_token", "accesstoken", "apikey", "api_key", "password", "vault_key", "redis")
# Fields copied from `extra={...}` into the JSON line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class Redactor:
    """Replaces known secret values and secret-shaped substrings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        lowered = text.lower()
        if any(trigger in lowered for trigger in _TRIGGERS):
            for pattern in _PATTERNS:
                text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra}`, redacted as a whole."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, default=str))


def _redacting_factory(base, redactor: Redactor):
    """Every LogRecord, whichever handler gets it (gunicorn's, pytest's), has its message redacted."""

    def factory(*args, **kwargs):
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it to logging's own error path
            return record
        clean = redactor(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return record

    factory._itv_base = base  # type: ignore[attr-defined]
    return factory


def configure(secrets: Iterable[str], *, level: int = logging.INFO) -> Redactor:
    """JSON lines on stderr for the root logger; every record is redacted when it is made."""
    redactor = Redactor(secrets)
    root = logging.getLogger()
    if not any(getattr(h, "_itv", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._itv = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_itv", False):
            handler.setFormatter(JsonFormatter(redactor))
    base = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_redacting_factory(getattr(base, "_itv_base", base), redactor))
    # Libraries that could log request lines or bodies stay at WARNING.
    for name in ("urllib3", "requests", "requests_oauthlib", "oauthlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return redactor
