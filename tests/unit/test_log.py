"""Structured log lines: one event per line with its fields."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from notifier.log import QUIET_SDK_LOGGERS, JsonFormatter, TextFormatter, configure, event


def record_for(event_name: str, /, **fields: object) -> logging.LogRecord:
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = logging.getLogger("test.notifier.log")
    logger.handlers[:] = [Keep()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    event(logger, event_name, logging.INFO, **fields)
    return captured[0]


def test_json_line_has_event_and_fields() -> None:
    line = JsonFormatter().format(
        record_for("job_sent", job_id="j1", attempt=2, provider="sendgrid")
    )
    payload = json.loads(line)
    assert payload["event"] == "job_sent" and payload["level"] == "info"
    assert (payload["job_id"], payload["attempt"], payload["provider"]) == ("j1", 2, "sendgrid")
    assert "\n" not in line


def test_text_line_lists_fields() -> None:
    line = TextFormatter().format(record_for("job_sent", job_id="j1", name="x"))
    assert "job_sent" in line and "job_id=j1" in line and "name=x" in line


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in QUIET_SDK_LOGGERS}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, saved_level in levels.items():
        logging.getLogger(name).setLevel(saved_level)


@pytest.mark.usefixtures("restore_logging")
def test_configure_holds_sdk_loggers_quiet_even_at_debug() -> None:
    logging.getLogger("twilio").setLevel(logging.DEBUG)

    configure("json", "DEBUG")

    for name, level in QUIET_SDK_LOGGERS.items():
        assert logging.getLogger(name).level == logging.getLevelName(level)


def test_the_rq_worker_config_quiets_the_same_sdk_loggers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("NOTIFIER_EMAIL_PROVIDER", "console")
    monkeypatch.setenv("NOTIFIER_SMS_PROVIDER", "console")
    sys.modules.pop("notifier.rq_settings", None)
    try:
        rq_settings = importlib.import_module("notifier.rq_settings")
        loggers = rq_settings.DICT_CONFIG["loggers"]
    finally:
        sys.modules.pop("notifier.rq_settings", None)

    assert loggers == {name: {"level": level} for name, level in QUIET_SDK_LOGGERS.items()}


@pytest.mark.usefixtures("restore_logging")
def test_every_notifier_command_logs_through_the_redaction_filter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("text", "INFO", ["Sendgrid-Key-0123456789"])
    logging.getLogger("psycopg.pool").warning(
        "error connecting: %s key %s", "postgresql://app:hunter2@db/app", "Sendgrid-Key-0123456789"
    )
    err = capsys.readouterr().err
    assert "hunter2" not in err and "Sendgrid-Key" not in err
    assert "postgresql://app:***@db/app" in err


@pytest.mark.usefixtures("restore_logging")
def test_the_rq_worker_logs_through_the_redaction_filter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging.config

    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("NOTIFIER_EMAIL_PROVIDER", "console")
    monkeypatch.setenv("NOTIFIER_SMS_PROVIDER", "console")
    sys.modules.pop("notifier.rq_settings", None)
    try:
        rq_settings = importlib.import_module("notifier.rq_settings")
        logging.config.dictConfig(rq_settings.DICT_CONFIG)
    finally:
        sys.modules.pop("notifier.rq_settings", None)
    logging.getLogger("rq.worker").error("job failed: postgresql://u:hunter2@127.0.0.1:1/db x")
    err = capsys.readouterr().err
    assert "hunter2" not in err and "job failed" in err
