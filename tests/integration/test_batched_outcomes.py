"""complete_notification_jobs (20261202000100) records a batch of accepted messages exactly as
complete_notification_job records each one: the same job rows, the same delivery-log rows, the
same answers, whatever state each job is in. On both backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from notifier.store import JobContext, JobStore
from notifier.store.jobs import AcceptedSend
from tests.integration import seed
from tests.integration.conftest import STORE_BACKENDS, job_store_on

JOB_FIELDS = ("status", "message_id", "failure_reason", "outcome_unknown_at", "lease_token",
              "locked_until", "retry_count")  # fmt: skip
LOG_FIELDS = ("status", "provider", "provider_message_id", "provider_response",
              "delivery_duration_ms", "attempt", "error_code")  # fmt: skip


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, database_url: str) -> Iterator[JobStore]:
    yield from job_store_on(request.param, database_url)


def started(store: JobStore, db: psycopg.Connection[Any]) -> JobContext:
    recipient = seed.add_recipient(db)["recipient"]
    store.enqueue(recipient, None, None, content={"subject": "S", "body": "B"})
    [claim] = store.claim(1, 30, "poller-1")
    [job] = store.start_attempts([claim], 30)
    return job


# Each way a job can stand when its success comes back, and how to put it there.
def current(store: JobStore, db: psycopg.Connection[Any], job: JobContext) -> None:
    pass


def reaped_and_waiting(store: JobStore, db: psycopg.Connection[Any], job: JobContext) -> None:
    store.record_unknown_outcome(job, "sendgrid", "lease expired", "retry")


def already_sent(store: JobStore, db: psycopg.Connection[Any], job: JobContext) -> None:
    store.complete(job, "sendgrid", "sg-first", None, 3)


def cancelled_after_reaping(store: JobStore, db: psycopg.Connection[Any], job: JobContext) -> None:
    store.record_unknown_outcome(job, "sendgrid", "lease expired", "retry")
    db.execute("select cancel_notification_job(%s)", (job.job_id,))
    assert seed.job(db, job.job_id)["status"] == "cancelled"


SITUATIONS: list[Callable[[JobStore, psycopg.Connection[Any], JobContext], None]] = [
    current, reaped_and_waiting, already_sent, cancelled_after_reaping,
]  # fmt: skip


def snapshot(db: psycopg.Connection[Any], job_id: str) -> tuple[Any, ...]:
    job = seed.job(db, job_id)
    logs = seed.logs(db, job_id)
    return (
        tuple(job[f] for f in JOB_FIELDS),
        [tuple(log[f] for f in LOG_FIELDS) for log in logs],
    )


def test_a_batch_records_what_one_by_one_records_in_every_situation(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    singles, batched = [], []
    for situation in SITUATIONS:
        one, other = started(store, db), started(store, db)
        situation(store, db, one)
        situation(store, db, other)
        singles.append(one)
        batched.append(other)

    single_answers = [store.complete(j, "sendgrid", "sg-2", {"status": 202}, 7) for j in singles]
    sends = [AcceptedSend(j, "sendgrid", "sg-2", {"status": 202}, 7) for j in batched]
    batch_answers = store.complete_many(sends)

    assert [batch_answers[j.job_id] for j in batched] == single_answers
    assert single_answers == [True, False, False, False]  # only the first lease was current
    for one, other in zip(singles, batched, strict=True):
        assert snapshot(db, other.job_id) == snapshot(db, one.job_id)
    assert seed.job(db, batched[0].job_id)["status"] == "sent"
    assert seed.job(db, batched[1].job_id)["status"] == "sent", "accepted: never resent"


def test_a_job_that_is_gone_is_absent_from_the_answer_and_the_rest_is_recorded(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    kept, gone = started(store, db), started(store, db)
    db.execute("delete from notification_jobs where id = %s", (gone.job_id,))
    answers = store.complete_many(
        [AcceptedSend(j, "sendgrid", "sg", None, 1) for j in (gone, kept)]
    )
    assert answers == {kept.job_id: True}
    assert seed.job(db, kept.job_id)["status"] == "sent"


def test_a_batch_that_is_not_a_list_is_refused(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="JSON array"):
        db.execute("select * from complete_notification_jobs('{}'::jsonb)")


def test_clients_cannot_call_it(db: psycopg.Connection[Any]) -> None:
    allowed = db.execute(
        "select r, has_function_privilege(r, 'complete_notification_jobs(jsonb)', 'execute') as x "
        "from unnest(array['anon', 'authenticated', 'service_role']) r"
    ).fetchall()
    assert {row["r"]: row["x"] for row in allowed} == {
        "anon": False, "authenticated": False, "service_role": True,
    }  # fmt: skip


def test_one_provider_id_the_database_cannot_store_fails_its_whole_batch(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    """Why the recorder writes each send of a refused batch alone (tests/unit/test_recorder.py):
    a NUL in a provider's message id is refused by PostgreSQL for the whole statement."""
    good, bad = started(store, db), started(store, db)
    with pytest.raises(Exception, match=r"(?i)unicode|0x00|nul"):
        store.complete_many([
            AcceptedSend(good, "sendgrid", "sg-ok", None, 1),
            AcceptedSend(bad, "sendgrid", "sg-\x00", None, 1),
        ])  # fmt: skip
    assert seed.job(db, good.job_id)["status"] == "processing"
    assert store.complete_many([AcceptedSend(good, "sendgrid", "sg-ok", None, 1)]) == {
        good.job_id: True
    }
