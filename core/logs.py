"""Logging setup: one JSON object per line on stderr, and a redaction net under every handler.

Code never logs a secret on purpose; the net is for accidents. `RedactionFilter` replaces the
configured secrets (vault keys, API keys, the Redis password) wherever they appear, and
anything shaped like a bearer token, a client secret or a URL password. It is configured in
one place, `configure()`, and applied in two positions, because logging offers no single hook
that every record passes on its way to every handler:

- as the `filters` of the handler `logging.config.dictConfig` puts on the root logger: there it
  sees the whole record, `extra={...}` fields and the exception text included;
- in the LogRecord factory, because a handler filter only guards its own handler, and a logger
  filter only the records made by that very logger (not those propagated from its children).
  Handlers that others attach later, to the root or to any logger (pytest's caplog, gunicorn's
  error and access logs, which do not propagate to the root), see only what was redacted when
  the record was made. The factory is the one place every record passes, whichever logger made
  it: it redacts the message (its arguments merged in), the exception and the stack text there.
  Fields from `extra={...}` are set after the factory returns, so they are redacted by the
  handler filter only; code puts no secret in them (ids, names, counts).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "[redacted]"
HANDLER = "itv-stderr"  # the name of the handler `configure()` puts on the root logger
_PATTERNS = [
    re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.I),
    re.compile(
        r"((?:client_?secret|access_?token|api_?key|password|vault_key)[\"']?\s*[:=]\s*[\"']?)[^\"'\s&,}]+", re.I
    ),
    re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+(?=@)", re.I),
    re.compile(r"(\b)itv_[A-Za-z0-9_-]{40,}"),  # a managed API key (vault.apikeys.PREFIX), wherever it appears
]
# Substrings without which no pattern can match: a cheap test that skips the regexes on the hot path.
_TRIGGERS = (
    *("bearer", "secret", "access_token", "accesstoken", "apikey", "api_key", "password", "vault_key", "redis"),
    "itv_",
)
# Attributes every LogRecord has; the others came from `extra={...}` and are copied into the JSON line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Libraries that could log request lines or bodies stay at WARNING.
_QUIET = ("urllib3", "requests", "requests_oauthlib", "oauthlib")


class Redactor:
    """Replaces known secret values and secret-shaped substrings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if _triggered(text):
            for pattern in _PATTERNS:
                text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def needed(self, text: str) -> bool:
        """Whether `text` holds anything `__call__` would change (cheaper than calling it: one scan)."""
        return any(secret in text for secret in self.secrets) or _triggered(text)


def _triggered(text: str) -> bool:
    lowered = text.lower()
    return any(trigger in lowered for trigger in _TRIGGERS)


class RedactionFilter(logging.Filter):
    """Redacts a record in place (message, exception and stack text, string `extra` fields); drops nothing.

    The secrets of every app configured in this process are kept (tests build many apps).
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self.redact = Redactor()

    def add_secrets(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets.update(secrets)
            self.redact = Redactor(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        self.redact_made(record)
        fields = [
            (key, value if isinstance(value, str) else json.dumps(value, default=str))
            for key, value in vars(record).items()
            if key not in _STANDARD and value is not None and not isinstance(value, (bool, int, float))
        ]
        redact = self.redact
        # An audit line has about ten fields and almost never anything to redact: test them all in one
        # scan, and redact field by field only when something is there.
        if fields and redact.needed("\x00".join(text for _, text in fields)):
            for key, text in fields:
                clean = redact(text)
                if clean != text:  # a field that is not text is replaced by its redacted JSON
                    setattr(record, key, clean)
        return True

    def redact_made(self, record: logging.LogRecord) -> None:
        """What a record holds when it is made: the message and its arguments, the exception, the stack."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it to logging's own error path
            return
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)

    def record_factory(self, base: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
        """A LogRecord factory that makes records with `base` and redacts them at once."""

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            self.redact_made(record)
            return record

        return factory


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra, "exception"}` (the record is redacted by then)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


REDACTION = RedactionFilter()  # the one redaction of this process


def _redaction() -> RedactionFilter:
    """The filter factory dictConfig calls (`"()"`): always the process's one filter."""
    return REDACTION


def logging_config(level: int | str = logging.INFO) -> dict[str, Any]:
    """The `logging.config.dictConfig` configuration: JSON lines on stderr for the root logger, redacted."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": _redaction}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            HANDLER: {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["redact"],
            }
        },
        "loggers": {name: {"level": "WARNING"} for name in _QUIET},
        "root": {"level": level, "handlers": [HANDLER]},
    }


_configured = False
_configure_lock = threading.Lock()


def configure(secrets: Iterable[str], *, level: int = logging.INFO) -> RedactionFilter:
    """Redact `secrets` from now on; the first call in a process also sets logging up (`logging_config`).

    Later calls (every app a process builds calls this) only add their secrets: dictConfig
    replaces the root logger's handlers, and those a host attached meanwhile (pytest's) must stay.
    """
    global _configured
    REDACTION.add_secrets(secrets)
    with _configure_lock:
        if not _configured:
            root = logging.getLogger()
            hosts = root.handlers[:]  # attached before us (pytest's capture): kept, after ours
            logging.config.dictConfig(logging_config(level))
            for handler in hosts:
                root.addHandler(handler)
            logging.setLogRecordFactory(REDACTION.record_factory(logging.getLogRecordFactory()))
            _configured = True
    return REDACTION
