"""End to end with the real commands: SQL enqueue → `notifier poller` → `rq worker` →
SendGrid/Twilio loopback servers that check each request against the official specs."""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from typing import Any

import psycopg
import pytest
from redis import Redis

from notifier.devstack.demo import poller_command, worker_command
from tests.integration import seed
from tests.integration.pipeline import poller_burst, statuses, wait_for, worker_burst
from tests.support.loopback import SendGridLoopback, TwilioLoopback

ACCOUNT_SID = "AC" + "0" * 32


@pytest.fixture
def env(
    base_env: dict[str, str], sendgrid: SendGridLoopback, twilio: TwilioLoopback
) -> dict[str, str]:
    return base_env | {
        "NOTIFIER_EMAIL_PROVIDER": "sendgrid",
        "NOTIFIER_SMS_PROVIDER": "twilio",
        "SENDGRID_API_KEY": "SG.test-key",
        "SENDGRID_API_BASE": sendgrid.base_url,
        "EMAIL_FROM": "notifications@example.com",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": "test-token",
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE": twilio.base_url,
        "TWILIO_STATUS_CALLBACK_URL": "https://hooks.example.com/twilio/status",
        "UNSUBSCRIBE_URL_BASE": "https://app.example.com/preferences/{token}",
    }


def enqueue(
    db: psycopg.Connection[Any], recipient: str, method: str = "email", **content: str
) -> str:
    body = content or {
        "subject": "Test Notification",
        "body": "Hello from the notification system!",
    }
    row = db.execute(
        "select enqueue_notification_job(%s::uuid, null::uuid, null::uuid, 'immediate', 'normal', %s, %s, 0) as id",
        (recipient, method, psycopg.types.json.Jsonb(body)),
    ).fetchone()
    assert row is not None
    return str(row["id"])


def test_seed_call_is_delivered_once_through_sendgrid(
    db: psycopg.Connection[Any], env: dict[str, str], sendgrid: SendGridLoopback
) -> None:
    ids = seed.add_recipient(db)
    row = db.execute(
        f"SELECT enqueue_notification_job('{ids['recipient']}'::uuid, '{ids['group']}'::uuid, NULL, "
        "'immediate', 'normal', 'email', "
        """'{"subject": "Test Notification", "body": "Hello from the notification system!"}'::jsonb, 0) AS id"""
    ).fetchone()
    assert row is not None
    job_id = str(row["id"])

    poller_burst(env)
    worker_burst(env)

    job = seed.job(db, job_id)
    assert job["status"] == "sent" and job["processed_at"] is not None
    logs = seed.logs(db, job_id)
    assert [(log["status"], log["provider"]) for log in logs] == [("delivered", "sendgrid")]
    assert job["message_id"] == logs[0]["provider_message_id"] and job["message_id"]
    assert len(sendgrid.requests) == 1 and sendgrid.spec_violations == []
    body = sendgrid.requests[0].body
    assert body["personalizations"][0]["custom_args"]["job_id"] == job_id
    assert body["subject"] == "Test Notification"
    headers = body["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://app.example.com/preferences/" in headers["List-Unsubscribe"]


def test_sms_and_whatsapp_go_through_twilio_with_the_job_id(
    db: psycopg.Connection[Any], env: dict[str, str], twilio: TwilioLoopback
) -> None:
    ids = seed.add_recipient(db)
    sms = enqueue(db, ids["recipient"], "sms", body="Short text")
    whatsapp = enqueue(db, ids["recipient"], "whatsapp", body="Hello on WhatsApp")

    poller_burst(env)
    worker_burst(env, simple=True)

    assert statuses(db) == {"sent": 2}
    assert twilio.spec_violations == [] and len(twilio.requests) == 2
    by_job = {r.body["StatusCallback"].split("job_id=")[1]: r.body for r in twilio.requests}
    assert by_job[sms]["To"] == "+15005550006"
    assert by_job[whatsapp]["To"] == "whatsapp:+15005550006"
    assert seed.job(db, sms)["message_id"].startswith("SM")


def test_muted_recipient_is_skipped_without_a_request(
    db: psycopg.Connection[Any], env: dict[str, str], sendgrid: SendGridLoopback
) -> None:
    ids = seed.add_recipient(db)
    seed.set_preferences(db, ids["recipient"], is_muted=True)
    job_id = enqueue(db, ids["recipient"])
    poller_burst(env)
    worker_burst(env)
    assert seed.job(db, job_id)["status"] == "skipped"
    assert [log["status"] for log in seed.logs(db, job_id)] == ["muted"]
    assert sendgrid.requests == []


def test_bad_config_names_the_variable_at_worker_start(env: dict[str, str]) -> None:
    broken = {k: v for k, v in env.items() if k != "REDIS_URL"}
    done = subprocess.run(
        worker_command("--burst"), env=broken, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "REDIS_URL is not set" in done.stderr


def test_worker_without_any_provider_refuses_to_start_and_sends_nothing(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    """No configuration makes a job `sent` without a provider call: console is opt-in."""
    ids = seed.add_recipient(db)
    job_id = enqueue(db, ids["recipient"])
    unset = ("NOTIFIER_EMAIL_PROVIDER", "NOTIFIER_SMS_PROVIDER")
    no_provider = {k: v for k, v in base_env.items() if k not in unset}
    poller_burst(no_provider)  # the poller sends nothing and needs no provider keys
    done = subprocess.run(
        worker_command("--burst"), env=no_provider, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "SENDGRID_API_KEY is not set: set it (with EMAIL_FROM), or " in line
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set" in line
    assert seed.job(db, job_id)["status"] == "queued"


def test_a_channel_without_a_provider_fails_its_jobs_readably_and_the_others_are_sent(
    db: psycopg.Connection[Any], env: dict[str, str], sendgrid: SendGridLoopback,
    twilio: TwilioLoopback,
) -> None:
    ids = seed.add_recipient(db)
    email_only = {
        k: v for k, v in env.items() if not k.startswith("TWILIO_") and k != "NOTIFIER_SMS_PROVIDER"
    }
    email_job = enqueue(db, ids["recipient"])
    sms_job = enqueue(db, ids["recipient"], "sms")
    poller_burst(email_only)
    done = worker_burst(email_only, simple=True)
    assert "notifier: sms jobs will fail: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in done.stderr
    assert seed.job(db, email_job)["status"] == "sent"
    failed = seed.job(db, sms_job)
    assert failed["status"] == "failed"
    assert failed["failure_reason"].startswith("no SMS provider is configured: TWILIO_ACCOUNT_SID")
    assert len(sendgrid.requests) == 1 and twilio.requests == []


def test_partial_twilio_credentials_stop_the_worker_naming_the_missing_one(
    base_env: dict[str, str],
) -> None:
    partial = {k: v for k, v in base_env.items() if k != "NOTIFIER_SMS_PROVIDER"}
    partial["TWILIO_ACCOUNT_SID"] = ACCOUNT_SID
    done = subprocess.run(
        worker_command("--burst"), env=partial, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "TWILIO_AUTH_TOKEN is not set (TWILIO_ACCOUNT_SID is set)" in done.stderr


def test_two_pollers_claim_each_job_once(
    db: psycopg.Connection[Any], env: dict[str, str], redis: Redis
) -> None:
    ids = seed.add_recipient(db)
    db.execute(
        "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', 'email', "
        "jsonb_build_object('body', 'n' || i), 0) from generate_series(1, 1500) i",
        (ids["recipient"],),
    )
    small_batches = env | {"NOTIFIER_CLAIM_BATCH": "50"}
    pollers = [
        subprocess.Popen(
            poller_command("--burst"),
            env=small_batches,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for poller in pollers:
        assert poller.wait(timeout=60) == 0
    from rq import Queue

    claimed: list[str] = []
    for name in ("notifier-urgent", "notifier-normal", "notifier-low"):
        for job in Queue(name, connection=redis).jobs:
            claimed.extend(pair[0] for pair in job.args[0])
    assert len(claimed) == 1500
    assert len(set(claimed)) == 1500
    assert statuses(db) == {"queued": 1500}


def test_worker_killed_mid_batch_loses_nothing(
    db: psycopg.Connection[Any], env: dict[str, str], sendgrid: SendGridLoopback
) -> None:
    fast_lease = env | {
        "NOTIFIER_LEASE_SECONDS": "3",
        "NOTIFIER_PROVIDER_TIMEOUT": "0.9",
        "NOTIFIER_SEND_CONCURRENCY": "1",
        "NOTIFIER_REAPER_INTERVAL": "0.2",
    }
    sendgrid.delay_seconds = 0.4
    ids = seed.add_recipient(db)
    job_ids = [enqueue(db, ids["recipient"], subject=f"n{i}", body="b") for i in range(4)]
    poller_burst(fast_lease)
    worker = subprocess.Popen(
        worker_command(), env=fast_lease, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(sendgrid.requests) >= 2, timeout=30, interval=0.02)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    sendgrid.delay_seconds = 0
    time.sleep(3.5)  # the lease expires
    poller_burst(fast_lease)
    worker_burst(fast_lease, simple=True)

    assert statuses(db) == {"sent": 4}
    requests = collections.Counter(
        r.body["personalizations"][0]["custom_args"]["job_id"] for r in sendgrid.requests
    )
    assert set(requests) == set(job_ids)
    unknown = {
        jid for jid in job_ids if any(log["status"] == "unknown" for log in seed.logs(db, jid))
    }
    # Only a job in hand at the kill may be sent twice, and it is marked as such in the log.
    assert all(requests[jid] == 1 for jid in set(job_ids) - unknown)
    assert len(unknown) <= 1 and all(requests[jid] <= 2 for jid in unknown)


def test_flushed_redis_loses_nothing(
    db: psycopg.Connection[Any], env: dict[str, str], sendgrid: SendGridLoopback, redis: Redis
) -> None:
    fast_lease = env | {"NOTIFIER_LEASE_SECONDS": "2", "NOTIFIER_PROVIDER_TIMEOUT": "0.5"}
    ids = seed.add_recipient(db)
    job_ids = [enqueue(db, ids["recipient"], subject=f"n{i}", body="b") for i in range(5)]
    poller_burst(fast_lease)
    assert statuses(db) == {"queued": 5}
    redis.flushall()
    time.sleep(2.2)
    poller_burst(fast_lease)
    worker_burst(fast_lease)
    assert statuses(db) == {"sent": 5}
    assert sorted(
        r.body["personalizations"][0]["custom_args"]["job_id"] for r in sendgrid.requests
    ) == sorted(job_ids)


def test_poller_wakes_on_notify_within_a_second(
    db: psycopg.Connection[Any], env: dict[str, str], redis: Redis
) -> None:
    slow_poll = env | {"NOTIFIER_POLL_INTERVAL": "30"}
    ids = seed.add_recipient(db)
    poller = subprocess.Popen(
        poller_command(), env=slow_poll, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1.5)  # started, listening, idle
        started = time.monotonic()
        job_id = enqueue(db, ids["recipient"])
        wait_for(lambda: seed.job(db, job_id)["status"] == "queued", timeout=5, interval=0.01)
        assert time.monotonic() - started < 1.0
    finally:
        poller.send_signal(signal.SIGTERM)
        assert poller.wait(timeout=10) == 0
