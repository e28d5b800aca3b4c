"""Queue names, the Redis connection, and handing claimed jobs to RQ in batches.

Unit of work: one RQ job carries up to `NOTIFIER_RQ_JOB_SIZE` notification jobs, each as a plain
`[job_id, lease_token]` pair with its own outcome. Stock RQ costs several milliseconds of Redis
round trips per RQ job; carrying a batch spreads that cost over many notifications (see
docs/architecture.md). Payloads are plain strings so RQ's default serializer is enough and the
stock `rq worker -c notifier.rq_settings` line works as typed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rq import Queue

from notifier.store import Claim

# Drained in this order by every worker: urgent first.
QUEUE_BY_URGENCY = {
    "urgent": "notifier-urgent",
    "normal": "notifier-normal",
    "low": "notifier-low",
}
QUEUE_NAMES: tuple[str, ...] = tuple(QUEUE_BY_URGENCY.values())
TASK = "notifier.tasks.deliver_batch"
# How long RQ keeps a failed RQ job (its redacted traceback) in the queue's failed registry.
FAILURE_TTL_SECONDS = 7 * 24 * 3600


def redis_connection(url: str, *, timeout: float = 5.0, retries: int = 3) -> Redis:
    """A client for RQ and the breakers: bytes responses (no decode_responses), bounded waits.

    redis-py 8 retries a failed command 10 times by default with growing waits; we bound it so
    a Redis outage is noticed (and reported) in seconds, not minutes.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
    )


def queues(connection: Redis) -> dict[str, Queue]:
    return {name: Queue(name, connection=connection) for name in QUEUE_NAMES}


def chunked(items: Sequence[Claim], size: int) -> Iterator[Sequence[Claim]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def enqueue_claims(
    connection: Redis, claims: Iterable[Claim], job_size: int, job_timeout: int
) -> int:
    """Put claims on their urgency's queue, `job_size` per RQ job, in one pipeline.

    Returns the number of RQ jobs created. Results are not kept (Postgres holds outcomes).
    """
    by_queue: dict[str, list[Claim]] = defaultdict(list)
    for claim in claims:
        by_queue[QUEUE_BY_URGENCY.get(claim.urgency_level, "notifier-normal")].append(claim)
    created = 0
    with connection.pipeline() as pipe:
        for name, queued in by_queue.items():
            queue = Queue(name, connection=connection)
            batch = [
                Queue.prepare_data(
                    TASK,
                    args=([[c.job_id, c.lease_token] for c in chunk],),
                    timeout=job_timeout,
                    result_ttl=0,
                    failure_ttl=FAILURE_TTL_SECONDS,
                    description=f"deliver {len(chunk)} notification(s)",
                )
                for chunk in chunked(queued, job_size)
            ]
            queue.enqueue_many(batch, pipeline=pipe)
            created += len(batch)
        pipe.execute()
    return created


def queued_rq_jobs(connection: Redis) -> int:
    """RQ jobs waiting in notifier's queues (for back-pressure in the poller)."""
    with connection.pipeline(transaction=False) as pipe:
        for name in QUEUE_NAMES:
            pipe.llen(f"rq:queue:{name}")
        return sum(int(n) for n in pipe.execute())
