"""`notifier web` against real Redis and Postgres, and with each one stopped or hanging: the
status, the HTTP code, the reasons, the metrics, an answer within a second, no secret shown."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from redis import Redis

from notifier.devstack.servers import LocalRedis
from notifier.errors import TransientDeliveryError
from notifier.operations.probes import database_task
from notifier.pipeline.breaker import ProviderBreaker
from notifier.pipeline.queues import enqueue_claims
from notifier.store import Claim
from notifier.store.session import bounded, connect
from tests.integration import seed
from tests.integration.ops_support import (
    get,
    insert_jobs,
    make_settings,
    parse_metrics,
    registered_worker,
    running_web,
    sample,
)
from tests.support.hanging import HangingServer
from tests.support.loopback import unused_base_url

ONE_SECOND = 1.0


@pytest.fixture
def worker(redis: Redis) -> Iterator[None]:
    with registered_worker(redis, "live-worker"):
        yield


def hanging_url(scheme: str, port: int) -> str:
    return f"{scheme}://127.0.0.1:{port}/{'0' if scheme == 'redis' else 'app'}"


def test_all_well_is_healthy(database_url: str, redis_url: str, worker: None) -> None:
    with running_web(make_settings(database_url, redis_url)) as web:
        health = get(web, "/health")
        detail = get(web, "/health/redis")
    assert health.status == 200, health.text
    assert health.json()["status"] == "healthy" and health.json()["checks"] == []
    assert health.json()["redis"] | {"latencyMs": 0} == {
        "configured": True, "connected": True, "circuitBreaker": "closed",
        "endpoint": redis_url.removeprefix("redis://"), "latencyMs": 0,
    }  # fmt: skip
    assert health.json()["database"]["connected"] is True
    assert detail.status == 200, detail.text
    body = detail.json()
    for field in ("status", "redis_configured", "redis_connected", "circuit_breaker",
                  "queue_metrics", "warnings", "timestamp"):  # fmt: skip
        assert field in body, field
    assert body["status"] == "healthy" and body["warnings"] == []
    assert body["redis_connected"] is True and body["circuit_breaker"] == "closed"
    assert set(body["queue_metrics"]["queues"]) == {
        "notifier-urgent", "notifier-normal", "notifier-low"
    }  # fmt: skip
    assert body["redis"]["latency_ms"] >= 0 and body["redis"]["memory_used_bytes"] > 0
    [live] = body["workers"]["workers"]
    assert body["workers"]["count"] == 1
    assert live["name"] == "live-worker" and live["state"] == "idle"
    assert live["heartbeat_age_seconds"] < 60 and live["last_heartbeat"]
    assert body["backlog"] == {
        "database_connected": True, "pending_due_now": 0, "oldest_due_seconds": None,
        "queued": 0, "processing": 0, "failed_last_24h": 0, "paused": False,
        "paused_at": None, "paused_by": None, "paused_reason": None,
    }  # fmt: skip


def test_every_degraded_reason_is_a_sentence(
    db: psycopg.Connection[Any], database_url: str, redis_url: str, redis: Redis
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    insert_jobs(db, recipient, 2)
    insert_jobs(db, recipient, 1, scheduled_ago_seconds=600)
    insert_jobs(db, recipient, 2, status="failed", failure_reason="bad", processed_ago_seconds=60)
    db.execute("select set_notifier_paused(true, 'alice@ops', 'deploy 1.4')")
    breaker = ProviderBreaker("sendgrid", redis, fail_max=1, reset_timeout=60)
    with pytest.raises(TransientDeliveryError):
        breaker.guard(lambda: (_ for _ in ()).throw(TransientDeliveryError("503")))
    settings = make_settings(
        database_url, redis_url,
        health_max_backlog=2, health_max_failed_24h=1, health_max_due_age_seconds=300,
        health_worker_stale_seconds=120,
    )  # fmt: skip
    with registered_worker(redis, "stale-worker", heartbeat_age=600), running_web(settings) as web:
        health = get(web, "/health")
        detail = get(web, "/health/redis")
    assert health.status == 200 and health.json()["status"] == "degraded"
    checks = health.json()["checks"]
    assert health.json()["redis"]["circuitBreaker"] == "open"
    expected = [
        "The sendgrid circuit breaker is open after 1 failures",
        "No RQ worker has sent a heartbeat in the last 120 s (the freshest was 600 s ago)",
        "Claiming is paused since",
        "by alice@ops (deploy 1.4)",
        "3 jobs are due and waiting, over the limit of 2.",
        "The oldest due job has waited 600 s, over the limit of 300 s.",
        "2 jobs failed in the last 24 h, over the limit of 1.",
    ]
    for fragment in expected:
        assert any(fragment in check for check in checks), (fragment, checks)
    assert len(checks) == 6
    assert detail.status == 503 and detail.json()["status"] == "degraded"
    assert detail.json()["warnings"] == checks
    assert detail.json()["breakers"]["sendgrid"]["state"] == "open"
    assert detail.json()["breakers"]["sendgrid"]["failure_count"] == 1
    assert detail.json()["breakers"]["sendgrid"]["next_retry"] > detail.json()["breakers"][
        "sendgrid"]["opened_at"]  # fmt: skip
    assert detail.json()["backlog"]["paused"] is True


def test_default_thresholds_are_a_thousand_due_and_a_hundred_failed(
    db: psycopg.Connection[Any], database_url: str, redis_url: str, worker: None
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    insert_jobs(db, recipient, 1000)
    insert_jobs(db, recipient, 100, status="failed", processed_ago_seconds=10)
    settings = make_settings(database_url, redis_url)
    with running_web(settings) as web:
        assert get(web, "/health").json()["status"] == "healthy"
        insert_jobs(db, recipient, 1)
        insert_jobs(db, recipient, 1, status="failed", processed_ago_seconds=10)
        checks = get(web, "/health").json()["checks"]
    assert checks == [
        "1,001 jobs are due and waiting, over the limit of 1,000.",
        "101 jobs failed in the last 24 h, over the limit of 100.",
    ]


def test_stopped_redis_is_unhealthy_within_a_second(database_url: str) -> None:
    extra = LocalRedis().start()
    try:
        with running_web(make_settings(database_url, extra.url)) as web:
            assert get(web, "/health").json()["redis"]["connected"] is True
            extra.stop()
            health = get(web, "/health")
            detail = get(web, "/health/redis")
            metrics = get(web, "/metrics")
    finally:
        extra.stop()
    assert health.status == 503 and health.json()["status"] == "unhealthy"
    assert health.json()["redis"]["connected"] is False
    assert health.json()["database"]["connected"] is True
    assert "Redis at 127.0.0.1:" in health.json()["checks"][0]
    assert detail.status == 503 and detail.json()["status"] == "unavailable"
    assert detail.json()["redis_connected"] is False and detail.json()["redis_configured"]
    assert sample(parse_metrics(metrics.text), "notifier_up", component="redis") == 0
    assert sample(parse_metrics(metrics.text), "notifier_up", component="postgres") == 1
    assert max(health.seconds, detail.seconds, metrics.seconds) < ONE_SECOND


def test_hanging_redis_answers_within_a_second(database_url: str) -> None:
    with (
        HangingServer() as peer,
        running_web(make_settings(database_url, hanging_url("redis", peer.port))) as web,
    ):
        answers = {path: get(web, path) for path in ("/health", "/health/redis", "/metrics")}
        assert peer.accepted >= 1
    for path, answer in answers.items():
        assert answer.seconds < ONE_SECOND, (path, answer.seconds)
    assert answers["/health"].status == 503
    assert answers["/health"].json()["status"] == "unhealthy"
    assert "no answer within 0.8 s" in answers["/health"].json()["checks"][0]
    assert answers["/health/redis"].status == 503
    assert answers["/health/redis"].json()["status"] == "unavailable"
    assert answers["/metrics"].status == 200
    assert sample(parse_metrics(answers["/metrics"].text), "notifier_up", component="redis") == 0


def test_hanging_postgres_answers_within_a_second(redis_url: str, worker: None) -> None:
    with (
        HangingServer() as peer,
        running_web(make_settings(hanging_url("postgresql", peer.port), redis_url)) as web,
    ):
        answers = {path: get(web, path) for path in ("/health", "/health/redis", "/metrics")}
    for path, answer in answers.items():
        assert answer.seconds < ONE_SECOND, (path, answer.seconds)
    health = answers["/health"].json()
    assert answers["/health"].status == 503 and health["status"] == "unhealthy"
    assert health["database"]["connected"] is False and health["redis"]["connected"] is True
    assert health["checks"] == [
        f"PostgreSQL at 127.0.0.1:{peer.port}/app is unreachable: no answer within 0.8 s."
    ]
    detail = answers["/health/redis"].json()
    assert answers["/health/redis"].status == 503 and detail["status"] == "degraded"
    assert detail["backlog"]["database_connected"] is False
    samples = parse_metrics(answers["/metrics"].text)
    assert sample(samples, "notifier_up", component="postgres") == 0
    assert sample(samples, "notifier_up", component="redis") == 1
    assert sample(samples, "notifier_workers_registered") == 1


def test_many_clients_with_postgres_hanging_still_see_redis_healthy(
    redis_url: str, worker: None
) -> None:
    settings = make_settings(None, redis_url, health_cache_seconds=1.0)
    with HangingServer() as peer, running_web(
        settings.model_copy(update={"database_url": SecretStr(hanging_url("postgresql", peer.port)),
                                    "web_threads": 16})
    ) as web:  # fmt: skip
        answers: list[Any] = []
        for _round in range(3):  # each hung probe holds its thread >= 2 s (libpq's minimum)
            with ThreadPoolExecutor(12) as clients:
                answers += clients.map(lambda _i: get(web, "/health"), range(12))
        accepted = peer.accepted
    assert max(a.seconds for a in answers) < ONE_SECOND
    assert {a.json()["redis"]["connected"] for a in answers} == {True}
    assert {a.json()["database"]["connected"] for a in answers} == {False}
    assert accepted <= 2  # one probe in flight at a time, not one per request


def test_database_probes_send_no_startup_options_and_still_time_out(database_url: str) -> None:
    with connect(database_url, connect_timeout=2, application_name="notifier-test") as conn:
        assert conn.info.options == ""  # PgBouncer and Supavisor refuse `options`
        with pytest.raises(psycopg.errors.QueryCanceled), bounded(conn, 0.2):
            conn.execute("select pg_sleep(5)")
        row = conn.execute("show statement_timeout").fetchone()
        assert row is not None and row["statement_timeout"] == "0"  # local to the transaction
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("create function test_sleep(p_seconds float8) returns void language sql "
                      "as 'select pg_sleep(p_seconds)'")  # fmt: skip
    settings = make_settings(database_url, None, health_timeout=0.3)
    task = database_task(settings, lambda caller: caller.call("test_sleep", {"p_seconds": 5}),
                         "notifier-test-sleep")  # fmt: skip
    assert task is not None
    with pytest.raises(psycopg.errors.QueryCanceled):
        task.run()


def test_held_digest_items_are_counted(
    db: psycopg.Connection[Any], database_url: str, redis_url: str
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    insert_jobs(db, recipient, 2, status="held")
    db.execute("update notification_jobs set created_at = now() - interval '1 hour'"
               " where status = 'held'")  # fmt: skip
    with running_web(make_settings(database_url, redis_url)) as web:
        samples = parse_metrics(get(web, "/metrics").text)
    assert sample(samples, "notifier_jobs", status="held", method="email") == 2
    assert (sample(samples, "notifier_held_oldest_seconds") or 0) >= 3600
    assert sample(samples, "notifier_jobs_finished_24h", status="digested", method="sms") == 0


def test_postgres_with_nothing_listening_is_unhealthy(redis_url: str) -> None:
    address = unused_base_url().replace("http", "postgresql") + "/app"
    with running_web(make_settings(address, redis_url)) as web:
        health = get(web, "/health")
    assert health.status == 503 and health.json()["database"]["connected"] is False
    assert "Connection refused" in health.json()["checks"][0] or "refused" in health.text
    assert health.seconds < ONE_SECOND


def test_unconfigured_servers_are_named(database_url: str) -> None:
    with running_web(make_settings(database_url, None)) as web:
        health = get(web, "/health")
        detail = get(web, "/health/redis")
    assert health.status == 503 and health.json()["redis"]["configured"] is False
    assert health.json()["checks"] == ["REDIS_URL is not set, so Redis cannot be checked."]
    assert detail.json()["status"] == "unavailable" and detail.json()["redis_configured"] is False


def test_metrics_are_derived_from_postgres_and_redis(
    db: psycopg.Connection[Any], database_url: str, redis_url: str, redis: Redis, worker: None
) -> None:
    ids = seed.add_recipient(db)
    recipient = ids["recipient"]
    insert_jobs(db, recipient, 2)
    insert_jobs(db, recipient, 1, method="sms", scheduled_ago_seconds=90)
    insert_jobs(db, recipient, 3, status="queued")
    insert_jobs(db, recipient, 1, status="failed", processed_ago_seconds=60)
    insert_jobs(db, recipient, 1, status="failed", processed_ago_seconds=3 * 86400)
    insert_jobs(db, recipient, 1, status="pending", scheduled_ago_seconds=-3600)  # not due yet
    # Three deliveries by SendGrid within the window: provider time 100 ms, 300 ms, 2 s and
    # scheduled → accepted 0.5 s, 4 s, 40 s; a retry; one Twilio failure; one row too old.
    deliveries = [
        ("sendgrid", "delivered", 100, 0.5, 1, 60),
        ("sendgrid", "delivered", 300, 4.0, 1, 60),
        ("sendgrid", "delivered", 2000, 40.0, 2, 60),
        ("twilio", "failed", 1500, 1.0, 1, 60),
        ("sendgrid", "delivered", 100, 1.0, 1, 7200),
    ]
    for provider, status, duration_ms, latency, attempt, age in deliveries:
        [job_id] = insert_jobs(db, recipient, 1, status="sent", processed_ago_seconds=age)
        db.execute(
            "update notification_jobs set scheduled_for = now() - make_interval(secs => %s)"
            " where id = %s",
            (age + latency, job_id),
        )
        db.execute(
            "insert into notification_delivery_logs (job_id, recipient_id, delivery_method, status,"
            " provider, delivery_duration_ms, attempt, delivery_time)"
            " select id, recipient_id, 'email', %s, %s, %s, %s,"
            " scheduled_for + make_interval(secs => %s) from notification_jobs where id = %s",
            (status, provider, duration_ms, attempt, latency, job_id),
        )
    enqueue_claims(redis, [Claim("a", "t"), Claim("b", "t", urgency_level="urgent")], 25, 60)
    with running_web(make_settings(database_url, redis_url, email_provider="console")) as web:
        answer = get(web, "/metrics")
        openmetrics = get(web, "/metrics", accept="application/openmetrics-text")
    assert answer.status == 200 and answer.seconds < ONE_SECOND
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert "# TYPE notifier_delivery_latency_seconds gaugehistogram" in openmetrics.text
    m = parse_metrics(answer.text)
    assert sample(m, "notifier_jobs", status="pending", method="email") == 3
    assert sample(m, "notifier_jobs", status="pending", method="sms") == 1
    assert sample(m, "notifier_jobs", status="queued", method="email") == 3
    assert sample(m, "notifier_jobs", status="processing", method="push") == 0
    assert sample(m, "notifier_jobs_finished_24h", status="failed", method="email") == 1
    assert sample(m, "notifier_jobs_finished_24h", status="sent", method="email") == 5
    assert sample(m, "notifier_backlog_due", method="email") == 2
    assert sample(m, "notifier_backlog_due", method="sms") == 1
    assert 90 <= (sample(m, "notifier_backlog_oldest_due_seconds") or 0) < 120
    assert sample(m, "notifier_queue_depth", queue="notifier-normal") == 1
    assert sample(m, "notifier_queue_depth", queue="notifier-urgent") == 1
    assert sample(m, "notifier_workers", state="idle") == 1
    assert sample(m, "notifier_paused") == 0
    delivered = {"provider": "sendgrid", "method": "email", "outcome": "delivered"}
    assert sample(m, "notifier_deliveries", **delivered) == 3
    assert (
        sample(m, "notifier_deliveries", provider="twilio", method="email", outcome="failed") == 1
    )
    assert sample(m, "notifier_delivery_retries", provider="sendgrid") == 1
    duration = "notifier_provider_request_duration_seconds_bucket"
    assert [sample(m, duration, provider="sendgrid", le=le) for le in
            ("0.05", "0.1", "0.25", "0.5", "2.5", "+Inf")] == [0, 1, 1, 2, 3, 3]  # fmt: skip
    assert sample(m, "notifier_provider_request_duration_seconds_gcount", provider="sendgrid") == 3
    assert sample(m, "notifier_provider_request_duration_seconds_gsum", provider="sendgrid") == 2.4
    assert sample(m, duration, provider="twilio", le="2.5") == 1
    latency = "notifier_delivery_latency_seconds_bucket"
    assert [sample(m, latency, provider="sendgrid", le=le) for le in
            ("0.5", "1", "5", "30", "60", "+Inf")] == [1, 1, 2, 2, 3, 3]  # fmt: skip
    assert sample(m, latency, provider="twilio", le="+Inf") is None  # failures have no latency
    assert sample(m, "notifier_up", component="postgres") == 1
    assert "for deliveries in the last 1 h" in answer.text


def test_breaker_states_in_metrics(database_url: str, redis_url: str, redis: Redis) -> None:
    breaker = ProviderBreaker("twilio", redis, fail_max=2, reset_timeout=60)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(lambda: (_ for _ in ()).throw(TransientDeliveryError("timeout")))
    settings = make_settings(database_url, redis_url)
    with running_web(settings) as web:
        m = parse_metrics(get(web, "/metrics").text)
        opened = int(redis.get("notifier:breaker:twilio:pybreaker:opened_at") or 0)
        redis.set("notifier:breaker:twilio:pybreaker:opened_at", opened - 120)  # reset timeout past
        later = get(web, "/health/redis").json()
    assert sample(m, "notifier_circuit_breaker_state", provider="twilio", state="open") == 1
    assert sample(m, "notifier_circuit_breaker_state", provider="twilio", state="closed") == 0
    assert sample(m, "notifier_circuit_breaker_failures", provider="twilio") == 2
    assert later["breakers"]["twilio"]["state"] == "half-open"  # the next request is a trial
    assert later["circuit_breaker"] == "half-open"


def test_no_secret_in_any_answer(db: psycopg.Connection[Any], database_url: str) -> None:
    password = "r3dis-Pa55word-x9"
    extra = LocalRedis().start()
    try:
        Redis.from_url(extra.url).config_set("requirepass", password)
        redis_url = extra.url.replace("redis://", f"redis://:{password}@")
        pg_password = "pg-S3cret-pw-77"
        secret_db_url = database_url.replace("postgres@", f"postgres:{pg_password}@")
        secrets = {
            password, pg_password, redis_url, secret_db_url, "SG.sendgrid-key-abc123", "tw-t0ken-99"
        }  # fmt: skip
        common = {
            "email_provider": "sendgrid", "sendgrid_api_key": "SG.sendgrid-key-abc123",
            "email_from": "n@example.com", "sms_provider": "twilio",
            "twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": "tw-t0ken-99",
            "twilio_from_number": "+15005550006",
        }  # fmt: skip
        wrong = redis_url.replace(password, password + "-wrong")
        answers = []
        for redis_target in (redis_url, wrong):
            settings = make_settings(secret_db_url, redis_target, **common)
            with running_web(settings) as web:
                for path in ("/", "/health", "/health/redis", "/metrics", "/nope"):
                    answers.append(get(web, path))
    finally:
        extra.stop()
    assert answers[1].json()["redis"]["connected"] is True  # the password works
    assert answers[6].json()["redis"]["connected"] is False  # and a wrong one is reported
    for answer in answers:
        for secret in secrets | {password + "-wrong"}:
            assert secret not in answer.text
            assert secret not in json.dumps(answer.headers)


def test_web_command_stops_gracefully_mid_request(base_env: dict[str, str], tmp_path: Any) -> None:
    with HangingServer() as peer:
        port = int(unused_base_url().rsplit(":", 1)[1])
        env = base_env | {
            "PORT": str(port), "NOTIFIER_WEB_HOST": "127.0.0.1",
            "REDIS_URL": f"redis://:hidden-pass-123@127.0.0.1:{peer.port}/0",
            "SENDGRID_API_KEY": "SG.never-shown-456", "EMAIL_FROM": "n@example.com",
        }  # fmt: skip
        web = subprocess.Popen(
            ["notifier", "web"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    get(f"http://127.0.0.1:{port}", "/", timeout=1)
                    break
                except OSError:
                    assert time.monotonic() < deadline, web.stderr.read() if web.poll() else ""
                    time.sleep(0.05)
            results: list[Any] = []
            slow = threading.Thread(
                target=lambda: results.append(get(f"http://127.0.0.1:{port}", "/health"))
            )
            slow.start()
            time.sleep(0.3)  # the request waits on the hanging Redis
            web.send_signal(signal.SIGTERM)
            slow.join(timeout=5)
            code = web.wait(timeout=10)
        finally:
            if web.poll() is None:
                web.kill()
        stdout, stderr = web.communicate()
    assert code == 0, stderr
    [answer] = results
    assert answer.status == 503 and answer.json()["status"] == "unhealthy"
    assert "web_stopping signal=SIGTERM" in stderr and "web_stopped" in stderr
    for secret in ("hidden-pass-123", "SG.never-shown-456"):
        assert secret not in stdout + stderr
    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{port}", "/", timeout=1)


def test_health_payload_timestamps_are_utc(database_url: str, redis_url: str) -> None:
    with running_web(make_settings(database_url, redis_url)) as web:
        body = get(web, "/health").json()
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.tzinfo is not None
    assert abs(stamp - datetime.now(UTC)) < timedelta(seconds=5)
