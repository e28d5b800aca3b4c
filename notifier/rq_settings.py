"""Settings module for the stock RQ worker: `rq worker -c notifier.rq_settings`.

RQ reads REDIS_URL, QUEUES (drained in this order: urgent first) and DICT_CONFIG from here.
Importing it also makes the worker's Redis connection retry through a Redis restart of up to
about 30 s instead of quitting (notifier/pipeline/redis_retry.py says why and how).
A missing or malformed setting, a channel without a provider, a missing template directory or
an unwritable outbox stops the worker at start-up (exit 2, before it registers) with one line
naming the variable.
"""

from __future__ import annotations

import importlib
import sys

from notifier.config import load_settings
from notifier.errors import ConfigError, StoreAuthError, StoreFunctionMissingError
from notifier.log import QUIET_SDK_LOGGERS
from notifier.pipeline import redis_retry
from notifier.pipeline.queues import QUEUE_NAMES
from notifier.pipeline.readiness import check_worker_can_deliver
from notifier.redaction import secret_values
from notifier.store.backend import check_backend

try:
    _settings = load_settings()
    REDIS_URL = _settings.require_redis_url()
    # A worker sends: with no provider at all, no templates or no writable outbox it must not
    # start, or it would look healthy while failing every job; a channel without a provider
    # is named here, and its jobs fail with the same words (console is opt-in).
    check_worker_can_deliver(_settings)
    # DATABASE_URL, or the Supabase REST API with a key it accepts and notifier's functions.
    check_backend(_settings)
except (ConfigError, StoreAuthError, StoreFunctionMissingError) as _error:
    # Exit 2, like every `notifier` command with a bad setting.
    print(f"notifier: {_error}", file=sys.stderr)
    sys.exit(2)
for _channel, _how_to_fix in _settings.missing_providers().items():
    print(f"notifier: {_channel} jobs will fail: {_how_to_fix}", file=sys.stderr)

redis_retry.install()  # before RQ connects: it imports this module first
# Import the task, the providers and their SDKs once, here: a forking worker's work horse then
# inherits them instead of importing them inside every RQ job, where that takes seconds on a
# busy machine and counts against the job's timeout.
importlib.import_module("notifier.tasks")
importlib.import_module("notifier.providers.registry")
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
