"""`notifier dev`: the whole pipeline on a laptop with nothing but PostgreSQL and Redis binaries.

Starts throwaway servers, migrates, seeds demo recipients, enqueues a handful of notifications
with the SQL function (exactly as an app would), runs the production commands (`notifier
poller`, `rq worker -c notifier.rq_settings`, `notifier scheduler`) against them with console
delivery, and prints the jobs and delivery logs when every demo job has settled. Then it keeps
everything running, and says how to connect and enqueue, so a newcomer can try their own SQL
until Ctrl-C (or `--seconds`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from notifier.devstack.servers import LocalPostgres, LocalRedis
from notifier.schema import migrate as migrations
from notifier.store.model import FINISHED

SCHEDULED_AHEAD_SECONDS = 5


def command(name: str, *args: str) -> list[str]:
    """A console script of this installation (the venv's bin first), as users type it."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (pip install notifier)")
    return [found, *args]


def poller_command(*args: str) -> list[str]:
    return command("notifier", "poller", *args)


def scheduler_command(*args: str) -> list[str]:
    return command("notifier", "scheduler", *args)


def worker_command(*args: str) -> list[str]:
    """The documented worker line; SimpleWorker runs jobs in-process (see docs/operations)."""
    return command(
        "rq", "worker", "-c", "notifier.rq_settings", "-w", "rq.worker.SimpleWorker", *args
    )


DEMO = [
    # (recipient key, method, type, content, delay seconds)
    (
        "ada",
        "email",
        "immediate",
        {"subject": "Lily's first steps", "body": "She walked today!\nThree whole steps."},
        0,
    ),
    ("ada", "sms", "immediate", {"body": "New photo in the family album."}, 0),
    (
        "ada",
        "email",
        "milestone",
        {"subject": "Happy birthday <Lily>", "body": "One year old. <b>not bold</b>"},
        0,
    ),
    (
        "ada",
        "email",
        "immediate",
        {"subject": "A little later", "body": "This one was scheduled."},
        SCHEDULED_AHEAD_SECONDS,
    ),
    ("bo", "email", "immediate", {"subject": "Muted", "body": "Bo muted notifications."}, 0),
    ("cy", "email", "immediate", {"subject": "Bounces", "body": "This address is rejected."}, 0),
]


@dataclass(frozen=True)
class Seeded:
    job_ids: list[str]
    recipient_id: str  # Ada: not muted, with an address that is accepted
    group_id: str


def seed(database_url: str) -> Seeded:
    """Demo owner, recipients (one muted, one whose address is rejected), group, and jobs."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        owner = conn.execute("select gen_random_uuid() as id").fetchone()["id"]  # type: ignore[index]
        group = conn.execute(
            "insert into recipient_groups (parent_id, name) "
            "values (%s, 'The Garcia family') returning id",
            (owner,),
        ).fetchone()["id"]  # type: ignore[index]
        people = {
            "ada": ("Ada Garcia", "ada@example.com", "+15005550006"),
            "bo": ("Bo Garcia", "bo@example.com", None),
            "cy": ("Cy Garcia", "cy@fail.invalid", None),
        }
        ids = {}
        for key, (name, email, phone) in people.items():
            ids[key] = conn.execute(
                "insert into recipients (parent_id, name, email, phone, timezone) "
                "values (%s, %s, %s, %s, 'Europe/Berlin') returning id",
                (owner, name, email, phone),
            ).fetchone()["id"]  # type: ignore[index]
        conn.execute(
            "insert into notification_preferences_cache (recipient_id, is_muted) values (%s, true)",
            (ids["bo"],),
        )
        job_ids = []
        for key, method, kind, content, delay in DEMO:
            row = conn.execute(
                "select enqueue_notification_job(%s, %s, null, %s, 'normal', %s, %s, 0) as id",
                (ids[key], group, kind, method, Jsonb(content)),
            ).fetchone()
            job_ids.append(str(row["id"]))  # type: ignore[index]
            if delay:
                # Demo only: the SQL API schedules in whole minutes; a demo cannot wait that long.
                conn.execute(
                    "update notification_jobs "
                    "set scheduled_for = now() + make_interval(secs => %s) where id = %s",
                    (delay, row["id"]),  # type: ignore[index]
                )
    return Seeded(job_ids, str(ids["ada"]), str(group))


def try_it_yourself(database_url: str, seeded: Seeded) -> str:
    """How to connect, and one enqueue call for Ada, ready to paste into psql."""
    psql = shutil.which("psql") or "psql"
    call = (
        f"SELECT enqueue_notification_job('{seeded.recipient_id}'::uuid, "
        f"'{seeded.group_id}'::uuid, NULL, 'immediate', 'normal', 'email', "
        """'{"subject": "Hello", "body": "My first notification"}'::jsonb, 0);"""
    )
    return (
        f"Try it yourself: connect with\n  {psql} '{database_url}'\n"
        "and enqueue a notification for the demo recipient Ada (printed here when sent):\n"
        f"  {call}\n"
        "Watch it with: SELECT status, failure_reason FROM notification_jobs "
        "ORDER BY created_at DESC LIMIT 5;\n"
    )


def summary(database_url: str, job_ids: list[str]) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "select j.id, j.delivery_method as method, j.notification_type as type, j.status, "
            "coalesce(j.failure_reason, '') as reason, "
            "(select string_agg(l.status, ',' order by l.created_at) "
            " from notification_delivery_logs l where l.job_id = j.id) as log "
            "from notification_jobs j where j.id = any(%s::uuid[]) order by j.created_at",
            (job_ids,),
        ).fetchall()


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ["id", "method", "type", "status", "log", "reason"]
    cells = [[str(row[c] or "")[:60] for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row_cells in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row_cells, widths, strict=True)))


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_dev(*, seconds: float | None, outbox: str) -> int:
    """Run the demo, then keep everything running until Ctrl-C, or until `seconds` have passed
    since the start. Returns 0 when every demo job settled, 1 when one did not or a process
    stopped by itself."""
    # SIGTERM stops the demo like Ctrl-C, so the servers and child processes go with it.
    signal.signal(signal.SIGTERM, _interrupt)
    with LocalPostgres() as postgres, LocalRedis() as redis:
        database_url = postgres.url
        print(f"PostgreSQL: {database_url}\nRedis:      {redis.url}")
        for migration in migrations.apply(database_url):
            print(f"applied {migration.path.name}")
        seeded = seed(database_url)
        job_ids = seeded.job_ids
        print(f"enqueued {len(job_ids)} demo notifications; delivering...\n", flush=True)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "NOTIFIER_EMAIL_PROVIDER": "console",
            "NOTIFIER_SMS_PROVIDER": "console",
            "NOTIFIER_OUTBOX_DIR": str(Path(outbox).resolve()),
            "NOTIFIER_POLL_INTERVAL": "1",
            "UNSUBSCRIBE_URL_BASE": os.environ.get(
                "UNSUBSCRIBE_URL_BASE", "https://app.example.com/notifications/preferences/{token}"
            ),
        }
        # Own sessions: Ctrl-C reaches only us, and we stop the children with one SIGTERM
        # (a second signal would make RQ abandon the job in hand).
        processes = [
            subprocess.Popen(poller_command(), env=env, start_new_session=True),
            subprocess.Popen(worker_command(), env=env, start_new_session=True),
            subprocess.Popen(scheduler_command(), env=env, start_new_session=True),
        ]
        deadline = None if seconds is None else time.monotonic() + seconds
        settled = False
        stopped_by_itself = False
        try:
            while deadline is None or time.monotonic() < deadline:
                if any(process.poll() is not None for process in processes):
                    stopped_by_itself = True
                    print("\na notifier process stopped by itself; stopping the demo")
                    break
                rows = [] if settled else summary(database_url, job_ids)
                if rows and all(r["status"] in FINISHED for r in rows):
                    settled = True
                    print()
                    print_table(rows)
                    print(f"\noutbox: {Path(outbox).resolve()}\n")
                    print(try_it_yourself(database_url, seeded))
                    until = "Ctrl-C" if deadline is None else f"Ctrl-C or {seconds:g} s"
                    print(f"Running until {until}.", flush=True)
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nstopping...")
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        rows = summary(database_url, job_ids)
        if not settled:
            print()
            print_table(rows)
        done = all(r["status"] in FINISHED for r in rows)
        return 0 if done and not stopped_by_itself else 1
