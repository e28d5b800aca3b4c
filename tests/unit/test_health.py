"""Judging health from what the probes saw (no servers): unhealthy, degraded, healthy, the HTTP
codes, and a breaker's effective state."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from notifier.config import load_settings
from notifier.operations.health import Observation, Probe, health_body, redis_health_body
from notifier.operations.probes import ProbeTask, run_probes
from notifier.operations.redis_state import QueueCounts, RedisState, WorkerInfo, _breaker
from notifier.store.snapshot import Backlog

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = load_settings(email_provider="console", sms_provider="console")


def backlog(**changes: object) -> Backlog:
    values: dict[str, object] = {
        "due_now": 0, "oldest_due_seconds": None, "queued": 0, "processing": 0,
        "failed_24h": 0, "paused": False, "paused_at": None, "paused_by": None,
        "paused_reason": None,
    }  # fmt: skip
    values.update(changes)
    return Backlog(**values)  # type: ignore[arg-type]


def redis_state(heartbeat_age: float | None = 5.0) -> RedisState:
    workers = []
    if heartbeat_age is not None:
        beat = NOW - timedelta(seconds=heartbeat_age)
        workers.append(WorkerInfo("w1", "idle", None, beat, "host", 1))
    return RedisState(1.0, 1000, "1K", {"notifier-normal": QueueCounts()}, workers, {})


def observe(redis: RedisState | None, database: Backlog | None) -> Observation:
    return Observation(
        redis=Probe(True, redis, None if redis else "no answer within 0.8 s"),
        database=Probe(True, database, None if database else "ConnectionRefusedError"),
        redis_endpoint="127.0.0.1:6379/0",
        database_endpoint="127.0.0.1:5432/app",
        at=NOW,
    )


def test_all_well_is_healthy_200_on_both() -> None:
    obs = observe(redis_state(), backlog())
    assert health_body(obs, SETTINGS)[0] == 200
    assert health_body(obs, SETTINGS)[1]["status"] == "healthy"
    assert redis_health_body(obs, SETTINGS)[:1] == (200,)


def test_a_server_down_is_unhealthy_503() -> None:
    code, body = health_body(observe(None, backlog()), SETTINGS)
    assert (code, body["status"]) == (503, "unhealthy")
    assert body["checks"] == ["Redis at 127.0.0.1:6379/0 is unreachable: no answer within 0.8 s."]
    code, body = redis_health_body(observe(None, backlog()), SETTINGS)
    assert (code, body["status"], body["redis_connected"]) == (503, "unavailable", False)


def test_degraded_is_200_on_health_and_503_on_health_redis() -> None:
    obs = observe(redis_state(heartbeat_age=None), backlog(due_now=1001))
    code, body = health_body(obs, SETTINGS)
    assert (code, body["status"]) == (200, "degraded")
    assert body["checks"] == [
        "No RQ worker is registered on notifier's queues: queued notifications are not being "
        "delivered.",
        "1,001 jobs are due and waiting, over the limit of 1,000.",
    ]
    code, detail = redis_health_body(obs, SETTINGS)
    assert (code, detail["status"], detail["warnings"]) == (503, "degraded", body["checks"])


def test_thresholds_are_strictly_over() -> None:
    at_limits = backlog(due_now=1000, failed_24h=100, oldest_due_seconds=300.0)
    assert health_body(observe(redis_state(480), at_limits), SETTINGS)[1]["checks"] == []
    over = backlog(due_now=1000, failed_24h=101, oldest_due_seconds=300.5)
    checks = health_body(observe(redis_state(481), over), SETTINGS)[1]["checks"]
    assert len(checks) == 3


def test_open_breaker_turns_half_open_when_its_retry_time_passes() -> None:
    opened = NOW - timedelta(seconds=30)
    stamp = str(int(opened.timestamp())).encode()
    still_open = _breaker("sendgrid", b"open", b"5", stamp, 60, NOW)
    assert still_open.state == "open" and still_open.failure_count == 5
    assert still_open.next_retry == opened + timedelta(seconds=61)
    later = _breaker("sendgrid", b"open", b"5", stamp, 60, NOW + timedelta(seconds=31))
    assert later.state == "half-open" and later.stored_state == "open"
    assert _breaker("twilio", None, None, None, 60, NOW).state == "closed"


def test_an_unmigrated_database_is_named_as_such() -> None:
    obs = Observation(
        redis=Probe(True, redis_state(), None),
        database=Probe(True, None, 'UndefinedTable: relation "notifier_control" does not exist'),
        redis_endpoint="127.0.0.1:6379/0",
        database_endpoint="127.0.0.1:5432/app",
        at=NOW,
    )
    code, body = health_body(obs, SETTINGS)
    assert code == 503
    assert body["checks"][0].startswith(
        "PostgreSQL at 127.0.0.1:5432/app answers, but its schema is not up to date (run "
        "`notifier migrate`)"
    )


def test_concurrent_probes_of_one_dependency_share_one_run() -> None:
    runs: list[int] = []
    release = threading.Event()

    def slow() -> str:
        runs.append(1)
        release.wait(5)
        return "answer"

    task = ProbeTask(("test-shared", object()), slow)
    with ThreadPoolExecutor(8) as callers:
        waiting = [callers.submit(run_probes, {"x": task}, 0.2) for _ in range(8)]
        answers = [f.result()["x"] for f in waiting]
    assert runs == [1]
    assert {a.error for a in answers} == {"no answer within 0.2 s"}
    release.set()
    assert run_probes({"x": task}, 1.0, reuse_seconds=60)["x"].value == "answer"
    assert runs == [1]  # the answer, fresh enough, is reused
    assert run_probes({"x": task}, 1.0, reuse_seconds=0)["x"].value == "answer"
    assert runs == [1, 1]


def test_a_handed_back_queue_is_not_told_to_resume_and_parked_schedules_are_named() -> None:
    paused = {"paused": True, "paused_at": NOW, "paused_by": "ops@host"}
    operator = health_body(observe(redis_state(), backlog(**paused)), SETTINGS)[1]["checks"]
    assert operator == [
        "Claiming is paused since 2026-11-24T12:00:00+00:00 by ops@host: no new jobs are handed "
        "to workers until `notifier resume`."
    ]
    handed = backlog(**paused, handed_back=True, parked_digest_schedules=2)
    checks = health_body(observe(redis_state(), handed), SETTINGS)[1]["checks"]
    assert "`notifier resume`" not in checks[0]
    assert "handed back to the original worker (`notifier handback`)" in checks[0]
    assert checks[1].startswith("2 digest schedule(s) are parked (digest_settings.last_error)")


def test_rq_jobs_failing_inside_a_worker_make_health_degraded() -> None:
    failing = RedisState(
        1.0, 1000, "1K", {"notifier-normal": QueueCounts(failed=9)}, redis_state().workers, {},
        recent_rq_failures=3,
    )  # fmt: skip
    code, body = health_body(observe(failing, backlog()), SETTINGS)
    assert (code, body["status"]) == (200, "degraded")
    assert body["checks"][0].startswith(
        "3 RQ job(s) failed inside a worker in the last 15 min: a worker may be unable to deliver"
    )
    quiet = RedisState(1.0, 1000, "1K", {"notifier-normal": QueueCounts(failed=9)}, [], {})
    assert not any("RQ job(s) failed" in c for c in health_body(observe(quiet, backlog()), SETTINGS)[1]["checks"])
