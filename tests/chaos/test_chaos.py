"""notifier's promise under combined faults: nothing lost, nothing sent twice except an attempt
whose outcome nobody could know, every failure readable.

Real PostgreSQL and Redis, two `notifier poller`s, forking and `SimpleWorker` stock `rq worker`s,
loopback SendGrid and Twilio that answer ≈10 % 5xx, 5 % 429, 2 % hang past the provider
timeout (then accept) and go down for a few seconds. Meanwhile workers are SIGKILLed (and
replaced) again and again, a poller is SIGKILLed and restarted, Redis restarts with its data
lost, and every PostgreSQL client connection is terminated once.

Size: CHAOS_JOBS jobs (default 300: the short run inside `make test`; `make chaos` runs 3000).
CHAOS_REPORT=<path> also writes the figures there as JSON (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from redis import Redis

from notifier.devstack.servers import LocalRedis
from notifier.pipeline.breaker import ProviderBreaker
from tests.chaos.checks import FINAL, check_breaker, check_guarantees, read_outcome
from tests.chaos.cluster import Cluster, Member
from tests.chaos.faults import FaultPlan, FaultRates, FaultySendGrid, FaultyTwilio

REPO = Path(__file__).resolve().parents[2]
JOBS = int(os.environ.get("CHAOS_JOBS", "300"))
PROVIDER_TIMEOUT = 1.0
LEASE_SECONDS = 4  # just above 3 x the provider timeout, the smallest notifier accepts
BREAKER_RESET = 2
OUTAGE_SECONDS = 4.0
REDIS_DOWN_SECONDS = 3.0  # longer than redis-py's default retry rides out
# The faults happen while jobs arrive: 16 s for the short run, longer for a big one.
FAULT_PHASE_SECONDS = max(16.0, JOBS / 40)
KILL_INTERVAL = 2.0 if JOBS <= 500 else 4.0  # a worker SIGKILLed (and replaced) this often
DRAIN_TIMEOUT = 120.0 + JOBS / 20
RECIPIENTS = 20
SMS_SHARE = 0.4
# pyproject's 120 s per test is for ordinary tests; this one's length follows its size.
pytestmark = pytest.mark.timeout(int(180 + FAULT_PHASE_SECONDS + DRAIN_TIMEOUT))


def chaos_env(database_url: str, redis_url: str, sendgrid: str, twilio: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("NOTIFIER_", "SENDGRID_", "TWILIO_", "RQ_"))
    }  # fmt: skip
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, LOG_FORMAT="json",
        NOTIFIER_EMAIL_PROVIDER="sendgrid", SENDGRID_API_KEY="SG.chaos-key",
        SENDGRID_API_BASE=sendgrid, EMAIL_FROM="notifications@example.com",
        NOTIFIER_SMS_PROVIDER="twilio", TWILIO_ACCOUNT_SID="AC" + "c" * 32,
        TWILIO_AUTH_TOKEN="chaos-token", TWILIO_FROM_NUMBER="+15005550006",
        TWILIO_API_BASE=twilio,
        TWILIO_STATUS_CALLBACK_URL="https://notifier.example.com/webhooks/twilio",
        NOTIFIER_PROVIDER_TIMEOUT=str(PROVIDER_TIMEOUT),
        NOTIFIER_LEASE_SECONDS=str(LEASE_SECONDS),
        NOTIFIER_BACKOFF_BASE="0.2", NOTIFIER_BACKOFF_CAP="1",
        NOTIFIER_BREAKER_FAIL_MAX="5", NOTIFIER_BREAKER_RESET_TIMEOUT=str(BREAKER_RESET),
        NOTIFIER_POLL_INTERVAL="0.2", NOTIFIER_REAPER_INTERVAL="0.5",
        NOTIFIER_RQ_JOB_SIZE="10", NOTIFIER_SEND_CONCURRENCY="4",
        # Little in Redis at a time: with a 4 s lease a deep queue only expires and re-claims.
        NOTIFIER_CLAIM_BATCH="40", NOTIFIER_MAX_IN_FLIGHT="80",
        PYTHONPATH=str(REPO),
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    )  # fmt: skip
    return env


def seed_recipients(database_url: str) -> list[tuple[str, str]]:
    """One owner's recipients with an email and a phone; returns (recipient, group) ids."""
    owner = str(uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        group = conn.execute(
            "insert into recipient_groups (parent_id, name) values (%s, 'chaos') returning id",
            (owner,),
        ).fetchone()
        assert group is not None
        ids = []
        for n in range(RECIPIENTS):
            row = conn.execute(
                "insert into recipients (parent_id, name, email, phone, timezone) "
                "values (%s, %s, %s, '+15005550006', 'UTC') returning id",
                (owner, f"R{n}", f"r{n}@example.com"),
            ).fetchone()
            assert row is not None
            ids.append((str(row[0]), str(group[0])))
        return ids


class Feeder(threading.Thread):
    """Enqueues JOBS jobs with the SQL function, evenly over `seconds`, as an app would; its
    connection is cut with everyone else's, so it reconnects (the database is the tally)."""

    def __init__(self, database_url: str, recipients: list[tuple[str, str]], seconds: float):
        super().__init__(name="feeder", daemon=True)
        self._url = database_url
        self._recipients = recipients
        self._seconds = seconds
        self.errors: list[str] = []

    def run(self) -> None:
        batch = 10
        started = time.monotonic()
        made = 0
        conn: psycopg.Connection[Any] | None = None
        while made < JOBS:
            due = started + self._seconds * made / JOBS
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url, autocommit=True)
                for i in range(made, min(JOBS, made + batch)):
                    recipient, group = self._recipients[i % len(self._recipients)]
                    sms = (i * 7919) % 100 < SMS_SHARE * 100
                    content = {"subject": f"Chaos {i}", "body": f"Message {i}"}
                    conn.execute(
                        "select enqueue_notification_job(%s, %s, null, 'immediate', 'normal',"
                        " %s, %s::jsonb, 0)",
                        (recipient, group, "sms" if sms else "email", json.dumps(content)),
                    )
                    made += 1
            except psycopg.OperationalError as error:  # terminated by the test: reconnect
                self.errors.append(str(error))
                conn = None
        if conn is not None:
            conn.close()


@dataclass
class Faults:
    worker_kills: int = 0
    poller_kills: int = 0
    redis_restarts: int = 0
    connections_terminated: int = 0
    outage_window: tuple[float, float] = (0.0, 0.0)  # wall-clock seconds


def terminate_connections(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def run_schedule(events: list[tuple[float, Callable[[], None]]]) -> None:
    """Run each action at its offset (seconds) from now, in this (the main) thread: LocalRedis
    must be restarted from the thread that started it."""
    start = time.monotonic()
    for offset, action in sorted(events, key=lambda e: e[0]):
        time.sleep(max(0.0, start + offset - time.monotonic()))
        action()


def test_chaos_nothing_lost_no_unexplained_duplicate(
    chaos_database_url: str, chaos_redis: LocalRedis, tmp_path: Path
) -> None:
    began = time.monotonic()
    plan = FaultPlan(FaultRates(), hang_seconds=PROVIDER_TIMEOUT + 0.5)
    with FaultySendGrid(plan) as sendgrid, FaultyTwilio(plan) as twilio:
        env = chaos_env(chaos_database_url, chaos_redis.url, sendgrid.base_url, twilio.base_url)
        cluster = Cluster(env, tmp_path)
        recipients = seed_recipients(chaos_database_url)
        faults = Faults()
        crashed: list[Member] = []
        try:
            for kind in ("poller", "poller", "worker", "worker", "simple-worker", "simple-worker"):
                cluster.start(kind)
            feeder = Feeder(chaos_database_url, recipients, FAULT_PHASE_SECONDS * 0.8)
            feeder.start()
            wait_until_ready(cluster, chaos_redis.url, chaos_database_url)

            def kill_worker() -> None:  # the longest-running one: likely inside an RQ job
                workers = cluster.running("worker", "simple-worker")
                if workers:
                    cluster.kill(workers[0])
                    faults.worker_kills += 1

            def kill_poller() -> None:
                cluster.kill(cluster.running("poller")[0])
                faults.poller_kills += 1

            def restart_redis() -> None:
                # Redis forgets the breakers' state: let them be seen closing first (a trial
                # that meets an injected 5xx reopens a breaker for another reset timeout).
                await_breakers_closed(cluster, faults.outage_window[1])
                chaos_redis.restart(REDIS_DOWN_SECONDS)
                faults.redis_restarts += 1

            def cut_connections() -> None:
                faults.connections_terminated += terminate_connections(chaos_database_url)

            def outage() -> None:
                plan.start_outage(OUTAGE_SECONDS)
                faults.outage_window = (time.time(), time.time() + OUTAGE_SECONDS)

            d = FAULT_PHASE_SECONDS
            kills = int(d / KILL_INTERVAL)
            events: list[tuple[float, Callable[[], None]]] = [
                (KILL_INTERVAL * k, kill_worker) for k in range(1, kills + 1)
            ]
            # The outage ends well before Redis restarts (which forgets the breaker's state),
            # so the breaker's reopening is seen too.
            events += [
                (d * 0.1, outage),
                (d * 0.45, cut_connections),
                (d * 0.7, restart_redis),
                (d * 0.85, kill_poller),
            ]
            run_schedule(events)
            feeder.join(timeout=60)
            assert not feeder.is_alive(), "the feeder did not finish"

            counts = wait_until_final(chaos_database_url, DRAIN_TIMEOUT)
            breaker_states = final_breaker_states(chaos_redis.url)
        finally:
            crashed = cluster.unplanned_exits()  # before stop(): its SIGTERMs end everything
            cluster.stop()
        wall = time.monotonic() - began
        assert sendgrid.spec_violations == [] and twilio.spec_violations == []
        jobs, logs = read_outcome(chaos_database_url)

    assert not crashed, "\n\n".join(f"{m.kind} {m.log.name} exited:\n{m.tail()}" for m in crashed)
    report = check_guarantees(jobs, logs, plan, counts)
    report.update(
        jobs=len(jobs), wall_seconds=round(wall, 1), faults_injected=dict(plan.fault_counts()),
        worker_kills=faults.worker_kills, poller_kills=faults.poller_kills,
        redis_restarts=faults.redis_restarts,
        connections_terminated=faults.connections_terminated,
        feeder_reconnects=len(feeder.errors),
    )  # fmt: skip
    print("\nchaos run:", json.dumps(report, indent=2))
    if path := os.environ.get("CHAOS_REPORT"):
        Path(path).write_text(json.dumps(report, indent=2) + "\n")

    transitions = cluster.log_events("breaker_state_change")
    check_breaker(transitions, faults.outage_window, breaker_states)
    assert len(jobs) == JOBS


def wait_until_ready(
    cluster: Cluster, redis_url: str, database_url: str, timeout: float = 90
) -> None:
    """Every worker registered with RQ, every poller started, jobs being sent: the faults then
    hit work in flight."""
    redis = Redis.from_url(redis_url)
    workers = len(cluster.running("worker", "simple-worker"))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            pollers = len(cluster.log_events("poller_started"))
            if (
                redis.scard("rq:workers") >= workers
                and pollers >= len(cluster.running("poller"))
                and sent_count(database_url) >= 5
            ):
                return
            time.sleep(0.2)
    finally:
        redis.close()
    raise AssertionError(f"the cluster did not start within {timeout:.0f} s")


def await_breakers_closed(cluster: Cluster, outage_end: float, timeout: float = 30) -> None:
    """Until both breakers logged a move to closed after the outage (or the timeout: then
    check_breaker reports it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        closed = {
            t.get("provider") for t in cluster.log_events("breaker_state_change")
            if t.get("new_state") == "closed"
            and datetime.fromisoformat(t["timestamp"]).timestamp() > outage_end
        }  # fmt: skip
        if closed >= {"sendgrid", "twilio"}:
            return
        time.sleep(0.5)


def sent_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select count(*) from notification_jobs where status = 'sent'")
        return int(row.fetchone()[0])  # type: ignore[index]


def wait_until_final(database_url: str, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            counts = dict(
                conn.execute(  # type: ignore[arg-type]
                    "select status, count(*) from notification_jobs group by status"
                ).fetchall()
            )
        if set(counts) <= FINAL and sum(counts.values()) == JOBS:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"jobs not final after {timeout:.0f} s: {counts}")


def final_breaker_states(redis_url: str) -> dict[str, str]:
    redis = Redis.from_url(redis_url)
    try:
        return {
            name: ProviderBreaker(name, redis, fail_max=5, reset_timeout=BREAKER_RESET).state
            for name in ("sendgrid", "twilio")
        }
    finally:
        redis.close()
