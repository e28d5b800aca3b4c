"""Settings module for the stock RQ worker: `rq worker -c notifier.rq_settings`.

RQ reads REDIS_URL, QUEUES (drained in this order: urgent first) and DICT_CONFIG from here.
A missing or malformed setting, or a channel without a provider, stops the worker at start-up
with one line naming the variables.
"""

from __future__ import annotations

import sys

from notifier.config import load_settings
from notifier.errors import ConfigError, StoreAuthError, StoreFunctionMissingError
from notifier.log import QUIET_SDK_LOGGERS
from notifier.pipeline.queues import QUEUE_NAMES
from notifier.store.backend import check_backend

try:
    _settings = load_settings()
    REDIS_URL = _settings.require_redis_url()
    # A worker sends: with no provider at all it must not start (console is opt-in); a
    # channel without one is named here, and its jobs fail with the same words.
    _settings.require_providers()
    # DATABASE_URL, or the Supabase REST API with a key it accepts and notifier's functions.
    check_backend(_settings)
except (ConfigError, StoreAuthError, StoreFunctionMissingError) as _error:
    sys.exit(f"notifier: {_error}")
for _channel, _how_to_fix in _settings.missing_providers().items():
    print(f"notifier: {_channel} jobs will fail: {_how_to_fix}", file=sys.stderr)

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
