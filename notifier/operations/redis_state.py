"""What Redis says about the pipeline: latency, memory, RQ queues and registries, workers, and
each provider's circuit breaker. Read-only, in few round trips, for /health, /metrics and
`notifier status`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue, Worker

from notifier.pipeline.breaker import STORAGE_FIELDS, opened_at_from_storage, retry_at, storage_key
from notifier.pipeline.queues import FAILURE_TTL_SECONDS, QUEUE_NAMES
from notifier.providers.registry import BREAKER_GUARDED

# The providers that have a breaker, as the provider classes say (console has none).
BREAKER_PROVIDERS = BREAKER_GUARDED
REGISTRIES = ("started", "failed", "deferred", "scheduled")
# An RQ job that failed inside a worker this recently is news: a worker that cannot deliver for
# a reason of its own (its configuration, a crash) fails every RQ job it takes.
RECENT_FAILURE_SECONDS = 900


def probe_client(url: str, timeout: float) -> Redis:
    """A client that gives up after `timeout` per operation and never retries.

    redis-py 8 retries a failed command several times by default; a health probe must report
    a hanging or refused Redis at once instead.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


@dataclass(frozen=True)
class QueueCounts:
    """RQ jobs (each a batch of notifications) by where they are, for one queue."""

    queued: int = 0
    started: int = 0
    failed: int = 0
    deferred: int = 0
    scheduled: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "started": self.started,
            "failed": self.failed,
            "deferred": self.deferred,
            "scheduled": self.scheduled,
        }


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    state: str
    current_job: str | None
    last_heartbeat: datetime | None
    hostname: str | None
    pid: int | None

    def heartbeat_age(self, now: datetime) -> float | None:
        if self.last_heartbeat is None:
            return None
        return max(0.0, (now - self.last_heartbeat).total_seconds())


@dataclass(frozen=True)
class BreakerInfo:
    """A provider's breaker as pybreaker stores it, and what that means now.

    pybreaker leaves the state at `open` until the next call after the reset timeout; from
    `next_retry` on that call is a trial, so the effective state is reported as half-open.
    """

    provider: str
    state: str
    stored_state: str
    failure_count: int
    opened_at: datetime | None
    next_retry: datetime | None


@dataclass(frozen=True)
class RedisState:
    latency_ms: float
    memory_used_bytes: int | None
    memory_used_human: str | None
    queues: dict[str, QueueCounts]
    workers: list[WorkerInfo]
    breakers: dict[str, BreakerInfo] = field(default_factory=dict)
    # RQ jobs that failed inside a worker in the last RECENT_FAILURE_SECONDS, all queues.
    recent_rq_failures: int = 0

    @property
    def totals(self) -> QueueCounts:
        return QueueCounts(
            **{
                name: sum(getattr(c, name) for c in self.queues.values())
                for name in ("queued", *REGISTRIES)
            }
        )

    def freshest_heartbeat_age(self, now: datetime) -> float | None:
        ages = [a for w in self.workers if (a := w.heartbeat_age(now)) is not None]
        return min(ages) if ages else None

    def breaker_summary(self) -> str:
        """One word for all breakers: open if any is open, else half-open if any, else closed."""
        states = {b.state for b in self.breakers.values()}
        for state in ("open", "half-open"):
            if state in states:
                return state
        return "closed"


def read_redis_state(
    client: Redis, *, providers: tuple[str, ...], reset_timeout: int, now: datetime | None = None
) -> RedisState:
    """Everything above in a few steps: PING (connects), PING (timed), one pipeline, workers.

    `providers` are those configured; a breaker with state in Redis is reported too.
    """
    client.ping()  # connects: the timed PING below measures a round trip only
    started = time.perf_counter()
    client.ping()
    latency_ms = (time.perf_counter() - started) * 1000
    queues = [Queue(name, connection=client) for name in QUEUE_NAMES]
    with client.pipeline(transaction=False) as pipe:
        pipe.info("memory")
        for queue in queues:
            pipe.llen(queue.key)
            pipe.zcard(queue.started_job_registry.key)
            pipe.zcard(queue.failed_job_registry.key)
            pipe.zcard(queue.deferred_job_registry.key)
            pipe.zcard(queue.scheduled_job_registry.key)
        for provider in BREAKER_PROVIDERS:
            pipe.mget([storage_key(provider, k) for k in STORAGE_FIELDS])
        # RQ scores a failed job by when it expires (failure time + its failure_ttl).
        recent_from = time.time() + FAILURE_TTL_SECONDS - RECENT_FAILURE_SECONDS
        for queue in queues:
            pipe.zcount(queue.failed_job_registry.key, recent_from, "+inf")
        replies = pipe.execute()
    memory: dict[str, Any] = replies[0]
    counts = {
        queue.name: QueueCounts(*(int(n) for n in replies[1 + 5 * i : 6 + 5 * i]))
        for i, queue in enumerate(queues)
    }
    first_breaker = 1 + 5 * len(queues)
    breaker_replies = replies[first_breaker : first_breaker + len(BREAKER_PROVIDERS)]
    recent_failures = sum(int(n) for n in replies[first_breaker + len(BREAKER_PROVIDERS) :])
    current = now or datetime.now(UTC)
    breakers = {}
    for provider, (state, failures, opened) in zip(BREAKER_PROVIDERS, breaker_replies, strict=True):
        if provider in providers or state is not None:
            breakers[provider] = _breaker(provider, state, failures, opened, reset_timeout, current)
    return RedisState(
        latency_ms=round(latency_ms, 3),
        memory_used_bytes=_int_or_none(memory.get("used_memory")),
        memory_used_human=memory.get("used_memory_human"),
        queues=counts,
        workers=_workers(client, queues),
        breakers=breakers,
        recent_rq_failures=recent_failures,
    )


def _workers(client: Redis, queues: list[Queue]) -> list[WorkerInfo]:
    """The workers listening on notifier's queues (each once, though it serves all three)."""
    keys: set[str] = set()
    for queue in queues:
        keys.update(Worker.all_keys(queue=queue))
    found = []
    for key in sorted(keys):
        worker = Worker.find_by_key(key, connection=client)
        if worker is None:  # its key expired: RQ drops it from the registry
            continue
        found.append(
            WorkerInfo(
                name=worker.name,
                state=str(worker.get_state()),
                current_job=worker.get_current_job_id(),
                last_heartbeat=_aware(worker.last_heartbeat),
                hostname=worker.hostname,
                pid=worker.pid,
            )
        )
    return found


def _breaker(
    provider: str,
    state: bytes | None,
    failures: bytes | None,
    opened: bytes | None,
    reset_timeout: int,
    now: datetime,
) -> BreakerInfo:
    stored = state.decode() if state else "closed"
    opened_at = opened_at_from_storage(opened) if opened else None
    next_retry = None
    effective = stored
    if stored == "open":
        next_retry = retry_at(opened_at or now, reset_timeout)
        if now >= next_retry:
            effective = "half-open"
    return BreakerInfo(
        provider=provider,
        state=effective,
        stored_state=stored,
        failure_count=int(failures or 0),
        opened_at=opened_at,
        next_retry=next_retry,
    )


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
