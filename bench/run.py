"""One benchmark run on throwaway servers: the pipeline beside the bare send loop.

Every measurement happens in this one run, on the same machine load, so the ratios between
them are what to read; absolute rates move with whatever else the machine is doing.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis as redis_lib

from notifier.devstack.demo import poller_command, worker_command
from notifier.devstack.servers import LocalPostgres, LocalRedis
from notifier.schema import migrate as migrations

OWNER = "00000000-0000-0000-0000-000000000001"
RECIPIENTS = 100
PG_SETTINGS = {"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Servers:
    pg: LocalPostgres
    redis: LocalRedis
    template: str = "bench_fresh"
    backlog_template: str | None = None
    databases: int = 0

    def database(self, backlog: bool = False) -> str:
        self.databases += 1
        name = f"bench_{self.databases}"
        template = self.backlog_template if backlog else self.template
        return self.pg.create_database(name, template=template)


@contextmanager
def servers() -> Iterator[Servers]:
    with LocalPostgres(settings=PG_SETTINGS) as pg, LocalRedis() as redis:
        url = pg.create_database("bench_fresh")
        migrations.apply(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension if not exists pg_stat_statements")
            conn.execute(
                "insert into recipients (parent_id, name, email) select %s, 'R' || i, "
                "'r' || i || '@example.com' from generate_series(1, %s) i",
                (OWNER, RECIPIENTS),
            )
        yield Servers(pg, redis)


def seed_backlog_template(env: Servers, finished: int) -> None:
    """A template with `finished` sent jobs, each with its delivery-log row (as months of use
    would leave them). Inserted directly: seeding history, not a state change under test."""
    url = env.pg.create_database("bench_backlog", template=env.template)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into notification_jobs (recipient_id, notification_type, urgency_level, "
            "delivery_method, content, status, processed_at, retry_count, max_retries) "
            "select r.id, 'immediate', 'normal', 'email', jsonb_build_object('subject', 'old'), "
            "'sent', now() - interval '1 day', 0, 3 "
            "from generate_series(1, %s) i "
            "join (select id, row_number() over () - 1 as k from recipients) r on r.k = i %% %s",
            (finished, RECIPIENTS),
        )
        conn.execute(
            "insert into notification_delivery_logs (job_id, recipient_id, delivery_method, "
            "status, attempt, provider) select id, recipient_id, 'email', 'delivered', 1, "
            "'sendgrid' from notification_jobs"
        )
        conn.execute("vacuum analyze")
    env.backlog_template = "bench_backlog"


# -- processes ---------------------------------------------------------------------------------


@contextmanager
def stub(latency_ms: float) -> Iterator[str]:
    """The provider stub in its own process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.stub", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def stub_stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/stats", timeout=30) as answer:
        stats: dict[str, Any] = json.load(answer)
    return stats


def stub_reset(base_url: str) -> None:
    request = urllib.request.Request(f"{base_url}/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).close()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (with its reaped children's when asked), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def postgres_cpu(pg: LocalPostgres) -> float:
    """All of the server's CPU so far: the postmaster, its reaped backends, its live ones."""
    assert pg.process is not None
    root = pg.process.pid
    total = cpu_seconds(root, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == root:
                total += cpu_seconds(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Pipeline:
    """A running poller and `workers` stock rq workers against one database."""

    env: dict[str, str]
    workers: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    logs: list[Path] = field(default_factory=list)

    def start(self, redis_url: str) -> None:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.procs.append(subprocess.Popen(poller_command(), env=self.env, **quiet))  # type: ignore[call-overload]
        for _ in range(self.workers):
            # The workers' JSON log lines, read back for the record delay of each send.
            log = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
            self.logs.append(log)
            with log.open("wb") as sink:
                self.procs.append(
                    subprocess.Popen(worker_command(), env=self.env, stdout=sink, stderr=sink)
                )
        client = redis_lib.Redis.from_url(redis_url)
        deadline = time.monotonic() + 60
        while client.scard("rq:workers") < self.workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("the benchmark's workers did not start")
            time.sleep(0.1)
        time.sleep(1.0)  # workers registered; let them finish importing and reach dequeue

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(p.pid, children=True) for p in self.procs[1:])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def record_delays(self) -> list[float]:
        """Milliseconds from each provider answer to its record's commit (`job_sent`'s
        `record_ms`), sorted: how long an accepted message's outcome was unknown."""
        delays = []
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if '"job_sent"' in line:
                    delays.append(float(json.loads(line)["record_ms"]))
            log.unlink(missing_ok=True)
        return sorted(delays)


def record_window(delays: list[float]) -> dict[str, float]:
    return {
        "record_p50_ms": percentile(delays, 50),
        "record_p99_ms": percentile(delays, 99),
        "record_max_ms": delays[-1] if delays else float("nan"),
    }


def pipeline_env(database_url: str, redis_url: str, provider_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "NOTIFIER_EMAIL_PROVIDER": "sendgrid",
        "NOTIFIER_SMS_PROVIDER": "console",
        "SENDGRID_API_KEY": "SG.bench.key",
        "SENDGRID_API_BASE": provider_url,
        "EMAIL_FROM": "bench@example.com",
        "NOTIFIER_POLL_INTERVAL": "1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def enqueue_all(database_url: str, jobs: int, tag: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "select enqueue_notification_job(r.id, null, null, 'immediate', 'normal', 'email', "
            "jsonb_build_object('subject', 'S' || i, 'body', 'Body ' || i, 'run', %s::text), 0) "
            "from generate_series(1, %s) i "
            "join (select id, row_number() over () - 1 as k from recipients) r on r.k = i %% %s",
            (tag, jobs, RECIPIENTS),
        )


def verify(database_url: str, stats: dict[str, Any], jobs: int, tag: str) -> None:
    """Every job of the run ended `sent` after exactly one provider request."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select id::text, status from notification_jobs where content ->> 'run' = %s", (tag,)
        ).fetchall()
    statuses = {job_id: status for job_id, status in rows}
    not_sent = {s for s in statuses.values() if s != "sent"}
    arrivals: dict[str, list[float]] = stats["arrivals"]
    twice = [job for job, times in arrivals.items() if len(times) > 1]
    problems = []
    if len(statuses) != jobs or not_sent:
        problems.append(f"{len(statuses)} jobs, statuses other than sent: {not_sent}")
    if twice:
        problems.append(f"{len(twice)} jobs got more than one provider request")
    if set(arrivals) != set(statuses):
        problems.append("the provider saw other jobs than the database holds")
    if stats["violations"]:
        problems.append(f"spec violations: {stats['violations'][:3]}")
    if problems:
        raise AssertionError(f"run {tag}: " + "; ".join(problems))


def wait_for(base_url: str, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = stub_stats(base_url)
        if stats["count"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def pipeline_throughput(
    env: Servers,
    provider_url: str,
    *,
    jobs: int,
    workers: int,
    backlog: bool = False,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Enqueue `jobs` in one transaction into a running pipeline; delivered/s from its commit
    (when the jobs become visible) to the last provider request, with CPU per notification for
    the workers and for PostgreSQL (which includes the enqueue's own share)."""
    database_url = env.database(backlog)
    redis_lib.Redis.from_url(env.redis.url).flushall()
    stub_reset(provider_url)
    extra = {"NOTIFIER_MAX_IN_FLIGHT": str(max(jobs, 5000)), **(settings or {})}
    pipeline = Pipeline(pipeline_env(database_url, env.redis.url, provider_url, **extra), workers)
    tag = uuid.uuid4().hex
    try:
        pipeline.start(env.redis.url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("select pg_stat_statements_reset()")
        cpu_workers, cpu_pg = pipeline.worker_cpu(), postgres_cpu(env.pg)
        enqueue_started = time.time()
        enqueue_all(database_url, jobs, tag)
        started = time.time()  # committed: from now on the jobs are due and visible
        stats = wait_for(provider_url, jobs, timeout=60 + jobs / 20)
        time.sleep(0.5)  # the last outcomes are recorded after their provider requests
        cpu_workers = pipeline.worker_cpu() - cpu_workers
        cpu_pg = postgres_cpu(env.pg) - cpu_pg
        statements = top_statements(database_url)
    finally:
        pipeline.stop()
    delays = pipeline.record_delays()
    verify(database_url, stats, jobs, tag)
    last = max(t for times in stats["arrivals"].values() for t in times)
    elapsed = last - started
    return {
        "rate": jobs / elapsed,
        "elapsed_s": elapsed,
        "enqueue_s": started - enqueue_started,
        "jobs": jobs,
        "workers": workers,
        "backlog": backlog,
        "worker_cpu_ms_per_notification": 1000 * cpu_workers / jobs,
        "postgres_cpu_ms_per_notification": 1000 * cpu_pg / jobs,
        **record_window(delays),
        "statements": statements,
    }


def top_statements(database_url: str) -> list[dict[str, Any]]:
    """The statements PostgreSQL spent most time on (pg_stat_statements, nested ones too)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select left(regexp_replace(query, '\\s+', ' ', 'g'), 90), calls, "
            "round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3) "
            "from pg_stat_statements where query not ilike '%%pg_stat_statements%%' "
            "order by total_exec_time desc limit 6"
        ).fetchall()
    return [
        {"query": q, "calls": c, "total_ms": float(t), "mean_ms": float(m)} for q, c, t, m in rows
    ]


def steady_latency(
    env: Servers,
    provider_url: str,
    *,
    rate: float,
    seconds: float,
    workers: int,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Offer `rate` jobs/s one by one for `seconds`; p50/p99 from each enqueue's commit to its
    provider request."""
    database_url = env.database()
    redis_lib.Redis.from_url(env.redis.url).flushall()
    stub_reset(provider_url)
    pipeline = Pipeline(
        pipeline_env(database_url, env.redis.url, provider_url, **(settings or {})), workers
    )
    tag = uuid.uuid4().hex
    enqueued: dict[str, float] = {}
    total = int(rate * seconds)
    try:
        pipeline.start(env.redis.url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            recipients = [r[0] for r in conn.execute("select id from recipients").fetchall()]
            begin = time.monotonic()
            for n in range(total):
                pause = begin + n / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                row = conn.execute(
                    "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', "
                    "'email', jsonb_build_object('subject', 'S', 'body', 'B', 'run', %s::text), 0)",
                    (recipients[n % len(recipients)], tag),
                ).fetchone()
                assert row is not None
                enqueued[str(row[0])] = time.time()
        stats = wait_for(provider_url, total, timeout=60)
    finally:
        pipeline.stop()
    delays = pipeline.record_delays()
    verify(database_url, stats, total, tag)
    latencies = sorted(
        1000 * (stats["arrivals"][job][0] - at) for job, at in enqueued.items()
    )
    return {
        "offered_rate": rate,
        "jobs": total,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1],
        **record_window(delays),
    }


def bare_throughput(provider_url: str, *, jobs: int, processes: int, threads: int) -> dict[str, Any]:
    """The limit: `processes` bare render+send loops with `threads` threads each, same stub."""
    stub_reset(provider_url)
    share = -(-jobs // processes)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.bare", "--base-url", provider_url, "--count",
             str(share), "--threads", str(threads), "--tag", f"bare{n}"],
            stdout=subprocess.PIPE, text=True,
        )
        for n in range(processes)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode:
            raise RuntimeError("a bare send loop failed")
        results.append(json.loads(out.strip().splitlines()[-1]))
    stats = stub_stats(provider_url)
    if stats["violations"]:
        raise AssertionError(f"bare loop: spec violations {stats['violations'][:3]}")
    started = min(r["started"] for r in results)
    ended = max(r["ended"] for r in results)
    count = sum(r["count"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    return {
        "rate": count / (ended - started),
        "jobs": count,
        "processes": processes,
        "cpu_ms_per_notification": 1000 * cpu / count,
    }


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
