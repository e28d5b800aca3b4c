"""The operations commands as an operator types them, on a seeded database: pause (across a
poller restart) and drain, resume, retry, cancel, export, cleanup, status, exit codes, help,
no secret in any output; and the Procfile / PM2 entries pointing at real commands."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row
from redis import Redis

from notifier.cli import main
from notifier.devstack.demo import command
from notifier.devstack.servers import LocalPostgres
from notifier.schema import migrate as migrations
from tests.conftest import require_binary
from tests.integration import seed
from tests.integration.conftest import REPO
from tests.integration.ops_support import insert_jobs, registered_worker
from tests.integration.pipeline import (
    poller_burst,
    start_poller,
    statuses,
    wait_for,
    worker_burst,
)
from tests.integration.test_schema_check import create_original_database
from tests.support.loopback import unused_base_url

COMMANDS = ("web", "status", "pause", "resume", "retry", "cancel", "export", "cleanup")


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def notifier(env: dict[str, str], *args: str) -> Done:
    """`notifier ARGS` in this process (click's runner: the command's exit code and output,
    without a second's start-up per call); `env` is the whole environment it sees."""
    runner = CliRunner(env={k: env.get(k) for k in {*os.environ, *env}})
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = runner.invoke(main, list(args), catch_exceptions=False)
    finally:  # the command pointed logging at the runner's streams, closed now
        root.handlers[:], root.level = handlers, level
    return Done(result.exit_code, result.stdout, result.stderr)


def _process(env: dict[str, str], *args: str) -> Done:
    done = subprocess.run(
        command("notifier", *args), env=env, capture_output=True, text=True, timeout=60
    )
    return Done(done.returncode, done.stdout, done.stderr)


def enqueue(db: psycopg.Connection[Any], recipient: str, n: int = 1) -> list[str]:
    rows = db.execute(
        "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', 'email',"
        " jsonb_build_object('subject', 'S' || i, 'body', 'B'), 0) as id"
        " from generate_series(1, %s) i",
        (recipient, n),
    ).fetchall()
    return [str(r["id"]) for r in rows]


def test_pause_survives_a_poller_restart_and_workers_drain(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    queued = enqueue(db, recipient, 3)
    poller_burst(base_env)
    assert statuses(db) == {"queued": 3}

    paused = notifier(base_env, "pause", "--reason", "deploy 1.4")
    assert paused.returncode == 0, paused.stderr
    assert "claiming paused since" in paused.stdout
    assert "in flight: 3 queued, 0 processing" in paused.stdout

    slow_poll = base_env | {"NOTIFIER_POLL_INTERVAL": "30"}
    later = enqueue(db, recipient, 2)
    for _restart in range(2):  # the pause holds for a running poller and for a fresh one
        poller = start_poller(slow_poll)
        poller.send_signal(signal.SIGTERM)
        assert poller.wait(timeout=10) == 0
        assert {seed.job(db, j)["status"] for j in later} == {"pending"}

    status = notifier(base_env, "status", "--json")
    report = json.loads(status.stdout)
    assert report["paused"] is True and report["pause"]["reason"] == "deploy 1.4"
    assert "@" in report["pause"]["paused_by"]
    assert report["in_flight"] == {"queued": 3, "processing": 0}
    text = notifier(base_env, "status").stdout
    assert "claiming: PAUSED since" in text and "still in flight (draining): 3 queued" in text

    worker_burst(base_env, simple=True)  # workers finish what was queued
    assert {seed.job(db, j)["status"] for j in queued} == {"sent"}
    drained = notifier(base_env, "pause", "--wait", "--timeout", "5")
    assert drained.returncode == 0 and "drained" in drained.stdout
    assert {seed.job(db, j)["status"] for j in later} == {"pending"}

    poller = start_poller(slow_poll)  # listening, idle, paused
    try:
        started = time.monotonic()
        resumed = notifier(base_env, "resume")
        assert resumed.returncode == 0 and "claiming resumed" in resumed.stdout
        # resuming wakes the poller (NOTIFY): well before its 30 s poll interval
        wait_for(lambda: {seed.job(db, j)["status"] for j in later} == {"queued"}, timeout=5)
        assert time.monotonic() - started < 5
    finally:
        poller.send_signal(signal.SIGTERM)
        assert poller.wait(timeout=10) == 0


def test_pause_waits_for_a_claim_in_progress_and_later_claims_see_it(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    enqueue(db, recipient, 4)
    with psycopg.connect(database_url) as claimer, psycopg.connect(database_url) as operator:
        claimer.execute("select * from claim_notification_jobs(2, 60)")  # open transaction
        operator.execute("set statement_timeout = 300")
        with pytest.raises(psycopg.errors.QueryCanceled):
            operator.execute("select * from set_notifier_paused(true)")  # waits for the claim
        operator.rollback()
        claimer.commit()
        operator.execute("select * from set_notifier_paused(true)")
        operator.commit()
        rows = claimer.execute("select * from claim_notification_jobs(10, 60)").fetchall()
        claimer.commit()
    assert rows == []
    assert statuses(db) == {"queued": 2, "pending": 2}


def test_retry_failed_with_filters_and_dry_run(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    timeouts = insert_jobs(db, recipient, 3, status="failed", processed_ago_seconds=600,
                           failure_reason="gave up after 4 attempts: SendGrid timed out")  # fmt: skip
    old = insert_jobs(db, recipient, 2, status="failed", processed_ago_seconds=3 * 86400,
                      failure_reason="gave up after 4 attempts: SendGrid timed out")  # fmt: skip
    bounced = insert_jobs(db, recipient, 1, status="failed", processed_ago_seconds=60,
                          failure_reason="recipient has no email address")  # fmt: skip
    dry = notifier(base_env, "retry", "--failed", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.strip() == "would retry 6 failed job(s)"
    dry = notifier(base_env, "retry", "--failed", "--since", "1d", "--reason-like", "TIMED OUT",
                   "--dry-run")  # fmt: skip
    assert dry.stdout.strip() == "would retry 3 failed job(s)"
    assert statuses(db) == {"failed": 6}

    done = notifier(base_env, "retry", "--failed", "--since", "24h", "--reason-like", "timed out")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("retried 3 failed job(s)")
    for job_id in timeouts:
        job = seed.job(db, job_id)
        assert job["status"] == "pending" and job["retry_count"] == 0
        assert job["failure_reason"] is None and job["processed_at"] is None
        assert job["metadata"]["manual_retry"]["previous_failure_reason"].endswith("timed out")
        assert job["metadata"]["manual_retry"]["previous_retry_count"] == 3
    assert {seed.job(db, j)["status"] for j in old + bounced} == {"failed"}
    pattern = notifier(base_env, "retry", "--failed", "--reason-like", "recipient has no %")
    assert pattern.stdout.startswith("retried 1 failed job(s)")
    poller_burst(base_env)
    assert statuses(db) == {"failed": 2, "queued": 4}  # due now: claimed at once


def test_retry_leaves_jobs_with_an_unknown_outcome_unless_asked(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    unknown = insert_jobs(db, recipient, 2, status="failed", processed_ago_seconds=60,
                          failure_reason="outcome unknown: SendGrid read timed out")  # fmt: skip
    # As record_unknown_notification_outcome leaves them: the column, not the text, says so.
    db.execute("update notification_jobs set outcome_unknown_at = now() where id = any(%s::uuid[])",
               (unknown,))  # fmt: skip
    timeouts = insert_jobs(db, recipient, 1, status="failed", processed_ago_seconds=60,
                           failure_reason="gave up after 4 attempts: SendGrid timed out")  # fmt: skip
    dry = notifier(base_env, "retry", "--failed", "--reason-like", "timed out", "--dry-run")
    assert dry.stdout.strip() == "would retry 1 failed job(s)"
    done = notifier(base_env, "retry", "--failed", "--since", "24h", "--reason-like", "timed out")
    assert done.stdout.startswith("retried 1 failed job(s)"), done.stderr
    assert seed.job(db, timeouts[0])["status"] == "pending"
    assert {seed.job(db, j)["status"] for j in unknown} == {"failed"}
    forced = notifier(base_env, "retry", "--failed", "--include-unknown")
    assert forced.stdout.startswith("retried 2 failed job(s)"), forced.stderr
    assert {seed.job(db, j)["status"] for j in unknown} == {"pending"}
    helped = notifier(base_env, "retry", "--help")
    assert "--include-unknown" in helped.stdout and "duplicate" in helped.stdout


def test_retry_and_export_reject_bad_arguments(base_env: dict[str, str]) -> None:
    no_selection = notifier(base_env, "retry")
    assert no_selection.returncode == 2 and "--failed" in no_selection.stderr
    bad_since = notifier(base_env, "retry", "--failed", "--since", "yesterday")
    assert bad_since.returncode == 2
    assert "expected a duration like 24h" in bad_since.stderr and "'yesterday'" in bad_since.stderr
    bad_status = notifier(base_env, "export", "--out", "x.jsonl", "--status", "lost")
    assert bad_status.returncode == 2 and "'lost' is not one of" in bad_status.stderr
    bad_days = notifier(base_env, "cleanup", "--days", "0")
    assert bad_days.returncode == 2 and "0 is not in the range x>=1" in bad_days.stderr
    bad_id = notifier(base_env, "cancel", "not-a-uuid")
    assert bad_id.returncode == 2 and "not-a-uuid" in bad_id.stderr
    no_db = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    missing = notifier(no_db, "pause")
    assert missing.returncode == 2 and "DATABASE_URL is not set" in missing.stderr
    for unset in ("DATABASE_URL", "REDIS_URL"):  # a configuration error, not "could not read"
        status = notifier({k: v for k, v in base_env.items() if k != unset}, "status")
        assert status.returncode == 2, status.stderr
        (line,) = status.stderr.strip().splitlines()
        assert f"{unset} is not set" in line


def test_cancel_explains_each_job(db: psycopg.Connection[Any], base_env: dict[str, str]) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    [pending] = enqueue(db, recipient)
    [sent] = insert_jobs(db, recipient, 1, status="sent", processed_ago_seconds=5)
    missing = "00000000-0000-4000-8000-000000000000"
    done = notifier(base_env, "cancel", pending, sent, missing)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{pending}: cancelled",
        f"{sent}: not cancelled, it is sent (only pending or queued jobs can be cancelled)",
        f"{missing}: no such job",
    ]
    assert seed.job(db, pending)["status"] == "cancelled"
    [other] = enqueue(db, recipient)
    assert notifier(base_env, "cancel", other).returncode == 0


def test_export_streams_jobs_and_logs(
    db: psycopg.Connection[Any], base_env: dict[str, str], tmp_path: Path
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    insert_jobs(db, recipient, 4500, status="sent", processed_ago_seconds=30)
    failed = insert_jobs(db, recipient, 2, status="failed", failure_reason="bad address")
    db.execute(
        "insert into notification_delivery_logs (job_id, recipient_id, delivery_method, status,"
        " provider, attempt, error_message) select id, recipient_id, 'email', 'bounced',"
        " 'sendgrid', 1, 'bad address' from notification_jobs where id = any(%s::uuid[])",
        (failed,),
    )
    out = tmp_path / "failed.jsonl"
    done = notifier(base_env, "export", "--out", str(out), "--status", "failed", "--with-logs")
    assert done.returncode == 0, done.stderr
    assert "exported 2 job(s)" in done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(failed)
    for line in lines:
        assert line["status"] == "failed" and line["failure_reason"] == "bad address"
        [log] = line["delivery_logs"]
        assert log["status"] == "bounced" and log["job_id"] == line["id"]
    assert not (tmp_path / "failed.jsonl.part").exists()

    everything = notifier(base_env, "export", "--out", "-", "--since", "1h")
    rows = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(rows) == 4502 and "delivery_logs" not in rows[0]
    assert len({row["id"] for row in rows}) == 4502


def test_cleanup_removes_old_finished_jobs_only(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    insert_jobs(db, recipient, 3, status="sent", processed_ago_seconds=40 * 86400)
    insert_jobs(db, recipient, 1, status="failed", processed_ago_seconds=40 * 86400)
    insert_jobs(db, recipient, 2, status="sent", processed_ago_seconds=86400)
    insert_jobs(db, recipient, 1, status="pending", scheduled_ago_seconds=40 * 86400)
    done = notifier(base_env, "cleanup", "--days", "30")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "removed 4 finished job(s) older than 30 days, with their delivery logs; "
        "preferences are kept"
    )
    assert statuses(db) == {"sent": 2, "pending": 1}


def test_a_muted_recipient_stays_muted_after_cleanup(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    """Preference rows are people's settings: their cache_expires_at means nothing to
    notifier, so cleanup keeps them however old it is."""
    muted = seed.add_recipient(db, name="Bo")
    daily = seed.add_recipient(db, name="Cy")
    seed.set_preferences(db, muted["recipient"], is_muted=True)
    seed.set_preferences(db, daily["recipient"], effective_frequency="daily")
    db.execute(
        "update notification_preferences_cache set cache_expires_at = now() - interval '400 days'"
    )
    done = notifier(base_env, "cleanup", "--days", "1")
    assert done.returncode == 0, done.stderr
    kept = db.execute("select count(*) as n from notification_preferences_cache").fetchone()
    assert kept == {"n": 2}

    (job_id,) = enqueue(db, muted["recipient"])
    poller_burst(base_env)
    worker_burst(base_env, simple=True)
    assert seed.job(db, job_id)["status"] == "skipped"


def test_status_shows_everything_an_operator_checks_first(
    db: psycopg.Connection[Any], base_env: dict[str, str], redis: Redis
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    insert_jobs(db, recipient, 2, scheduled_ago_seconds=30)
    insert_jobs(db, recipient, 1, method="sms", scheduled_ago_seconds=10)
    insert_jobs(db, recipient, 3, status="failed", failure_reason="timed out",
                processed_ago_seconds=60)  # fmt: skip
    insert_jobs(db, recipient, 1, status="failed", failure_reason="bad address",
                processed_ago_seconds=60)  # fmt: skip
    sent = insert_jobs(db, recipient, 4, status="sent", processed_ago_seconds=60,
                       scheduled_ago_seconds=62)  # fmt: skip
    for job_id, duration in zip(sent, (100, 200, 300, 1000), strict=True):
        db.execute(
            "insert into notification_delivery_logs (job_id, recipient_id, delivery_method,"
            " status, provider, attempt, delivery_duration_ms, delivery_time)"
            " select id, recipient_id, 'email', 'delivered', 'sendgrid', 1, %s,"
            " scheduled_for + interval '2 seconds' from notification_jobs where id = %s",
            (duration, job_id),
        )
    with registered_worker(redis, "status-worker"):
        done = notifier(base_env, "status", "--json")
        text = notifier(base_env, "status")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["paused"] is False and report["errors"] == []
    assert report["jobs"]["pending"]["email"] == 2 and report["jobs"]["failed"]["email"] == 4
    assert report["backlog"]["due_now"] == 3
    assert report["backlog"]["by_method"]["sms"]["due"] == 1
    assert report["failed"]["top_reasons"] == [
        {"reason": "timed out", "count": 3}, {"reason": "bad address", "count": 1}
    ]  # fmt: skip
    day = report["last_24h"]
    assert (day["sent"], day["failed"], day["success_rate"]) == (4, 4, 0.5)
    assert day["provider_ms"] == {"avg": 400.0, "p95": 895.0}
    assert day["scheduled_to_sent_ms"]["avg"] == pytest.approx(2000, abs=1)
    [worker] = report["workers"]
    assert worker["name"] == "status-worker" and worker["heartbeat_age_seconds"] < 60
    assert set(report["queues"]) == {"notifier-urgent", "notifier-normal", "notifier-low"}
    assert text.returncode == 0
    for fragment in ("claiming: active", "failed jobs: 4", "3  timed out", "success rate 50.0 %",
                     "provider time      avg 400 ms, p95 895 ms", "status-worker", "workers: 1"):  # fmt: skip
        assert fragment in text.stdout, (fragment, text.stdout)


def test_status_exits_1_and_shows_what_it_could_read(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    no_redis = base_env | {"REDIS_URL": unused_base_url().replace("http", "redis") + "/0"}
    done = notifier(no_redis, "status", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["jobs"]["pending"]["email"] == 0  # Postgres was read
    assert report["errors"] and report["errors"][0].startswith("Redis: ConnectionError")


def test_no_secret_in_command_output(base_env: dict[str, str], database_url: str) -> None:
    secret_db = database_url.replace("postgres@", "postgres:pg-Cli-S3cret@")
    dead_db = unused_base_url().replace("http://", "postgresql://postgres:pg-Cli-S3cret@") + "/db"
    redis_pw = base_env["REDIS_URL"].replace("redis://", "redis://:Redis-Cli-S3cret@")
    env = base_env | {
        "DATABASE_URL": secret_db, "REDIS_URL": redis_pw,
        "SENDGRID_API_KEY": "SG.cli-key-S3cret", "EMAIL_FROM": "n@example.com",
    }  # fmt: skip
    outputs = [
        notifier(env, "status"),
        notifier(env, "status", "--json"),
        notifier(env | {"DATABASE_URL": dead_db}, "pause"),
        notifier(env | {"DATABASE_URL": dead_db}, "status", "--json"),
        notifier(env, "retry", "--failed", "--dry-run"),
    ]
    outputs.append(_process(env | {"DATABASE_URL": dead_db}, "pause"))  # a real process too
    for failed in (outputs[2], outputs[-1]):
        assert failed.returncode == 1
        assert "cannot reach PostgreSQL at 127.0.0.1:" in failed.stderr
    for done in outputs:
        for secret in ("pg-Cli-S3cret", "Redis-Cli-S3cret", "SG.cli-key-S3cret"):
            assert secret not in done.stdout + done.stderr


def test_every_command_has_help_with_examples(base_env: dict[str, str]) -> None:
    for name in COMMANDS:
        done = notifier(base_env, name, "--help")
        assert done.returncode == 0, (name, done.stderr)
        assert "Example" in done.stdout, name
    assert all(name in notifier(base_env, "--help").stdout for name in COMMANDS)


def procfile() -> dict[str, str]:
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, cmd = line.partition(":")
            entries[name.strip()] = cmd.strip()
    return entries


def pm2_apps() -> list[dict[str, Any]]:
    require_binary(shutil.which("node") is not None, "node (to read ecosystem.config.js)")
    code = "console.log(JSON.stringify(require(process.argv[1]).apps))"
    done = subprocess.run(
        ["node", "-e", code, str(REPO / "ecosystem.config.js")],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": str(Path(command("notifier")[0]).parent) + ":/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_procfile_and_pm2_run_real_commands(base_env: dict[str, str]) -> None:
    entries = procfile()
    assert set(entries) == {"poller", "worker", "scheduler", "web"}
    apps = {app["name"]: app for app in pm2_apps()}
    assert set(apps) == {f"notifier-{name}" for name in entries}
    for name, line in entries.items():
        app = apps[f"notifier-{name}"]
        assert Path(app["script"]).name == shlex.split(line)[0]
        assert Path(app["script"]).is_file()
        assert app["args"] == shlex.join(shlex.split(line)[1:])
        assert app["interpreter"] == "none" and app["autorestart"] is True
        program, *args = shlex.split(line)
        if program == "notifier":
            help_done = notifier(base_env, args[0], "--help")
            assert help_done.returncode == 0, (name, help_done.stderr)
        else:
            assert [program, *args[:3]] == ["rq", "worker", "-c", "notifier.rq_settings"]
            done = subprocess.run(command("rq", "worker", "--help"), capture_output=True,
                                  text=True, env=base_env, timeout=30)  # fmt: skip
            assert done.returncode == 0
            worker_class = args[-1].rsplit(".", 1)[-1]  # -w rq.worker.SimpleWorker
            imported = subprocess.run(
                [sys.executable, "-c", f"import {args[2]}, rq.worker; rq.worker.{worker_class}"],
                env=base_env, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert imported.returncode == 0, imported.stderr
    assert apps["notifier-worker"]["instances"] >= 2
    assert apps["notifier-worker"]["kill_timeout"] >= 60_000  # a whole RQ job may finish
    assert all(app["kill_timeout"] >= 10_000 for app in apps.values())


def test_operations_work_over_a_migrated_original_deployment(
    pg_server: LocalPostgres, base_env: dict[str, str]
) -> None:
    url = create_original_database(pg_server, f"original_ops_{os.getpid()}")
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        owner = conn.execute("select gen_random_uuid() as id").fetchone()["id"]  # type: ignore[index]
        recipient = conn.execute(
            "insert into recipients (parent_id, name, relationship, email)"
            " values (%s, 'Ada', 'grandmother', 'ada@example.com') returning id",
            (owner,),
        ).fetchone()["id"]  # type: ignore[index]
        conn.execute(
            "insert into notification_jobs (recipient_id, notification_type, delivery_method,"
            " status, failure_reason, retry_count, processed_at) values"
            " (%s, 'immediate', 'email', 'failed', 'SendGrid 503', 3, now()),"
            " (%s, 'immediate', 'email', 'pending', null, 0, null)",
            (recipient, recipient),
        )
    migrations.apply(url)
    env = base_env | {"DATABASE_URL": url}
    assert notifier(env, "pause").returncode == 0
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        assert conn.execute("select * from claim_notification_jobs(10, 60)").fetchall() == []
        assert notifier(env, "resume").returncode == 0
        assert len(conn.execute("select * from claim_notification_jobs(10, 60)").fetchall()) == 1
    done = notifier(env, "retry", "--failed", "--reason-like", "503")
    assert done.stdout.startswith("retried 1 failed job(s)"), done.stdout + done.stderr
    report = json.loads(notifier(env, "status", "--json").stdout)
    assert report["jobs"]["pending"]["email"] == 1 and report["jobs"]["queued"]["email"] == 1
