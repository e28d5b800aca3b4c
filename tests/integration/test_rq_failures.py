"""An RQ job that fails inside a worker (a worker that cannot deliver) shows in the Redis state
that /health and `notifier status` read, for RECENT_FAILURE_SECONDS, then only in the totals."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue, SimpleWorker

from notifier.operations.redis_state import RECENT_FAILURE_SECONDS, read_redis_state
from notifier.pipeline.queues import FAILURE_TTL_SECONDS, TASK


def test_a_job_failing_inside_a_worker_counts_as_recent_until_it_ages(redis: Redis) -> None:
    queue = Queue("notifier-normal", connection=redis)
    # A malformed payload makes notifier.tasks.deliver_batch raise inside the worker, as any
    # failure of the worker's own would.
    queue.enqueue(TASK, ["not a [job_id, token] pair"], failure_ttl=FAILURE_TTL_SECONDS)
    SimpleWorker([queue], connection=redis).work(burst=True)

    state = read_redis_state(redis, providers=(), reset_timeout=60)
    assert state.queues["notifier-normal"].failed == 1
    assert state.recent_rq_failures == 1

    # Aged past the window (RQ scores a failed job by when it expires): still a failure on
    # record, no longer news.
    registry = queue.failed_job_registry.key
    (job_id,) = redis.zrange(registry, 0, -1)
    aged = time.time() + FAILURE_TTL_SECONDS - RECENT_FAILURE_SECONDS - 60
    redis.zadd(registry, {job_id: aged})
    state = read_redis_state(redis, providers=(), reset_timeout=60)
    assert state.queues["notifier-normal"].failed == 1
    assert state.recent_rq_failures == 0
