"""Settings module for the stock RQ worker: `rq worker -c notifier.rq_settings`.

RQ reads REDIS_URL, QUEUES (drained in this order: urgent first) and DICT_CONFIG from here.
Importing it also makes the worker's Redis connection retry through a Redis restart of up to
about 30 s instead of quitting (notifier/pipeline/redis_retry.py says why and how).
A missing or malformed setting, or a channel without a provider, stops the worker at start-up
with one line naming the variables.
"""

from __future__ import annotations

import importlib
import sys

from notifier.config import load_settings
from notifier.errors import ConfigError
from notifier.log import QUIET_SDK_LOGGERS
from notifier.pipeline import redis_retry
from notifier.pipeline.queues import QUEUE_NAMES

try:
    _settings = load_settings()
    _settings.require_database_url()
    REDIS_URL = _settings.require_redis_url()
    # A worker sends: with no provider at all it must not start (console is opt-in); a
    # channel without one is named here, and its jobs fail with the same words.
    _settings.require_providers()
except ConfigError as _error:
    sys.exit(f"notifier: {_error}")
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
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "notifier",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["stderr"], "level": _settings.log_level},
    # The same table `notifier.log.configure` applies: the SDK loggers stay quiet here too.
    "loggers": {name: {"level": level} for name, level in QUIET_SDK_LOGGERS.items()},
}
