"""Each delivery outcome, in-process against real Postgres, real Redis (breaker state) and the
spec-checking loopback providers: retries, permanent failures, the breaker, fencing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from redis import Redis

from notifier.pipeline.breaker import ProviderBreaker
from notifier.pipeline.delivery import Deliverer, DeliveryPolicy
from notifier.pipeline.render import Renderer, default_template_dir
from notifier.providers.sendgrid import SendGridProvider
from notifier.providers.twilio import TwilioProvider
from notifier.store import Claim, JobStore
from tests.integration import seed
from tests.integration.conftest import STORE_BACKENDS, job_store_on
from tests.support.loopback import SendGridLoopback, TwilioLoopback, sendgrid_error, twilio_error

FAIL_MAX = 3
RESET_TIMEOUT = 2
POLICY = DeliveryPolicy(
    lease_seconds=30, backoff_base_seconds=0.01, backoff_cap_seconds=0.05, send_concurrency=4
)


class Clock:
    """The breaker's clock: the wall clock plus however far a test has moved it on."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, database_url: str) -> Iterator[JobStore]:
    """Every delivery behaviour on both backends: psycopg and the Supabase REST API."""
    yield from job_store_on(request.param, database_url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(redis: Redis, clock: Clock) -> ProviderBreaker:
    return ProviderBreaker(
        "sendgrid", redis, fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT, clock=clock
    )


@pytest.fixture
def deliverer(store: JobStore, sendgrid: SendGridLoopback, breaker: ProviderBreaker) -> Deliverer:
    provider = SendGridProvider("SG.key", "from@example.com", base_url=sendgrid.base_url, timeout=2)
    return Deliverer(
        store, {"email": provider}, {"sendgrid": breaker}, Renderer(default_template_dir()), POLICY
    )


@pytest.fixture
def sms_deliverer(store: JobStore, twilio: TwilioLoopback) -> Deliverer:
    provider = TwilioProvider(
        "AC" + "0123456789abcdef" * 2,
        "loopback-auth-token",
        from_number="+15557654321",
        base_url=twilio.base_url,
        timeout=2,
    )
    return Deliverer(store, {"sms": provider}, {}, Renderer(default_template_dir()), POLICY)


def enqueue(
    db: psycopg.Connection[Any],
    recipient: str,
    n: int = 1,
    max_retries: int = 3,
    method: str = "email",
) -> list[str]:
    rows = db.execute(
        "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', %s, "
        "jsonb_build_object('subject', 'S' || i, 'body', 'B'), 0) as id from generate_series(1, %s) i",
        (recipient, method, n),
    ).fetchall()
    ids = [str(r["id"]) for r in rows]
    db.execute(
        "update notification_jobs set max_retries = %s where id = any(%s::uuid[])",
        (max_retries, ids),
    )
    return ids


def deliver_due(store: JobStore, deliverer: Deliverer) -> dict[str, int]:
    time.sleep(0.06)  # past the test backoff
    return deliverer.deliver_batch(store.claim(100, 30))


def test_transient_error_then_success(
    db: psycopg.Connection[Any], store: JobStore, deliverer: Deliverer, sendgrid: SendGridLoopback
) -> None:
    [job_id] = enqueue(db, seed.add_recipient(db)["recipient"])
    sendgrid.respond_with(503, sendgrid_error("try later"), headers={"Retry-After": "0"})
    assert deliver_due(store, deliverer) == {"retried": 1}
    job = seed.job(db, job_id)
    assert job["status"] == "pending" and job["retry_count"] == 1
    assert "503" in job["failure_reason"]
    assert deliver_due(store, deliverer) == {"sent": 1}
    assert [(log["status"], log["attempt"]) for log in seed.logs(db, job_id)] == [
        ("failed", 1),
        ("delivered", 2),
    ]
    assert sendgrid.spec_violations == []


def test_transient_errors_until_max_retries_fail_the_job(
    db: psycopg.Connection[Any],
    store: JobStore,
    deliverer: Deliverer,
    sendgrid: SendGridLoopback,
    breaker: ProviderBreaker,
) -> None:
    [job_id] = enqueue(db, seed.add_recipient(db)["recipient"], max_retries=1)
    sendgrid.respond_with(500, sendgrid_error("boom"))
    sendgrid.respond_with(500, sendgrid_error("boom"))
    assert deliver_due(store, deliverer) == {"retried": 1}
    assert deliver_due(store, deliverer) == {"failed": 1}
    job = seed.job(db, job_id)
    assert job["status"] == "failed" and job["failure_reason"].startswith(
        "gave up after 2 attempts"
    )
    assert len(seed.logs(db, job_id)) == 2


def test_permanent_error_fails_at_once_without_touching_the_breaker(
    db: psycopg.Connection[Any],
    store: JobStore,
    deliverer: Deliverer,
    sendgrid: SendGridLoopback,
    breaker: ProviderBreaker,
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    sendgrid.respond_with(503)
    sendgrid.respond_with(503)
    enqueue(db, recipient, n=1)
    deliver_due(store, deliverer)
    deliver_due(store, deliverer)
    assert breaker.fail_counter == 2
    [bad] = enqueue(db, recipient, n=1)
    db.execute(
        "select cancel_notification_job(id) from notification_jobs where id <> %s and status = 'pending'",
        (bad,),
    )
    sendgrid.respond_with(
        400,
        sendgrid_error("The to email does not contain a valid address.", "personalizations.0.to"),
    )
    assert deliver_due(store, deliverer) == {"failed": 1}
    job = seed.job(db, bad)
    assert job["status"] == "failed" and "valid address" in job["failure_reason"]
    assert seed.logs(db, bad)[0]["error_code"] == "400"
    assert breaker.fail_counter == 2, "a permanent error neither trips nor resets the breaker"


def test_breaker_opens_defers_without_requests_and_closes_after_recovery(
    db: psycopg.Connection[Any],
    store: JobStore,
    deliverer: Deliverer,
    sendgrid: SendGridLoopback,
    breaker: ProviderBreaker,
    clock: Clock,
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    for _ in range(FAIL_MAX):
        sendgrid.respond_with(503)
    enqueue(db, recipient, n=FAIL_MAX)
    assert deliver_due(store, deliverer) == {"retried": FAIL_MAX}
    assert breaker.state == "open"
    requests_when_opened = len(sendgrid.requests)

    late = enqueue(db, recipient, n=2)
    outcome = deliver_due(store, deliverer)
    assert outcome == {"deferred": FAIL_MAX + 2}
    assert len(sendgrid.requests) == requests_when_opened, "no request while open"
    deferred = seed.job(db, late[0])
    assert deferred["status"] == "pending" and deferred["retry_count"] == 0, "no attempt used"
    assert deferred["scheduled_for"] > db.execute("select now() as t").fetchone()["t"]  # type: ignore[index]

    clock.advance(RESET_TIMEOUT + 1.2)  # opened_at is whole seconds: one more than the timeout
    db.execute("update notification_jobs set scheduled_for = now() where status = 'pending'")
    first = deliverer.deliver_batch(store.claim(100, 30))
    # One trial request for the whole cluster; the others wait for its verdict.
    assert (
        first.get("sent", 0) >= 1
        and first.get("sent", 0) + first.get("deferred", 0) == FAIL_MAX + 2
    )
    assert breaker.state == "closed"
    db.execute("update notification_jobs set scheduled_for = now() where status = 'pending'")
    second = deliverer.deliver_batch(store.claim(100, 30))
    assert second.get("sent", 0) == first.get("deferred", 0)
    assert {row["status"] for row in db.execute("select status from notification_jobs")} == {"sent"}


def test_stale_token_is_not_sent(
    db: psycopg.Connection[Any], store: JobStore, deliverer: Deliverer, sendgrid: SendGridLoopback
) -> None:
    [job_id] = enqueue(db, seed.add_recipient(db)["recipient"])
    [claim] = store.claim(10, 30)
    stale = Claim(job_id=claim.job_id, lease_token="00000000-0000-0000-0000-000000000000")
    assert deliverer.deliver_batch([stale]) == {"stale": 1}
    assert deliverer.deliver_batch([claim]) == {"sent": 1}
    assert deliverer.deliver_batch([claim]) == {"stale": 1}, "a duplicate RQ job is dropped"
    assert len(sendgrid.requests) == 1
    assert seed.job(db, job_id)["status"] == "sent"


def test_recipient_without_email_fails_with_a_readable_reason(
    db: psycopg.Connection[Any], store: JobStore, deliverer: Deliverer, sendgrid: SendGridLoopback
) -> None:
    [job_id] = enqueue(db, seed.add_recipient(db, email=None)["recipient"])
    assert deliver_due(store, deliverer) == {"failed": 1}
    job = seed.job(db, job_id)
    assert job["failure_reason"] == "recipient has no email address"
    assert seed.logs(db, job_id)[0]["status"] == "bounced"
    assert sendgrid.requests == []


@pytest.mark.parametrize(
    ("code", "log_status"), [(21610, "blocked"), (21211, "bounced"), (30007, "failed")]
)
def test_twilio_rejections_are_logged_as_twilio_classifies_them(
    db: psycopg.Connection[Any],
    store: JobStore,
    sms_deliverer: Deliverer,
    twilio: TwilioLoopback,
    code: int,
    log_status: str,
) -> None:
    [job_id] = enqueue(db, seed.add_recipient(db)["recipient"], method="sms")
    twilio.respond_with(400, twilio_error(code, "rejected"))
    assert deliver_due(store, sms_deliverer) == {"failed": 1}
    [log] = seed.logs(db, job_id)
    assert (log["status"], log["error_code"]) == (log_status, str(code))
    assert seed.job(db, job_id)["status"] == "failed"
    assert twilio.spec_violations == []


def test_recipient_with_a_truncated_phone_number_bounces_without_a_request(
    db: psycopg.Connection[Any], store: JobStore, sms_deliverer: Deliverer, twilio: TwilioLoopback
) -> None:
    [job_id] = enqueue(db, seed.add_recipient(db, phone="+12345")["recipient"], method="sms")
    assert deliver_due(store, sms_deliverer) == {"failed": 1}
    assert seed.job(db, job_id)["failure_reason"].startswith("recipient has no phone number")
    assert seed.logs(db, job_id)[0]["status"] == "bounced"
    assert twilio.requests == []


def test_missing_template_variable_fails_naming_it(
    db: psycopg.Connection[Any], store: JobStore, deliverer: Deliverer
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    no_body = ''''{"subject": "no body"}'::jsonb'''
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        db.execute(
            "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', 'email', "
            f"{no_body}, 0)",
            (recipient,),
        )
    # A job from before enqueue refused this (or written by an older app) still fails the same.
    [job_id] = enqueue(db, recipient)
    db.execute(f"update notification_jobs set content = {no_body} where id = %s", (job_id,))
    assert deliver_due(store, deliverer) == {"failed": 1}
    reason = seed.job(db, job_id)["failure_reason"]
    assert reason == "template email/immediate.html needs 'content.body', which the job does not have"
    assert refused.value.diag.message_primary == reason


def test_connection_dropped_after_sending_is_an_unknown_outcome(
    db: psycopg.Connection[Any], store: JobStore, deliverer: Deliverer, sendgrid: SendGridLoopback
) -> None:
    [job_id] = enqueue(db, seed.add_recipient(db)["recipient"])
    sendgrid.drop_connection()
    assert deliver_due(store, deliverer) == {"unknown_outcome": 1}
    job = seed.job(db, job_id)
    assert job["status"] == "pending" and job["metadata"]["unknown_outcome"] is True
    assert [log["status"] for log in seed.logs(db, job_id)] == ["unknown"]


class CompleteAlwaysFails(JobStore):
    """A store whose database fails exactly when a success is being recorded."""

    def complete_many(self, *args: Any, **kwargs: Any) -> dict[str, bool]:
        self.attempts = getattr(self, "attempts", 0) + 1
        raise psycopg.OperationalError("server closed the connection unexpectedly")


def test_a_success_that_cannot_be_recorded_is_never_resent(
    db: psycopg.Connection[Any],
    database_url: str,
    deliverer: Deliverer,
    sendgrid: SendGridLoopback,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notifier.pipeline import recorder
    from notifier.store.postgres import PostgresCaller

    monkeypatch.setattr(recorder, "RECORD_RETRY_PAUSES", (0.0, 0.0))
    failing = CompleteAlwaysFails(PostgresCaller(database_url, max_size=2))
    deliverer._store = failing
    deliverer._recorder = recorder.SuccessRecorder(failing)
    [job_id] = enqueue(db, seed.add_recipient(db)["recipient"])
    [claim] = failing.claim(10, 2)
    with pytest.raises(psycopg.OperationalError):
        deliverer.deliver_batch([claim])
    assert len(sendgrid.requests) == 1
    assert seed.job(db, job_id)["status"] == "processing", "left for the reaper, not retried"
    assert seed.logs(db, job_id) == []
    assert failing.attempts == 3, "tried once per pause, then once more"
    failing.close()


def test_a_batch_started_together_drops_only_its_stale_claims(
    db: psycopg.Connection[Any], store: JobStore, deliverer: Deliverer, sendgrid: SendGridLoopback
) -> None:
    # Three claims fit in the four send threads: their attempts start in one call.
    enqueue(db, seed.add_recipient(db)["recipient"], n=2)
    first, second = store.claim(10, 30)
    stale = Claim(job_id=first.job_id, lease_token="00000000-0000-0000-0000-000000000000")

    assert deliverer.deliver_batch([first, stale, second]) == {"sent": 2, "stale": 1}
    assert deliverer.deliver_batch([first, second]) == {"stale": 2}, "a duplicate is dropped"
    assert len(sendgrid.requests) == 2
