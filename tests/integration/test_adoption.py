"""Adopting a deployment of the original system, and handing it back.

A database built as the original migration leaves it, with rows in every state, and a real
BullMQ queue (the npm package, driven by tests/support/bullmq_driver.js) holding what the
original worker left: completed (success true and false), failed, delayed, prioritized,
waiting, active. The real commands run against them: `notifier migrate`, `notifier adopt`, the
poller and `rq worker`, `notifier handback`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from redis import Redis

from notifier.adoption.bullmq import (
    BullMQError,
    NodeRemover,
    OldQueue,
    bullmq_version_in,
)
from notifier.devstack.demo import command
from notifier.devstack.servers import LocalPostgres
from notifier.schema import migrate as migrations
from notifier.store import JobStore
from notifier.store.postgres import PostgresCaller
from tests.conftest import require_binary
from tests.integration.pipeline import poller_burst, worker_burst
from tests.integration.test_schema_check import create_original_database
from tests.support import bullmq
from tests.support.loopback import SendGridLoopback

ORIGINAL_STATUSES = {"pending", "processing", "sent", "failed", "skipped", "cancelled"}
_numbers = iter(range(1_000_000))

# The original worker's own statements (through the service role, as it ran).
SELECT_PENDING = (
    "select * from notification_jobs where status = 'pending' and scheduled_for <= now() "
    "order by scheduled_for asc limit 100"
)
SET_PROCESSING = (
    "update notification_jobs set status = 'processing', updated_at = now() where id = %s"
)
SET_SENT = (
    "update notification_jobs set status = 'sent', processed_at = now(), message_id = %s, "
    "updated_at = now() where id = %s"
)
SET_FAILED = (
    "update notification_jobs set status = 'failed', processed_at = now(), failure_reason = %s, "
    "retry_count = retry_count + 1, updated_at = now() where id = %s"
)
INSERT_LOG = (
    "insert into notification_delivery_logs (job_id, recipient_id, group_id, delivery_method, "
    "status, provider_message_id, provider_response, delivery_time, error_code, error_message, "
    "delivery_duration_ms) select id, recipient_id, group_id, delivery_method, %s, %s, %s, now(), "
    "%s, %s, 120 from notification_jobs where id = %s"
)
SEED_CALL = (
    "SELECT enqueue_notification_job('{recipient}'::uuid, '{group}'::uuid, NULL, 'immediate', "
    """'normal', 'email', '{{"subject": "Test Notification", "body": "Hello from the """
    """notification system!"}}'::jsonb, 0);"""
)

# name → (how the original worker left it in the database, what BullMQ holds)
DEPLOYMENT = {
    "never_picked": ("pending", None),
    "sent_before": ("sent", None),
    "failed_before": ("failed", None),
    "skipped_before": ("skipped", None),
    "cancelled_before": ("cancelled", None),
    "completed_ok": ("processing", "deliver"),
    "completed_rejected": ("processing", "reject"),
    "failed_in_bullmq": ("processing", "crash"),
    "retrying": ("processing", "retry_later"),
    "prioritized": ("processing", "prioritized"),
    "waiting": ("processing", "waiting"),
    "scheduled": ("processing", "scheduled"),
    "active": ("processing", "active"),
    "gone_delivered": ("processing+log", None),
    "gone_unknown": ("processing", None),
    "added_not_marked": ("pending", "prioritized"),  # in BullMQ; died before marking the row
}
NEVER_DELIVERED = {
    "never_picked", "retrying", "prioritized", "waiting", "scheduled", "active", "gone_unknown",
    "added_not_marked",
}  # fmt: skip
FOREIGN_JOB = "weekly-report-2026-47"  # something else in the old queue: not a notification job


@dataclass
class Deployment:
    url: str
    jobs: dict[str, str]  # name → job id
    recipient: str
    group: str
    owner: str

    def name_of(self, job_id: str) -> str:
        return next(name for name, jid in self.jobs.items() if jid == job_id)


def connect(url: str, role: str | None = None) -> psycopg.Connection[dict[str, Any]]:
    conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    if role:
        conn.execute(f"set role {role}")
    return conn


def add_original_recipient(url: str) -> tuple[str, str, str]:
    """An app user's recipient (the original table requires `relationship`) and group."""
    owner = str(uuid.uuid4())
    with connect(url) as app:
        recipient = app.execute(
            "insert into recipients (parent_id, name, relationship, email, phone) "
            "values (%s, 'Ada', 'grandmother', 'ada@example.com', '+15005550006') returning id",
            (owner,),
        ).fetchone()["id"]  # type: ignore[index]
        group = app.execute(
            "insert into recipient_groups (parent_id, name) values (%s, 'Family') returning id",
            (owner,),
        ).fetchone()["id"]  # type: ignore[index]
        app.execute(
            "insert into notification_preferences_cache (recipient_id, is_muted) values (%s, false)",
            (recipient,),
        )
    return owner, str(recipient), str(group)


def build_original_deployment(url: str) -> Deployment:
    """The app's rows and the original worker's work, through their own statements."""
    owner, recipient, group = add_original_recipient(url)
    with connect(url) as app:
        jobs = {}
        for name in DEPLOYMENT:
            urgency = "urgent" if name == "prioritized" else "normal"
            jobs[name] = str(
                app.execute(
                    "select enqueue_notification_job(%s, %s, null, 'immediate', %s, 'email', %s, 0)"
                    " as id",
                    (recipient, group, urgency, Jsonb({"subject": f"About {name}", "body": "Hi"})),
                ).fetchone()["id"]  # type: ignore[index]
            )
        app.execute("update notification_jobs set status = 'cancelled' where id = %s",
                    (jobs["cancelled_before"],))  # fmt: skip
    with connect(url, "service_role") as worker:
        picked = {str(row["id"]) for row in worker.execute(SELECT_PENDING).fetchall()}
        assert set(jobs.values()) - {jobs["cancelled_before"]} <= picked
        for name, (state, _) in DEPLOYMENT.items():
            if state != "pending" and name != "cancelled_before":
                worker.execute(SET_PROCESSING, (jobs[name],))
        worker.execute(SET_SENT, ("sg-before", jobs["sent_before"]))
        for name in ("sent_before", "gone_delivered"):
            worker.execute(INSERT_LOG, ("delivered", f"sg-{name}", Jsonb({"statusCode": 202}),
                                        None, None, jobs[name]))  # fmt: skip
        worker.execute(SET_FAILED, ("Invalid email address", jobs["failed_before"]))
        worker.execute(INSERT_LOG, ("failed", None, None, "400", "Invalid email address",
                                    jobs["failed_before"]))  # fmt: skip
        worker.execute("update notification_jobs set status = 'skipped', processed_at = now() "
                       "where id = %s", (jobs["skipped_before"],))  # fmt: skip
    return Deployment(url, jobs, str(recipient), str(group), owner)


def seed_old_queue(old_queue: bullmq.OldWorkerQueue, deployment: Deployment) -> None:
    """What BullMQ holds when the original worker is stopped."""

    def job(name: str, scenario: str) -> dict[str, Any]:
        job_id = deployment.jobs[name]
        data = {
            "jobId": job_id, "recipientId": deployment.recipient, "groupId": deployment.group,
            "updateId": None, "notificationType": "immediate",
            "urgencyLevel": "urgent" if name == "prioritized" else "normal",
            "deliveryMethod": "email", "content": {"subject": f"About {name}", "body": "Hi"},
            "scheduledFor": "2026-11-20T09:59:00.000Z", "metadata": {},
        }  # fmt: skip
        return {"id": job_id, "data": data, "scenario": scenario}

    planned = [(name, scenario) for name, (_, scenario) in DEPLOYMENT.items() if scenario]
    processed = [
        job(n, s) for n, s in planned if s in ("deliver", "reject", "crash", "retry_later")
    ]
    states = old_queue.seed(processed)
    assert set(states.values()) == {"completed", "failed", "delayed"}
    # Killed mid-send: active, its lock expiring 0.6 s later.
    old_queue.hold_active(job("active", "deliver"), lock_ms=600)
    later = [job(n, s) for n, s in planned if s in ("prioritized", "waiting", "scheduled")]
    later.append({"id": FOREIGN_JOB, "data": {"report": "weekly"}, "scenario": "waiting"})
    states = old_queue.seed(later)
    assert sorted(states.values()) == [
        "delayed",
        "prioritized",
        "prioritized",
        "waiting",
        "waiting",
    ]
    time.sleep(0.7)


@pytest.fixture
def bullmq_version() -> str:
    """The bullmq release under test; a test parametrizes it to run on every tested version."""
    return bullmq.BULLMQ_VERSION


@pytest.fixture
def bullmq_dir(bullmq_version: str) -> Path:
    require_binary(bullmq.node_and_npm_found(), "node and npm (to run a real BullMQ queue)")
    return bullmq.install(bullmq_version)


@pytest.fixture
def old_queue(bullmq_dir: Path, redis_url: str) -> bullmq.OldWorkerQueue:
    return bullmq.OldWorkerQueue(bullmq_dir, redis_url)


@pytest.fixture
def original_url(pg_server: LocalPostgres) -> str:
    return create_original_database(pg_server, f"original_adopt_{next(_numbers)}")


@pytest.fixture
def env(base_env: dict[str, str], original_url: str, sendgrid: SendGridLoopback) -> dict[str, str]:
    return base_env | {
        "DATABASE_URL": original_url,
        "NOTIFIER_EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": "SG.test-key",
        "SENDGRID_API_BASE": sendgrid.base_url,
        "EMAIL_FROM": "notifications@example.com",
    }


@pytest.fixture
def cutover(env: dict[str, str], original_url: str, old_queue: bullmq.OldWorkerQueue) -> Deployment:
    """The original deployment with its old queue, migrated by `notifier migrate`."""
    deployment = build_original_deployment(original_url)
    seed_old_queue(old_queue, deployment)
    notifier(env, "migrate")
    return deployment


def notifier(
    env: dict[str, str], *args: str, expect: int = 0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command("notifier", *args), env=env, cwd=cwd, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == expect, (
        f"notifier {args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done


def table(output: str) -> dict[tuple[str, str], int]:
    """adopt's table: (old queue state, result) → jobs."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]
    return {(row[0], row[1]): int(row[2]) for row in rows[1:] if len(row) == 3}


def snapshot(url: str) -> tuple[list[dict[str, Any]], int]:
    with connect(url) as conn:
        jobs = conn.execute("select * from notification_jobs order by id").fetchall()
        logs = conn.execute("select count(*) as n from notification_delivery_logs").fetchone()
    return jobs, logs["n"]  # type: ignore[index]


def redis_snapshot(redis: Redis) -> dict[bytes, bytes | None]:
    return {key: redis.dump(key) for key in sorted(redis.keys("*"))}  # type: ignore[misc]


def statuses(url: str, deployment: Deployment) -> dict[str, str]:
    return status_of(url, deployment.jobs)


def status_of(url: str, jobs: dict[str, str]) -> dict[str, str]:
    with connect(url) as conn:
        rows = conn.execute("select id, status from notification_jobs").fetchall()
    by_id = {str(row["id"]): row["status"] for row in rows}
    return {name: by_id[job_id] for name, job_id in jobs.items()}


# --- migrate over the original schema -------------------------------------------------------


def test_migrate_keeps_every_row_and_tightens_the_original_policies(
    env: dict[str, str], original_url: str
) -> None:
    deployment = build_original_deployment(original_url)
    columns = "id, status, content, message_id, failure_reason, retry_count, created_at"
    with connect(original_url) as conn:
        before = conn.execute(f"select {columns} from notification_jobs order by id").fetchall()
        logs_before = conn.execute(
            "select * from notification_delivery_logs order by id"
        ).fetchall()
    with connect(original_url) as conn, conn.transaction(force_rollback=True):
        conn.execute("select set_config('request.jwt.claims', %s, true)",
                     (json.dumps({"role": "authenticated", "sub": deployment.owner}),))  # fmt: skip
        conn.execute("set local role authenticated")
        conn.execute("update notification_preferences_cache set is_muted = true")  # too wide

    notifier(env, "migrate")

    with connect(original_url) as conn:
        assert (
            conn.execute(f"select {columns} from notification_jobs order by id").fetchall()
            == before
        )
        logs_after = conn.execute("select * from notification_delivery_logs order by id").fetchall()
        assert [{k: log[k] for k in logs_before[0]} for log in logs_after] == logs_before
    for statement in [
        "update notification_preferences_cache set is_muted = true",
        "insert into notification_preferences_cache (recipient_id) values (gen_random_uuid())",
        "update notification_jobs set status = 'sent'",
        "delete from notification_jobs",
    ]:
        with connect(original_url) as conn, conn.transaction(force_rollback=True):
            conn.execute("select set_config('request.jwt.claims', %s, true)",
                         (json.dumps({"role": "authenticated", "sub": deployment.owner}),))  # fmt: skip
            conn.execute("set local role authenticated")
            assert conn.execute("select count(*) as n from notification_jobs").fetchone() == {
                "n": len(DEPLOYMENT)
            }  # owners still read their own jobs
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]


def test_the_seed_call_and_the_original_workers_statements_work_after_migrate(
    env: dict[str, str], original_url: str
) -> None:
    deployment = build_original_deployment(original_url)
    notifier(env, "migrate")
    with connect(original_url) as app:
        assert app.execute(
            "select count(*) as n from pg_proc where proname = 'enqueue_notification_job'"
        ).fetchone() == {"n": 1}
        call = SEED_CALL.format(recipient=deployment.recipient, group=deployment.group)
        job_id = str(app.execute(call).fetchone()["enqueue_notification_job"])  # type: ignore[index]
    with connect(original_url, "service_role") as worker:
        pending = {str(row["id"]) for row in worker.execute(SELECT_PENDING).fetchall()}
        assert job_id in pending and deployment.jobs["never_picked"] in pending
        worker.execute(SET_PROCESSING, (job_id,))
        worker.execute(SET_SENT, ("sg-after-migrate", job_id))
        worker.execute(INSERT_LOG, ("delivered", "sg-after-migrate", Jsonb({"statusCode": 202}),
                                    None, None, job_id))  # fmt: skip
        worker.execute(SET_PROCESSING, (deployment.jobs["never_picked"],))
        worker.execute(SET_FAILED, ("Invalid email address", deployment.jobs["never_picked"]))
        job = worker.execute("select * from notification_jobs where id = %s", (job_id,)).fetchone()
    assert job is not None and (job["status"], job["message_id"]) == ("sent", "sg-after-migrate")


# --- adopt ----------------------------------------------------------------------------------


def test_adopt_dry_run_prints_the_plan_and_changes_nothing(
    env: dict[str, str], cutover: Deployment, redis: Redis, bullmq_dir: Path
) -> None:
    before, redis_before = snapshot(cutover.url), redis_snapshot(redis)
    done = notifier(env, "adopt", "--dry-run", "--bullmq-dir", str(bullmq_dir))
    assert snapshot(cutover.url) == before and redis_snapshot(redis) == redis_before
    assert "would become" in done.stdout
    assert "pending, outcome unknown: may duplicate" in done.stdout
    assert "removed from the old queue with" not in done.stdout


@pytest.mark.parametrize("bullmq_version", bullmq.TESTED_VERSIONS)
def test_adopt_settles_each_case_once_and_the_old_worker_cannot_send_them(
    env: dict[str, str], cutover: Deployment, old_queue: bullmq.OldWorkerQueue, bullmq_dir: Path,
    redis: Redis, bullmq_version: str,
) -> None:  # fmt: skip
    done = notifier(env, "adopt", "--bullmq-dir", str(bullmq_dir))
    assert f"BullMQ {bullmq_version}'s own Queue.remove" in done.stdout
    assert table(done.stdout) == {
        ("completed", "sent"): 1,
        ("completed", "failed (it returned success: false)"): 1,
        ("failed", "failed"): 1,
        ("delayed", "pending, removed from old queue"): 1,
        ("delayed", "pending, outcome unknown: may duplicate, removed from old queue"): 1,
        ("prioritized", "pending, removed from old queue"): 1,
        ("waiting", "pending, removed from old queue"): 1,
        ("active", "pending, outcome unknown: may duplicate, removed from old queue"): 1,
        ("no trace", "sent (a delivered log row exists)"): 1,
        ("no trace", "pending, outcome unknown: may duplicate"): 1,
        ("unfinished, row pending", "removed from old queue, row unchanged"): 1,
    }
    assert (
        f"left alone: 1 unfinished job(s) in the old queue that are not notification jobs ({FOREIGN_JOB})"
        in done.stdout
    )

    assert statuses(cutover.url, cutover) == {
        "never_picked": "pending", "sent_before": "sent", "failed_before": "failed",
        "skipped_before": "skipped", "cancelled_before": "cancelled",
        "completed_ok": "sent", "completed_rejected": "failed", "failed_in_bullmq": "failed",
        "retrying": "pending", "prioritized": "pending", "waiting": "pending",
        "scheduled": "pending", "active": "pending", "gone_delivered": "sent",
        "gone_unknown": "pending", "added_not_marked": "pending",
    }  # fmt: skip
    with connect(cutover.url) as conn:
        jobs = {
            cutover.name_of(str(row["id"])): row
            for row in conn.execute("select * from notification_jobs").fetchall()
        }
    ok = jobs["completed_ok"]
    assert ok["message_id"] == f"bullmq-msg-{cutover.jobs['completed_ok']}"
    assert ok["processed_at"].isoformat().startswith("2026-11-20T10:00:00")
    assert jobs["completed_rejected"]["failure_reason"] == (
        "The from address does not match a verified Sender Identity"
    )
    assert jobs["failed_in_bullmq"]["failure_reason"].startswith("SendGrid API error: 503")
    assert jobs["gone_delivered"]["message_id"] == "sg-gone_delivered"
    assert jobs["retrying"]["retry_count"] == 1  # the old worker's failed attempt counts
    for name in ("gone_unknown", "active", "retrying"):  # retrying: its attempt may have gone out
        assert jobs[name]["metadata"]["unknown_outcome"] is True
        assert jobs[name]["metadata"]["adopted"]["outcome"] == "unknown"
    for name in ("prioritized", "scheduled"):
        assert "unknown_outcome" not in jobs[name]["metadata"]
    assert jobs["prioritized"]["metadata"]["adopted"]["bullmq_state"] == "prioritized"
    assert jobs["added_not_marked"]["metadata"] == {}  # only taken out of the old queue

    removed = [cutover.jobs[n] for n in ("retrying", "prioritized", "waiting", "scheduled",
                                         "active", "added_not_marked")]  # fmt: skip
    assert set(old_queue.states(removed).values()) == {"unknown"}
    assert old_queue.states([FOREIGN_JOB]) == {FOREIGN_JOB: "waiting"}

    # A second run changes nothing; the old worker started again sends none of them.
    before, redis_before = snapshot(cutover.url), redis_snapshot(redis)
    again = notifier(env, "adopt", "--bullmq-dir", str(bullmq_dir))
    assert "nothing to adopt" in again.stdout
    assert snapshot(cutover.url) == before and redis_snapshot(redis) == redis_before
    assert old_queue.drain(ms=1500) == [FOREIGN_JOB]


def test_a_delivered_log_row_makes_a_waiting_or_retrying_job_sent_not_pending(
    env: dict[str, str], cutover: Deployment
) -> None:
    # The old worker logged the delivery, then stopped before BullMQ recorded completion.
    with connect(cutover.url, "service_role") as worker:
        for name in ("waiting", "retrying"):
            worker.execute(INSERT_LOG, ("delivered", f"sg-{name}", Jsonb({"statusCode": 202}),
                                        None, None, cutover.jobs[name]))  # fmt: skip
    planned = table(notifier(env, "adopt", "--dry-run").stdout)
    done = table(notifier(env, "adopt").stdout)
    for rows in (planned, done):
        assert rows[("waiting", "sent (a delivered log row exists), removed from old queue")] == 1
        assert rows[("delayed", "sent (a delivered log row exists), removed from old queue")] == 1
        assert rows[("delayed", "pending, removed from old queue")] == 1  # scheduled: no attempt
    with connect(cutover.url) as conn:
        rows = conn.execute(
            "select id, status, message_id, metadata from notification_jobs where id = any(%s)",
            ([cutover.jobs["waiting"], cutover.jobs["retrying"]],),
        ).fetchall()
    for row in rows:
        name = cutover.name_of(str(row["id"]))
        assert (row["status"], row["message_id"]) == ("sent", f"sg-{name}")
        assert row["metadata"]["adopted"]["resolved_by"] == "delivery_log"
        assert "unknown_outcome" not in row["metadata"]


def test_after_adopt_notifier_delivers_exactly_the_undelivered_jobs_once(
    env: dict[str, str], cutover: Deployment, sendgrid: SendGridLoopback
) -> None:
    notifier(env, "adopt")  # no bullmq here: the Lua port removes the jobs
    poller_burst(env)
    worker_burst(env)
    sent = Counter(
        r.body["personalizations"][0]["custom_args"]["job_id"] for r in sendgrid.requests
    )
    assert {cutover.name_of(job_id) for job_id in sent} == NEVER_DELIVERED
    assert set(sent.values()) == {1} and sendgrid.spec_violations == []
    final = statuses(cutover.url, cutover)
    assert {name for name, status in final.items() if status == "pending"} == set()
    assert all(final[name] == "sent" for name in NEVER_DELIVERED)


@pytest.mark.parametrize("bullmq_version", bullmq.TESTED_VERSIONS)
def test_adopt_without_node_uses_the_lua_port_of_bullmqs_removal(
    env: dict[str, str], cutover: Deployment, old_queue: bullmq.OldWorkerQueue, redis: Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    done = notifier(env, "adopt", cwd=tmp_path)  # no bullmq in the current directory
    assert "notifier's port of BullMQ's removeJob script" in done.stdout
    removed = {cutover.jobs[n] for n in ("retrying", "prioritized", "waiting", "scheduled",
                                         "active", "added_not_marked")}  # fmt: skip
    assert set(old_queue.states(sorted(removed)).values()) == {"unknown"}
    events = redis.xrange("bull:notification-queue:events")
    removed_events = {
        fields[b"jobId"].decode(): fields[b"prev"].decode()
        for _, fields in events
        if fields[b"event"] == b"removed"
    }
    assert set(removed_events) == removed
    assert removed_events[cutover.jobs["scheduled"]] == "delayed"
    assert removed_events[cutover.jobs["waiting"]] == "wait"
    assert not redis.exists(f"bull:notification-queue:{cutover.jobs['prioritized']}")
    assert old_queue.drain(ms=1500) == [FOREIGN_JOB]


def test_adopt_refuses_while_the_old_worker_runs(
    env: dict[str, str], original_url: str, old_queue: bullmq.OldWorkerQueue, redis: Redis
) -> None:
    deployment = build_original_deployment(original_url)
    notifier(env, "migrate")
    before, redis_before = snapshot(original_url), redis_snapshot(redis)
    with old_queue.running_worker():
        done = notifier(env, "adopt", expect=1)
    assert "the old worker is still running: 1 BullMQ worker connection(s)" in done.stdout
    assert "pm2 stop notification-worker" in done.stdout
    assert snapshot(original_url) == before
    assert redis_snapshot(redis).keys() <= redis_before.keys() | {
        b"bull:notification-queue:meta",
        b"bull:notification-queue:stalled-check",
        b"bull:notification-queue:events",
    }  # the running worker's own bookkeeping only
    assert statuses(original_url, deployment)["gone_unknown"] == "processing"


def test_adopt_refuses_while_an_active_job_is_still_locked(
    env: dict[str, str], original_url: str, old_queue: bullmq.OldWorkerQueue
) -> None:
    deployment = build_original_deployment(original_url)
    notifier(env, "migrate")
    job_id = deployment.jobs["active"]
    old_queue.hold_active({"id": job_id, "data": {"jobId": job_id}, "scenario": "deliver"},
                          lock_ms=30000)  # fmt: skip
    before = snapshot(original_url)
    done = notifier(env, "adopt", expect=1)
    assert f"job {job_id} is active and locked by a BullMQ worker for another" in done.stdout
    assert snapshot(original_url) == before
    assert old_queue.states([job_id]) == {job_id: "active"}


def test_node_removal_errors_never_print_the_old_queues_password(tmp_path: Path) -> None:
    require_binary(bullmq.node_and_npm_found(), "node (to run the removal script)")
    # A bullmq whose Queue.remove fails the way ioredis can: naming the URL it was given.
    for package, code in {
        "ioredis": "module.exports = class { constructor(url) { this.url = url; } disconnect() {} };",
        "bullmq": "exports.Queue = class { constructor(name, { connection }) { this.c = connection; }"
        " async remove() { throw new Error('cannot connect to ' + this.c.url); } };",
    }.items():  # fmt: skip
        (tmp_path / "node_modules" / package).mkdir(parents=True)
        (tmp_path / "node_modules" / package / "package.json").write_text(
            json.dumps({"name": package, "version": "6.7.0", "main": "index.js"})
        )
        (tmp_path / "node_modules" / package / "index.js").write_text(code)
    found = bullmq_version_in(tmp_path)
    assert found is not None
    url = "redis://:s3cret-pass@127.0.0.1:1/0"
    queue = OldQueue(Redis.from_url(url, decode_responses=True))
    with pytest.raises(BullMQError) as raised:
        NodeRemover(found[0], tmp_path, found[1], url, queue).remove(["j1"])
    assert "s3cret-pass" not in str(raised.value)
    assert "cannot connect to redis://:***@127.0.0.1:1/0" in str(raised.value)


# --- handback -------------------------------------------------------------------------------


def enqueue(conn: psycopg.Connection[Any], recipient: str, kind: str = "immediate") -> str:
    row = conn.execute(
        "select enqueue_notification_job(%s, null, null, %s, 'normal', 'email', %s, 0) as id",
        (recipient, kind, Jsonb({"subject": "S", "body": "B"})),
    ).fetchone()
    return str(row["id"])  # type: ignore[index]


def add_digest_schedule(conn: psycopg.Connection[Any], recipient: str, due: str = "1 day") -> None:
    """A daily digest for the recipient, next due `due` from now: digest items are held for it."""
    conn.execute(
        "insert into digest_schedules (recipient_id, frequency, next_digest_scheduled) "
        "values (%s, 'daily', now() + %s::interval)",
        (recipient, due),
    )


@dataclass
class HandedOver:
    url: str
    recipient: str
    store: JobStore


@pytest.fixture
def handed_over(original_url: str) -> Iterator[HandedOver]:
    """An original deployment, migrated, that notifier runs (no BullMQ involved)."""
    _, recipient, _ = add_original_recipient(original_url)
    migrations.apply(original_url)
    store = JobStore(PostgresCaller(original_url, max_size=2))
    yield HandedOver(original_url, recipient, store)
    store.close()


def test_handback_returns_every_job_to_an_original_status(
    env: dict[str, str], handed_over: HandedOver, sendgrid: SendGridLoopback
) -> None:
    url, recipient, store = handed_over.url, handed_over.recipient, handed_over.store
    with connect(url) as conn:
        jobs = {"in_flight": enqueue(conn, recipient)}
    [claim] = store.claim(1, 300)
    [job] = store.start_attempts([claim], 300)  # a worker is sending it right now
    with connect(url) as conn:
        add_digest_schedule(conn, recipient, "-1 minute")  # items are held only for a schedule
        jobs["digested"] = enqueue(conn, recipient, "digest")
        assert conn.execute("select create_digest_jobs() as n").fetchone() == {"n": 1}
        jobs["held"] = enqueue(conn, recipient, "digest")
        jobs |= {"queued_1": enqueue(conn, recipient), "queued_2": enqueue(conn, recipient)}
    poller_burst(env)
    with connect(url) as conn:
        jobs["expired"] = enqueue(conn, recipient)
    # A worker died sending it (claimed after the poller ran, so its reaper cannot interfere).
    store.start_attempts(store.claim(1, 1), 1)
    assert status_of(url, jobs) == {
        "in_flight": "processing", "expired": "processing", "digested": "digested",
        "held": "held", "queued_1": "queued", "queued_2": "queued",
    }  # fmt: skip
    time.sleep(1.1)  # the dead worker's lease expires

    handback = subprocess.Popen(
        command("notifier", "handback", "--timeout", "30"), env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.5)
    assert handback.poll() is None  # waiting for the attempt in flight
    store.complete(job, "sendgrid", "sg-in-flight", None, 100)
    out, err = handback.communicate(timeout=30)
    assert handback.returncode == 0, out + err
    for line in ["queued → pending", "processing, lease expired → pending (outcome unknown)",
                 "held → pending", "digested → skipped"]:  # fmt: skip
        assert line in out, out

    with connect(url) as conn:
        rows = conn.execute("select id, status, metadata from notification_jobs").fetchall()
        assert {row["status"] for row in rows} <= ORIGINAL_STATUSES
        assert status_of(url, jobs) == {
            "in_flight": "sent", "expired": "pending", "digested": "skipped", "held": "pending",
            "queued_1": "pending", "queued_2": "pending",
        }  # fmt: skip
        by_id = {str(row["id"]): row for row in rows}
        assert by_id[jobs["held"]]["metadata"]["handed_back"]["from_status"] == "held"
        digest = conn.execute("select digest_job_id, failure_reason from notification_jobs "
                              "where id = %s", (jobs["digested"],)).fetchone()  # fmt: skip
        assert digest is not None
        assert digest["failure_reason"] == f"carried by digest job {digest['digest_job_id']}"
        assert by_id[str(digest["digest_job_id"])]["status"] == "pending"  # handed back itself
        # Nothing notifier released is sent by notifier: claims are paused, stale RQ jobs dropped.
        poller_burst(env)
        worker_burst(env)
        assert sendgrid.requests == []
        assert conn.execute("select notifier_handed_back() as h").fetchone() == {"h": True}
        # While handed back, a new job never starts in a status the original worker ignores.
        late = enqueue(conn, recipient, "digest")
        assert status_of(url, {"late": late}) == {"late": "pending"}
    with connect(url, "service_role") as worker:
        pending = {str(row["id"]) for row in worker.execute(SELECT_PENDING).fetchall()}
        expected = {jobs[n] for n in ("expired", "held", "queued_1", "queued_2")} | {late}
        assert expected <= pending
        for job_id in pending:
            worker.execute(SET_PROCESSING, (job_id,))
            worker.execute(SET_SENT, (f"sg-old-{job_id}", job_id))

    again = notifier(env, "handback")
    assert "nothing to hand back" in again.stdout

    # Switching to notifier again: adopt resumes the claims the handback paused.
    adopted = notifier(env, "adopt")
    assert "claims resumed (they were paused by notifier handback)" in adopted.stdout
    with connect(url) as conn:
        assert conn.execute("select notifier_handed_back() as h").fetchone() == {"h": False}


def test_an_operators_pause_after_handback_keeps_the_queue_handed_back(
    env: dict[str, str], handed_over: HandedOver
) -> None:
    url, recipient = handed_over.url, handed_over.recipient
    with connect(url) as conn:
        add_digest_schedule(conn, recipient)  # so a digest item would be held
    notifier(env, "handback")
    paused = notifier(env | {"LOGNAME": "alice", "USER": "alice"}, "pause", "--reason", "42")
    assert "by alice@" in paused.stdout  # paused_by no longer names notifier handback
    with connect(url) as conn:
        assert conn.execute("select notifier_handed_back() as h").fetchone() == {"h": True}
        late = enqueue(conn, recipient, "digest")  # the original worker never sends `held`
        assert status_of(url, {"late": late}) == {"late": "pending"}
    refused = notifier(env, "resume", expect=1)
    assert "handed back to the original worker" in refused.stdout + refused.stderr
    with connect(url) as conn:
        assert conn.execute("select paused from notifier_control").fetchone() == {"paused": True}

    adopted = notifier(env, "adopt")  # the way back: resumes claims and ends the hand-back
    assert "claims resumed" in adopted.stdout
    with connect(url) as conn:
        assert conn.execute("select notifier_handed_back() as h").fetchone() == {"h": False}
        held = enqueue(conn, recipient, "digest")
        assert status_of(url, {"held": held}) == {"held": "held"}


def test_handback_gives_a_digested_item_its_finished_digests_status(
    env: dict[str, str], handed_over: HandedOver
) -> None:
    url, recipient, store = handed_over.url, handed_over.recipient, handed_over.store
    with connect(url) as conn:
        add_digest_schedule(conn, recipient, "-1 minute")
        item = enqueue(conn, recipient, "digest")
        conn.execute("select create_digest_jobs()")
    [digest] = store.start_attempts(store.claim(1, 300), 300)
    store.complete(digest, "sendgrid", "sg-digest", None, 100)
    done = notifier(env, "handback")
    assert "digested → sent" in done.stdout
    assert status_of(url, {"item": item, "digest": digest.job_id}) == {
        "item": "sent", "digest": "sent"
    }  # fmt: skip


def test_handback_times_out_naming_what_is_still_in_flight(
    env: dict[str, str], handed_over: HandedOver
) -> None:
    with connect(handed_over.url) as conn:
        enqueue(conn, handed_over.recipient)
    handed_over.store.start_attempts(handed_over.store.claim(1, 300), 300)
    done = notifier(env, "handback", "--timeout", "0.5", expect=1)
    assert "1 job(s) are still being sent by notifier workers" in done.stdout
    assert statuses_in(handed_over.url) == {"processing"}


def statuses_in(url: str) -> set[str]:
    with connect(url) as conn:
        return {row["status"] for row in conn.execute("select status from notification_jobs")}
