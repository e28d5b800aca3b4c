"""Structured logging: one event per line with fields; JSON when LOG_FORMAT=json.

Call `event(logger, "job_sent", job_id=..., provider=...)`. Fields never carry secrets: callers
pass ids, counts and masked URLs only.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from notifier.redaction import RedactionFilter

_FIELDS = "notifier_fields"

# SDK loggers held above DEBUG whatever LOG_LEVEL says: python_http_client (SendGrid's HTTP
# layer) logs request headers, API key included, at DEBUG; twilio logs ~10 lines per request
# at INFO. The one table, applied by `quiet_sdk_loggers` and by the RQ worker's DICT_CONFIG.
QUIET_SDK_LOGGERS: Mapping[str, str] = {"python_http_client": "INFO", "twilio": "WARNING"}


def quiet_sdk_loggers(*, override: bool = False) -> None:
    """Raise each SDK logger to its level in `QUIET_SDK_LOGGERS`.

    Providers call it when built (`override=False`: a level someone set on purpose stays);
    `notifier.log.configure` overrides, as it owns the process's logging.
    """
    for name, level in QUIET_SDK_LOGGERS.items():
        logger = logging.getLogger(name)
        if override or logger.level == logging.NOTSET:
            logger.setLevel(level)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one named event with its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={_FIELDS: fields})


class JsonFormatter(logging.Formatter):
    """`{"timestamp", "level", "logger", "event", ...fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and redacted) by `RedactionFilter`
            payload["error"] = record.exc_text
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """`12:00:01 INFO  job_sent job_id=... provider=sendgrid` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, {})
        parts = [f"{key}={value}" for key, value in fields.items() if value is not None]
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{time} {record.levelname:<7} {record.getMessage()} {' '.join(parts)}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and redacted) by `RedactionFilter`
            line += "\n" + record.exc_text
        return line


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(
    log_format: str = "text", level: str = "INFO", secrets: list[str] | None = None
) -> None:
    """Send every logger's records to stderr in the chosen format, SDK loggers held quiet,
    every record redacted (`RedactionFilter`: URL passwords, `password=`, the long `secrets`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(RedactionFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_sdk_loggers(override=True)
