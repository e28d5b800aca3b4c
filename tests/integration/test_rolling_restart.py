"""A zero-downtime rolling restart under load, as docs/operations.md describes it: start new
workers, SIGTERM the old ones (warm stop), replace the poller, while jobs keep arriving. The
real processes from the Procfile, the SendGrid loopback counting requests per job id: nothing
may be lost and nothing sent twice."""

from __future__ import annotations

import collections
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from redis import Redis
from rq import Worker

from notifier.devstack.demo import command
from notifier.pipeline.queues import QUEUE_NAMES
from tests.integration import seed
from tests.integration.conftest import REPO
from tests.integration.pipeline import statuses, wait_for
from tests.support.loopback import SendGridLoopback

FEED_BATCH = 8
FEED_INTERVAL = 0.05  # ~160 jobs/s arriving throughout the restart


def procfile_command(name: str) -> list[str]:
    """The Procfile's line for `name`, with the installed console script's full path."""
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            program, *args = shlex.split(line.partition(":")[2])
            return command(program, *args)
    raise AssertionError(f"no {name} in the Procfile")


@pytest.fixture
def sendgrid() -> Iterator[SendGridLoopback]:
    with SendGridLoopback(delay_seconds=0.02) as server:
        yield server


class Feeder(threading.Thread):
    """Enqueues jobs with the SQL function, as an app would, until stopped."""

    def __init__(self, database_url: str, recipient: str) -> None:
        super().__init__(name="feeder", daemon=True)
        self._database_url = database_url
        self._recipient = recipient
        self._stop_event = threading.Event()
        self.job_ids: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self._database_url, autocommit=True, row_factory=dict_row) as conn:
            while not self._stop_event.is_set():
                rows = conn.execute(
                    "select enqueue_notification_job(%s, null, null, 'immediate', 'normal',"
                    " 'email', jsonb_build_object('subject', 'S' || i, 'body', 'B'), 0) as id"
                    " from generate_series(1, %s) i",
                    (self._recipient, FEED_BATCH),
                ).fetchall()
                self.job_ids += [str(r["id"]) for r in rows]
                self._stop_event.wait(FEED_INTERVAL)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def sent_count(db: psycopg.Connection[Any]) -> int:
    return statuses(db).get("sent", 0)


def live_workers(redis: Redis) -> set[str]:
    from rq import Queue

    return {w.name for w in Worker.all(queue=Queue(QUEUE_NAMES[1], connection=redis))}


def test_rolling_restart_under_load_loses_and_duplicates_nothing(
    db: psycopg.Connection[Any],
    database_url: str,
    base_env: dict[str, str],
    sendgrid: SendGridLoopback,
    redis: Redis,
    tmp_path: Path,
) -> None:
    env = base_env | {
        "NOTIFIER_EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": "SG.test-key", "SENDGRID_API_BASE": sendgrid.base_url,
        "EMAIL_FROM": "notifications@example.com",
        "NOTIFIER_RQ_JOB_SIZE": "10", "NOTIFIER_SEND_CONCURRENCY": "4",
    }  # fmt: skip
    worker_line = procfile_command("worker")  # SimpleWorker
    forking_line = [part for part in worker_line if part not in ("-w", "rq.worker.SimpleWorker")]
    poller_line = procfile_command("poller")
    recipient = seed.add_recipient(db)["recipient"]

    logs: dict[int, Path] = {}

    def start(cmd: list[str]) -> subprocess.Popen[str]:
        log = tmp_path / f"process-{len(logs)}.log"
        with log.open("w") as stderr:  # a file, not a pipe: a full pipe would block the process
            process = subprocess.Popen(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True
            )
        logs[id(process)] = log
        return process

    started: list[subprocess.Popen[str]] = []
    feeder = Feeder(database_url, recipient)
    try:
        old_poller = start(poller_line)
        old_workers = [start(forking_line), start(worker_line)]
        started += [old_poller, *old_workers]
        feeder.start()
        wait_for(lambda: sent_count(db) >= 60, timeout=30)

        before = live_workers(redis)
        new_workers = [start(worker_line), start(worker_line)]
        started += new_workers
        wait_for(lambda: len(live_workers(redis) - before) == 2, timeout=20, interval=0.05)
        for worker in old_workers:  # warm stop: finish the RQ job in hand, then exit
            worker.send_signal(signal.SIGTERM)
        new_poller = start(poller_line)
        started.append(new_poller)
        old_poller.send_signal(signal.SIGTERM)
        old_codes = [process.wait(timeout=60) for process in (*old_workers, old_poller)]
        after_old_stopped = sent_count(db)

        wait_for(lambda: sent_count(db) >= after_old_stopped + 60, timeout=30)
        feeder.stop()
        total = len(feeder.job_ids)
        wait_for(lambda: sent_count(db) == total, timeout=60, interval=0.2)
    finally:
        feeder.stop()
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {id(p): p.wait(timeout=60) for p in started}
    errors = {id(p): logs[id(p)].read_text() for p in started}

    assert old_codes == [0, 0, 0], [errors[id(p)][-2000:] for p in (*old_workers, old_poller)]
    assert all(code == 0 for code in codes.values())
    finished_in_hand = 0
    for worker in old_workers:
        log = errors[id(worker)]
        assert "warm shut down requested" in log
        finished_in_hand += "Job OK" in log.split("warm shut down requested", 1)[1]
    assert finished_in_hand >= 1  # under load: a stopped worker finished the batch in hand
    assert statuses(db) == {"sent": total}
    requests = collections.Counter(
        r.body["personalizations"][0]["custom_args"]["job_id"] for r in sendgrid.requests
    )
    assert set(requests) == set(feeder.job_ids)  # nothing lost
    assert max(requests.values()) == 1  # nothing sent twice
    assert sendgrid.spec_violations == []
    logs = db.execute(
        "select status, count(*) as n from notification_delivery_logs group by status"
    ).fetchall()
    assert {r["status"]: r["n"] for r in logs} == {"delivered": total}  # no unknown outcome
