"""Settings module for the stock RQ worker: `rq worker -c notifier.rq_settings`.

RQ reads REDIS_URL, QUEUES (drained in this order: urgent first) and DICT_CONFIG from here.
A missing or malformed setting, a channel without a provider, a missing template directory or
an unwritable outbox stops the worker at start-up (exit 2, before it registers) with one line
naming the variable.
"""

from __future__ import annotations

import sys

from notifier.config import load_settings
from notifier.errors import ConfigError
from notifier.pipeline.queues import QUEUE_NAMES
from notifier.pipeline.readiness import check_worker_can_deliver
from notifier.providers.http import QUIET_SDK_LOGGERS
from notifier.redaction import secret_values

try:
    _settings = load_settings()
    REDIS_URL = _settings.require_redis_url()
    # A worker sends: without a provider for a channel (console is opt-in), templates or a
    # writable outbox it must not start, or it would look healthy while failing every job.
    check_worker_can_deliver(_settings)
except ConfigError as _error:
    # Exit 2, like every `notifier` command with a bad setting.
    print(f"notifier: {_error}", file=sys.stderr)
    sys.exit(2)

QUEUES = list(QUEUE_NAMES)
_FORMATTERS = {"json": "JsonFormatter", "text": "TextFormatter"}

DICT_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,  # without it rq's own log lines vanish
    "formatters": {"notifier": {"()": f"notifier.log.{_FORMATTERS[_settings.log_format]}"}},
    # Every record, RQ's and psycopg-pool's included, is redacted before it is written.
    "filters": {
        "redact": {"()": "notifier.redaction.RedactionFilter", "secrets": secret_values(_settings)}
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "notifier",
            "filters": ["redact"],
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["stderr"], "level": _settings.log_level},
    # The same table `notifier.log.configure` applies: the SDK loggers stay quiet here too.
    "loggers": {name: {"level": level} for name, level in QUIET_SDK_LOGGERS.items()},
}
