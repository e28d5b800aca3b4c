"""Let a stock `rq worker` ride out a Redis restart instead of quitting.

RQ 3's work loop (`rq/worker/base.py`, `Worker.work`) retries a lost connection only while it
waits for a job (`dequeue_job_and_maintain_ttl`). Any Redis error raised while a job is in hand
(the forking worker's `monitor_work_horse`, a `SimpleWorker`'s `_finalize_success`, the
heartbeat after the job) reaches a bare `except:` that logs "found an unhandled exception,
quitting..." and ends the worker. A redis-py 8 client built from a URL does not retry at all
(its pool makes connections with no retries), so the first refused connection of a Redis
restart is that error.

`rq worker -c notifier.rq_settings` builds its connection with `redis.Redis.from_url(REDIS_URL)`
and takes nothing else from the settings module that reaches the connection (a connection
class only from `--connection-class` or `RQ_CONNECTION_CLASS`). So the settings module, which
RQ imports before it connects, calls `install()`: in that worker process, a client built from
a URL without an explicit `retry` retries for about `RIDE_OUT_SECONDS` before raising. A
longer outage still ends the worker; the shipped process-manager configurations restart it.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

# How long a worker keeps retrying one Redis command before giving up (and quitting).
RIDE_OUT_SECONDS = 30.0
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 1.0
_installed = False


def patient_retry() -> Retry:
    """Retries spread over about RIDE_OUT_SECONDS. redis-py's jitter is `min(cap, random() *
    base * 2**n)`, so past the first few attempts each pause is close to the cap."""
    retries = int(RIDE_OUT_SECONDS / _BACKOFF_CAP)
    return Retry(ExponentialWithJitterBackoff(base=_BACKOFF_BASE, cap=_BACKOFF_CAP), retries)


def install() -> None:
    """Make `Redis.from_url` default to `patient_retry()` in this process; idempotent.

    An explicit `retry=` (notifier's own clients pass one) is left alone.
    """
    global _installed
    if _installed:
        return
    stock = Redis.from_url.__func__  # type: ignore[attr-defined]

    def from_url(cls: type[Redis], /, url: str, **kwargs: Any) -> Redis:
        kwargs.setdefault("retry", patient_retry())
        client: Redis = stock(cls, url, **kwargs)
        return client

    Redis.from_url = classmethod(from_url)  # type: ignore[method-assign,assignment]
    _installed = True
