"""The poller holds due jobs in Postgres while enough RQ jobs wait, so they leave together in
full RQ jobs instead of as a queue of one-notification RQ jobs."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from redis import Redis

from notifier.pipeline.poller import Poller, PollerPolicy
from notifier.pipeline.queues import queued_rq_jobs
from notifier.store import JobStore
from tests.integration import seed
from tests.integration.pipeline import statuses


def policy(**overrides: Any) -> PollerPolicy:
    values: dict[str, Any] = dict(
        poll_interval=1.0, reaper_interval=30.0, claim_batch_size=500, rq_job_size=10,
        max_in_flight=5000, lease_seconds=60, unknown_outcome="retry", rq_job_timeout=60,
        max_queued_rq_jobs=2,
    )  # fmt: skip
    values.update(overrides)
    return PollerPolicy(**values)


def enqueue(db: psycopg.Connection[Any], recipient: str, count: int) -> None:
    db.execute(
        "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', 'email',"
        " jsonb_build_object('subject', 'S', 'body', 'B'), 0) from generate_series(1, %s)",
        (recipient, count),
    )


def test_claims_stop_while_enough_rq_jobs_wait_and_the_rest_stays_pending(
    db: psycopg.Connection[Any], store: JobStore, redis: Redis, database_url: str
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    enqueue(db, recipient, 50)
    poller = Poller(store, redis, database_url, policy())

    assert poller.claim_once() == 20  # two full RQ jobs of 10
    assert queued_rq_jobs(redis) == 2
    assert poller.claim_once() == 0  # held back: the rest waits in Postgres
    assert statuses(db) == {"queued": 20, "pending": 30}

    redis.delete("rq:queue:notifier-normal")  # workers took both RQ jobs
    assert poller.claim_once() == 20


def test_a_burst_poller_is_not_held_back_by_the_rq_job_bound(
    db: psycopg.Connection[Any], store: JobStore, redis: Redis, database_url: str
) -> None:
    # `notifier poller --burst` may run before any worker exists: it moves everything due.
    recipient = seed.add_recipient(db)["recipient"]
    enqueue(db, recipient, 50)
    poller = Poller(store, redis, database_url, policy())

    assert poller.run(burst=True) == 50
    assert statuses(db) == {"queued": 50}


def test_a_running_poller_refills_the_queues_as_workers_empty_them_without_waiting(
    db: psycopg.Connection[Any], store: JobStore, redis: Redis, database_url: str
) -> None:
    # A backlog already due sends no NOTIFY: the poller must not sleep its poll interval
    # between refills, or a draining backlog is capped at one refill per interval.
    recipient = seed.add_recipient(db)["recipient"]
    enqueue(db, recipient, 60)
    poller = Poller(store, redis, database_url, policy(poll_interval=60.0))
    runner = threading.Thread(target=poller.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        taken = 0
        while statuses(db).get("queued", 0) < 60 and time.monotonic() < deadline:
            if redis.lpop("rq:queue:notifier-normal") is not None:  # a worker takes one
                taken += 1
            time.sleep(0.05)
        assert statuses(db) == {"queued": 60}, "the backlog left Redis-sized, not per interval"
        assert taken >= 3  # it really went out in refills of two RQ jobs
    finally:
        poller.stop()
        runner.join(10)
