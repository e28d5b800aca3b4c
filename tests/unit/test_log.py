"""Structured log lines: one event per line with its fields."""

from __future__ import annotations

import json
import logging

from notifier.log import JsonFormatter, TextFormatter, event


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
