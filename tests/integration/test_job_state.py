"""Job state defined once (20261201000100..120): the lease-lock helper, the lease cleared by one
trigger, the unknown outcome as `outcome_unknown_at`, NOT NULL attempt counters, and the
migrations bookkeeping table defined in SQL only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from notifier.devstack.servers import LocalPostgres
from notifier.schema import check as schema_check
from notifier.schema import migrate as migrations
from notifier.store import JobContext, JobStore
from tests.integration import seed
from tests.integration.conftest import STORE_BACKENDS, job_store_on
from tests.integration.test_schema_check import create_original_database

LOST = "SendGrid read timed out after the request was written"


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, database_url: str) -> Iterator[JobStore]:
    """Every job-state behaviour on both backends: psycopg and the Supabase REST API."""
    yield from job_store_on(request.param, database_url)


def started_job(store: JobStore, db: psycopg.Connection[Any], max_retries: int = 3) -> JobContext:
    """A job whose attempt has started: claimed (by 'poller-1') and processing."""
    recipient = seed.add_recipient(db)["recipient"]
    job_id = store.enqueue(recipient, None, None, content={"subject": "S", "body": "B"})
    db.execute("update notification_jobs set max_retries = %s where id = %s", (max_retries, job_id))
    [claim] = store.claim(1, 30, "poller-1")
    [job] = store.start_attempts([claim], 30)
    assert job.job_id == job_id
    return job


def restart(store: JobStore) -> JobContext:
    [claim] = store.claim(1, 30, "poller-1")
    [job] = store.start_attempts([claim], 30)
    return job


# --- the unknown outcome ----------------------------------------------------------------------


def test_an_unknown_outcome_sets_outcome_unknown_at_and_a_later_send_clears_it(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    job = started_job(store, db)
    assert seed.job(db, job.job_id)["outcome_unknown_at"] is None
    assert store.record_unknown_outcome(job, "sendgrid", LOST, "retry") == "pending"
    row = seed.job(db, job.job_id)
    assert row["outcome_unknown_at"] is not None and row["failure_reason"] == LOST
    assert row["metadata"]["unknown_outcome"] is True

    again = restart(store)
    assert store.defer(again, row["scheduled_for"], "breaker open")  # no attempt: it stays
    assert seed.job(db, job.job_id)["outcome_unknown_at"] == row["outcome_unknown_at"]
    assert store.complete(restart(store), "sendgrid", "sg-1", None, 10)
    sent = seed.job(db, job.job_id)
    assert sent["status"] == "sent" and sent["outcome_unknown_at"] is None
    assert sent["metadata"]["unknown_outcome"] is True  # the history stays
    assert [log["status"] for log in seed.logs(db, job.job_id)] == ["unknown", "delivered"]


@pytest.mark.parametrize("outcome", ["retry", "fail", "skip"])
def test_a_later_known_failure_or_skip_clears_outcome_unknown_at(
    store: JobStore, db: psycopg.Connection[Any], outcome: str
) -> None:
    job = started_job(store, db)
    store.record_unknown_outcome(job, "sendgrid", LOST, "retry")
    again = restart(store)
    if outcome == "retry":
        store.retry(again, "sendgrid", "503", "unavailable", 5, None, 0.01, 0.01)
    elif outcome == "fail":
        store.fail(again, "sendgrid", "400", "invalid address")
    else:
        store.skip(again, "muted")
    assert seed.job(db, job.job_id)["outcome_unknown_at"] is None


def test_the_fail_policy_and_the_reaper_record_the_unknown_outcome_in_the_column(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    job = started_job(store, db)
    assert store.record_unknown_outcome(job, "sendgrid", LOST, "fail") == "failed"
    failed = seed.job(db, job.job_id)
    assert failed["outcome_unknown_at"] is not None
    assert failed["failure_reason"] == f"outcome unknown: {LOST}"  # still readable

    lost = started_job(store, db)
    db.execute("update notification_jobs set locked_until = now() - interval '1 second' "
               "where id = %s", (lost.job_id,))  # fmt: skip
    assert store.release_expired("fail")["unknown_failed"] == 1
    reaped = seed.job(db, lost.job_id)
    assert reaped["status"] == "failed" and reaped["outcome_unknown_at"] is not None


def test_retry_failed_selects_by_the_column_not_the_failure_reason_text(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    job = started_job(store, db)
    store.record_unknown_outcome(job, "sendgrid", LOST, "fail")
    # An operator rewrote the reason; the job is still one whose outcome is unknown.
    db.execute("update notification_jobs set failure_reason = 'checked with SendGrid support' "
               "where id = %s", (job.job_id,))  # fmt: skip
    # Text that merely looks like the old prefix says nothing about the state.
    plain = started_job(store, db)
    store.fail(plain, "sendgrid", "400", "outcome unknown to the user: bad address")

    assert store.retry_failed(dry_run=True) == 1
    assert store.retry_failed() == 1
    assert seed.job(db, plain.job_id)["status"] == "pending"
    assert seed.job(db, job.job_id)["status"] == "failed"

    unknown_at = seed.job(db, job.job_id)["outcome_unknown_at"]
    assert store.retry_failed(include_unknown=True) == 1
    retried = seed.job(db, job.job_id)
    assert retried["status"] == "pending" and retried["outcome_unknown_at"] is None
    previous = retried["metadata"]["manual_retry"]
    assert previous["previous_failure_reason"] == "checked with SendGrid support"
    assert previous["previous_outcome_unknown_at"] is not None
    assert db.execute("select %s::timestamptz = %s as same",
                      (previous["previous_outcome_unknown_at"], unknown_at)).fetchone() == {
        "same": True
    }  # fmt: skip


# --- the lease --------------------------------------------------------------------------------


def test_every_way_out_of_queued_or_processing_clears_the_whole_lease(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    lease = "lease_token, locked_until, locked_by"
    job = started_job(store, db)
    held = db.execute(f"select {lease} from notification_jobs where id = %s", (job.job_id,))
    assert None not in held.fetchone().values()  # type: ignore[union-attr]
    store.complete(job, "sendgrid", "sg-1", None, 10)  # used to keep locked_by
    cleared = {"lease_token": None, "locked_until": None, "locked_by": None}
    assert db.execute(f"select {lease} from notification_jobs where id = %s",
                      (job.job_id,)).fetchone() == cleared  # fmt: skip

    # Writes that are no notifier function (the original worker after a hand-back, an operator).
    other = started_job(store, db)
    db.execute("update notification_jobs set status = 'sent' where id = %s", (other.job_id,))
    assert db.execute(f"select {lease} from notification_jobs where id = %s",
                      (other.job_id,)).fetchone() == cleared  # fmt: skip
    # While queued or processing the lease is left alone.
    kept = started_job(store, db)
    db.execute("update notification_jobs set updated_at = now() where id = %s", (kept.job_id,))
    assert seed.job(db, kept.job_id)["lease_token"] is not None


def test_a_stale_token_changes_nothing_through_the_lock_helper(
    store: JobStore, db: psycopg.Connection[Any]
) -> None:
    job = started_job(store, db)
    stale = replace(job, lease_token="00000000-0000-0000-0000-000000000000")
    assert store.fail(stale, "sendgrid", "400", "x") is False
    assert store.skip(stale, "muted") is False
    assert store.defer(stale, seed.job(db, job.job_id)["scheduled_for"], "open") is False
    assert store.retry(stale, "sendgrid", "503", "x", 1, None, 0.01, 0.01) is None
    assert store.record_unknown_outcome(stale, "sendgrid", LOST, "retry") is None
    assert seed.job(db, job.job_id)["status"] == "processing"
    assert seed.logs(db, job.job_id) == []


@pytest.mark.parametrize("function", ["notifier_lock_leased_job(uuid, uuid)",
                                      "notification_jobs_clear_lease()"])  # fmt: skip
def test_the_internal_helpers_are_not_executable_by_clients(
    db: psycopg.Connection[Any], function: str
) -> None:
    # anon and authenticated also hold whatever PUBLIC is granted.
    for role, allowed in [("anon", False), ("authenticated", False), ("service_role", True)]:
        row = db.execute(
            "select has_function_privilege(%s, %s, 'execute') as allowed", (role, function)
        ).fetchone()
        assert row == {"allowed": allowed}, (role, function)
    with db.transaction(force_rollback=True):
        db.execute("set local role authenticated")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("select notifier_lock_leased_job(gen_random_uuid(), gen_random_uuid())")


# --- the attempt counters ---------------------------------------------------------------------


def test_retry_count_and_max_retries_are_not_null_with_their_defaults(
    db: psycopg.Connection[Any],
) -> None:
    columns = db.execute(
        "select column_name, is_nullable, column_default from information_schema.columns "
        "where table_name = 'notification_jobs' and column_name in ('retry_count', 'max_retries') "
        "order by column_name"
    ).fetchall()
    assert [(c["column_name"], c["is_nullable"], c["column_default"]) for c in columns] == [
        ("max_retries", "NO", "3"),
        ("retry_count", "NO", "0"),
    ]
    recipient = seed.add_recipient(db)["recipient"]
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute("insert into notification_jobs (recipient_id, notification_type, "
                   "delivery_method, retry_count) values (%s, 'immediate', 'email', null)",
                   (recipient,))  # fmt: skip


def test_migrating_an_original_deployment_backfills_the_new_columns(
    pg_server: LocalPostgres,
) -> None:
    url = create_original_database(pg_server, "original_job_state")
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        recipient = conn.execute(
            "insert into recipients (parent_id, name, relationship, email) "
            "values (gen_random_uuid(), 'Ada', 'grandmother', 'a@example.com') returning id"
        ).fetchone()["id"]  # type: ignore[index]

        def insert(status: str, reason: str | None, retry: int | None, most: int | None) -> str:
            row = conn.execute(
                "insert into notification_jobs (recipient_id, notification_type, delivery_method,"
                " status, failure_reason, retry_count, max_retries, processed_at)"
                " values (%s, 'immediate', 'email', %s, %s, %s, %s, now() - interval '1 hour')"
                " returning id",
                (recipient, status, reason, retry, most),
            ).fetchone()
            return str(row["id"])  # type: ignore[index]

        jobs = {
            "nulls": insert("failed", "Invalid email address", None, None),
            "unknown": insert("failed", "outcome unknown: the worker was lost", 2, 5),
            "sent": insert("sent", None, 1, 3),
        }

    migrations.apply(url)

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        rows = {
            str(r["id"]): r
            for r in conn.execute(
                "select id, retry_count, max_retries, outcome_unknown_at, processed_at "
                "from notification_jobs"
            ).fetchall()
        }
    assert (rows[jobs["nulls"]]["retry_count"], rows[jobs["nulls"]]["max_retries"]) == (0, 3)
    assert (rows[jobs["unknown"]]["retry_count"], rows[jobs["unknown"]]["max_retries"]) == (2, 5)
    assert rows[jobs["unknown"]]["outcome_unknown_at"] == rows[jobs["unknown"]]["processed_at"]
    assert rows[jobs["nulls"]]["outcome_unknown_at"] is None
    assert rows[jobs["sent"]]["outcome_unknown_at"] is None


# --- the schema: bookkeeping and --check ------------------------------------------------------


def test_the_bookkeeping_table_is_defined_once_in_the_migrations() -> None:
    statement = migrations.bookkeeping_table_sql()
    defining = [m for m in migrations.discover() if statement in m.sql]
    assert [m.name for m in defining] == ["notification_tables"]


def test_check_knows_the_new_column_helper_and_trigger(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    expected = schema_check.expected_schema()
    assert "outcome_unknown_at" in expected.own_tables["notification_jobs"]
    assert expected.functions["notifier_lock_leased_job"].arg_types == ["uuid", "uuid"]
    assert schema_check.check(database_url) == []
    db.execute("drop function notifier_lock_leased_job(uuid, uuid) cascade")
    db.execute("drop trigger notification_jobs_clear_lease on notification_jobs")
    db.execute("alter table notification_jobs drop column outcome_unknown_at")
    problems = schema_check.check(database_url)
    assert "column notification_jobs.outcome_unknown_at is missing" in problems
    assert "function notifier_lock_leased_job(uuid, uuid) is missing" in problems
    assert "trigger notification_jobs_clear_lease on notification_jobs is missing" in problems
