"""A worker killed (SIGKILL) in the middle of a batch: nothing is lost, and the only jobs sent
twice are those the record marks as an unknown outcome. Killed with sends in flight (their
attempts started together), and killed while its group commit of successes was in flight."""

from __future__ import annotations

import collections
import signal
import subprocess
from typing import Any

import psycopg
import pytest

from notifier.devstack.demo import worker_command
from tests.integration import seed
from tests.integration.pipeline import start_poller, statuses, wait_for
from tests.support.loopback import SendGridLoopback

JOBS = 24


@pytest.fixture
def sendgrid() -> Any:
    with SendGridLoopback(delay_seconds=0.8) as server:
        yield server


def pipeline_env(base_env: dict[str, str], sendgrid: SendGridLoopback) -> dict[str, str]:
    return base_env | {
        "NOTIFIER_EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": "SG.test-key", "SENDGRID_API_BASE": sendgrid.base_url,
        "EMAIL_FROM": "notifications@example.com",
        # A whole RQ job fits in the send threads, so its attempts start in one call.
        "NOTIFIER_RQ_JOB_SIZE": "8", "NOTIFIER_SEND_CONCURRENCY": "8",
        "NOTIFIER_PROVIDER_TIMEOUT": "1", "NOTIFIER_LEASE_SECONDS": "4",
        "NOTIFIER_REAPER_INTERVAL": "0.5", "NOTIFIER_UNKNOWN_OUTCOME": "retry",
    }  # fmt: skip


def enqueue_jobs(db: psycopg.Connection[Any]) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    db.execute(
        "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', 'email',"
        " jsonb_build_object('subject', 'S' || i, 'body', 'B'), 0) from generate_series(1, %s) i",
        (recipient, JOBS),
    )


def test_worker_killed_mid_batch_loses_nothing_and_duplicates_only_unknown_outcomes(
    db: psycopg.Connection[Any], base_env: dict[str, str], sendgrid: SendGridLoopback
) -> None:
    env = pipeline_env(base_env, sendgrid)
    enqueue_jobs(db)
    poller = start_poller(env)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    doomed = subprocess.Popen(worker_command(), env=env, **quiet)  # type: ignore[call-overload]
    survivor: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: len(sendgrid.requests) >= 1, timeout=30, interval=0.01)
        doomed.send_signal(signal.SIGKILL)  # mid-batch: sends in flight, outcomes unrecorded
        doomed.wait(10)
        in_hand = statuses(db).get("processing", 0)
        assert in_hand > 0  # the kill really hit a batch in flight
        survivor = subprocess.Popen(worker_command(), env=env, **quiet)  # type: ignore[call-overload]
        wait_for(lambda: statuses(db) == {"sent": JOBS}, timeout=90, interval=0.2)
    finally:
        stop(doomed, survivor, poller)

    assert_nothing_lost_and_duplicates_only_unknown(db, sendgrid, in_hand)


def stop(*processes: subprocess.Popen[Any] | None) -> None:
    for process in processes:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(30)


def requests_per_job(sendgrid: SendGridLoopback) -> collections.Counter[str]:
    return collections.Counter(
        r.body["personalizations"][0]["custom_args"]["job_id"] for r in sendgrid.requests
    )


def assert_nothing_lost_and_duplicates_only_unknown(
    db: psycopg.Connection[Any], sendgrid: SendGridLoopback, in_hand: int
) -> None:
    requests = requests_per_job(sendgrid)
    unknown = {
        str(row["job_id"])
        for row in db.execute(
            "select job_id from notification_delivery_logs where status = 'unknown'"
        ).fetchall()
    }
    twice = {job_id for job_id, n in requests.items() if n > 1}
    assert len(requests) == JOBS and max(requests.values()) <= 2
    assert twice <= unknown  # every duplicate is on record as an unknown outcome
    assert len(unknown) <= in_hand  # only jobs the killed worker held became unknown


def test_worker_killed_while_its_group_commit_is_in_flight_loses_nothing(
    db: psycopg.Connection[Any],
    database_url: str,
    base_env: dict[str, str],
    sendgrid: SendGridLoopback,
) -> None:
    """The provider accepted a batch; the worker's one write of those successes is in flight
    (held here by a lock on the delivery log) when the worker dies and the write is lost."""
    env = pipeline_env(base_env, sendgrid)
    enqueue_jobs(db)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    poller = start_poller(env)
    doomed = subprocess.Popen(worker_command(), env=env, **quiet)  # type: ignore[call-overload]
    survivor: subprocess.Popen[bytes] | None = None
    waiting_write = (
        "select pid from pg_stat_activity where wait_event_type = 'Lock' "
        "and query like '%%complete_notification_jobs%%'"
    )
    try:
        with psycopg.connect(database_url) as blocker:  # a transaction, until the block ends
            blocker.execute("lock table notification_delivery_logs in share row exclusive mode")
            wait_for(lambda: db.execute(waiting_write).fetchall() != [], timeout=30, interval=0.02)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            # The write dies with its worker: nothing it carried reaches the database.
            db.execute(f"select pg_terminate_backend(pid) from ({waiting_write}) w")
        in_hand = statuses(db).get("processing", 0)
        assert in_hand > 0 and statuses(db).get("sent", 0) == 0
        survivor = subprocess.Popen(worker_command(), env=env, **quiet)  # type: ignore[call-overload]
        wait_for(lambda: statuses(db) == {"sent": JOBS}, timeout=90, interval=0.2)
    finally:
        stop(doomed, survivor, poller)

    assert_nothing_lost_and_duplicates_only_unknown(db, sendgrid, in_hand)
    assert 2 in requests_per_job(sendgrid).values(), "the lost write's sends came back as unknown"
