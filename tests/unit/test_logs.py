"""The redaction net: whichever logger makes a record and whichever handler gets it, no configured
secret and nothing secret-shaped gets through (core.logs)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from core import logs

SECRET = "unit-test-configured-secret-0001"
SHAPED = "client_secret=abc123def456ghi"  # not configured: caught by its shape


@pytest.fixture(autouse=True)
def configured():
    logs.configure([SECRET])


@pytest.fixture
def own_handler_logger():
    """A logger with a handler of its own, not propagating: like gunicorn's error and access logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("itv.test.own-handler")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def our_handler() -> logging.Handler:
    handlers = [h for h in logging.getLogger().handlers if h.name == logs.HANDLER]
    assert len(handlers) == 1, logging.getLogger().handlers
    return handlers[0]


def test_configuring_again_adds_secrets_without_a_second_handler_or_losing_the_hosts(caplog):
    caplog.set_level(logging.INFO)
    later = "unit-test-later-app-secret-0002"
    logs.configure([later])
    assert caplog.handler in logging.getLogger().handlers  # pytest's handler is still attached
    our_handler()
    logging.getLogger("itv.test").info("both %s %s", SECRET, later)
    assert SECRET not in caplog.text and later not in caplog.text
    assert caplog.records[-1].getMessage() == f"both {logs.REDACTED} {logs.REDACTED}"


def test_a_handler_on_a_logger_that_does_not_propagate_gets_redacted_messages_and_tracebacks(own_handler_logger):
    logger, stream = own_handler_logger
    logger.warning("configured %s, shaped %s, header %s", SECRET, SHAPED, "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig")
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        logger.exception("redis://user:p4ssw0rd-value@redis.example:6379 did not answer")
    text = stream.getvalue()
    assert "RuntimeError" in text and "Traceback" in text  # the exception is there, redacted
    leaks = [s for s in (SECRET, "abc123def456ghi", "eyJhbGciOiJSUzI1NiJ9", "p4ssw0rd-value") if s in text]
    assert not leaks, text
    assert text.count(logs.REDACTED) >= 5


def test_records_of_any_logger_reach_pytests_caplog_redacted(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("auth.memory.feed", "urllib3.connectionpool", "gunicorn.error", "some.library"):
        logging.getLogger(name).warning("value %r", {"secret": SECRET})
    assert len(caplog.records) == 4
    assert SECRET not in caplog.text
    assert not [r for r in caplog.records if SECRET in r.getMessage() or SECRET in repr(r.args)]


def test_our_handler_redacts_extra_fields_and_writes_one_json_line():
    handler = our_handler()
    try:
        raise ValueError(SECRET)
    except ValueError as exc:
        record = logging.getLogger("itv.audit").makeRecord(
            "itv.audit",
            logging.INFO,
            __file__,
            1,
            "token_issued",
            (),
            (type(exc), exc, exc.__traceback__),
            extra={"account_id": "acc-1", "note": f"with {SECRET}", "fields": {"secret": SECRET}, "count": 3},
        )
    assert handler.filter(record)  # the configured filters: redacted in place, never dropped
    line = json.loads(handler.format(record))
    assert line["message"] == "token_issued" and line["logger"] == "itv.audit" and line["level"] == "info"
    assert line["account_id"] == "acc-1" and line["count"] == 3
    assert line["note"] == f"with {logs.REDACTED}"
    assert "ValueError" in line["exception"]
    assert SECRET not in json.dumps(line)


def test_the_configuration_is_a_dict_config_with_the_filter_on_its_handler():
    config = logs.logging_config()
    assert config["root"]["handlers"] == [logs.HANDLER]
    assert config["handlers"][logs.HANDLER]["filters"] == ["redact"]
    assert any(isinstance(f, logs.RedactionFilter) for f in our_handler().filters)


def test_a_handler_ahead_of_ours_on_the_root_logger_gets_redacted_messages():
    """Handler filters run handler by handler: ours cannot clean a record for a handler that comes first."""
    stream = io.StringIO()
    ahead = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.handlers.insert(0, ahead)
    try:
        logging.getLogger("itv.test.ahead").warning("configured %s, shaped %s", SECRET, SHAPED)
    finally:
        root.removeHandler(ahead)
    assert stream.getvalue() == f"configured {logs.REDACTED}, shaped client_secret={logs.REDACTED}\n"
