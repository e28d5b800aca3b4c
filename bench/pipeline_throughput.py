"""Throughput of the whole pipeline: SQL enqueue → poller → stock RQ workers → console provider.

Runs the batched unit of work (NOTIFIER_RQ_JOB_SIZE=25, the default) side by side with the
baseline of one RQ job per notification (NOTIFIER_RQ_JOB_SIZE=1), in the same run, on throwaway
servers. Usage: python bench/pipeline_throughput.py [--jobs 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import psycopg

from notifier.devstack.demo import poller_command, worker_command
from notifier.devstack.servers import LocalPostgres, LocalRedis
from notifier.schema import migrate as migrations


def run_case(
    pg: LocalPostgres, redis: LocalRedis, name: str, jobs: int, workers: int, job_size: int
) -> float:
    url = pg.create_database(name)
    migrations.apply(url)
    with psycopg.connect(url, autocommit=True) as conn:
        owner = "00000000-0000-0000-0000-000000000001"
        conn.execute(
            "insert into recipients (parent_id, name, email) select %s, 'R' || i, 'r' || i || '@example.com' "
            "from generate_series(1, 100) i",
            (owner,),
        )
        conn.execute(
            "select enqueue_notification_job(r.id, null, null, 'immediate', 'normal', 'email', "
            "jsonb_build_object('subject', 'S' || i, 'body', 'Body ' || i), 0) "
            "from generate_series(1, %s) i join lateral (select id from recipients "
            "order by id offset (i %% 100) limit 1) r on true",
            (jobs,),
        )
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis.url,
        "NOTIFIER_EMAIL_PROVIDER": "console",
        "NOTIFIER_SMS_PROVIDER": "console",
        "NOTIFIER_RQ_JOB_SIZE": str(job_size),
        "NOTIFIER_MAX_IN_FLIGHT": str(jobs),
        "NOTIFIER_CLAIM_BATCH": "1000",
        "LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    subprocess.run(poller_command("--burst"), env=env, check=True, stdout=subprocess.DEVNULL)
    procs = [
        subprocess.Popen(
            worker_command("--burst"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(workers)
    ]
    for proc in procs:
        proc.wait()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        sent = conn.execute(
            "select count(*) from notification_jobs where status = 'sent'"
        ).fetchone()
    assert sent is not None and sent[0] == jobs, f"{name}: only {sent} of {jobs} sent"
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with LocalPostgres() as pg, LocalRedis() as redis:
        for label, size in (
            ("baseline: 1 notification per RQ job", 1),
            ("batched: 25 per RQ job", 25),
        ):
            rate = run_case(pg, redis, f"bench_{size}", args.jobs, args.workers, size)
            print(
                f"{label:<40} {rate:8.0f} notifications/s ({args.jobs} jobs, {args.workers} SimpleWorkers)"
            )


if __name__ == "__main__":
    main()
