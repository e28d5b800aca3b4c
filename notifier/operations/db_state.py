"""What Postgres says about the pipeline, read-only: the backlog and, for /metrics, counts and
latency distributions over a recent window. Every query is bounded by an index (partial
indexes on status, `processed_at`, the delivery log's `delivery_time`); nothing scans the
whole job table.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

DictConnection = psycopg.Connection[dict[str, Any]]

# Histogram bucket bounds (seconds).
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def connect(
    database_url: str, *, connect_timeout: float, application_name: str = "notifier-ops"
) -> DictConnection:
    """An autocommit connection with dict rows that gives up on time.

    No `options` startup parameter: PgBouncer and Supavisor (Supabase's pooler, port 6543)
    reject or drop it, so statement timeouts are set per transaction by `bounded`.
    libpq waits at least 2 s to connect whatever `connect_timeout` says; callers that must
    answer sooner run this in a thread with their own deadline (notifier/operations/probes.py).
    """
    return psycopg.connect(
        database_url,
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=max(2, math.ceil(connect_timeout)),
        application_name=application_name,
    )


@contextmanager
def bounded(conn: DictConnection, statement_timeout: float) -> Iterator[DictConnection]:
    """A transaction whose statements Postgres cancels after `statement_timeout` seconds.

    `set_config(..., true)` is transaction-local, so it holds behind a transaction pooler too
    and never outlives the transaction on a pooled server connection.
    """
    with conn.transaction():
        milliseconds = max(1, int(statement_timeout * 1000))
        conn.execute("select set_config('statement_timeout', %s, true)", (f"{milliseconds}ms",))
        yield conn


@dataclass(frozen=True)
class Backlog:
    """The state of the job table an operator checks first."""

    due_now: int
    oldest_due_seconds: float | None
    queued: int
    processing: int
    failed_24h: int
    paused: bool
    paused_at: datetime | None
    paused_by: str | None
    paused_reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pending_due_now": self.due_now,
            "oldest_due_seconds": _round(self.oldest_due_seconds),
            "queued": self.queued,
            "processing": self.processing,
            "failed_last_24h": self.failed_24h,
            "paused": self.paused,
            "paused_at": self.paused_at.isoformat() if self.paused_at else None,
            "paused_by": self.paused_by,
            "paused_reason": self.paused_reason,
        }


_BACKLOG = """
with due as (
  select count(*) as n, min(scheduled_for) as oldest from notification_jobs
   where status = 'pending' and scheduled_for <= now()
), in_flight as (
  select count(*) filter (where status = 'queued') as queued,
         count(*) filter (where status = 'processing') as processing
    from notification_jobs where status in ('queued', 'processing')
), failed as (
  select count(*) as n from notification_jobs
   where status = 'failed' and processed_at >= now() - interval '24 hours'
), control as (
  select paused, paused_at, paused_by, reason from notifier_control where id
)
select due.n as due_now,
       extract(epoch from now() - due.oldest)::float8 as oldest_due_seconds,
       in_flight.queued, in_flight.processing, failed.n as failed_24h,
       coalesce(control.paused, false) as paused, control.paused_at, control.paused_by,
       control.reason as paused_reason
  from due cross join in_flight cross join failed left join control on true
"""


def read_backlog(conn: DictConnection) -> Backlog:
    row = conn.execute(_BACKLOG).fetchone()
    assert row is not None
    return Backlog(**row)


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (`le` → count, `+Inf` last), count and sum, for one label."""

    buckets: list[tuple[str, float]]
    count: int
    total: float


@dataclass(frozen=True)
class MetricRows:
    active: list[dict[str, Any]]  # status, method, n (pending, queued, processing now)
    finished: list[dict[str, Any]]  # status, method, n (reached that status in the last 24 h)
    due: list[dict[str, Any]]  # method, n, awaiting_retry
    oldest_due_seconds: float | None
    oldest_held_seconds: float | None  # the oldest job held for a digest
    deliveries: list[dict[str, Any]]  # provider, method, outcome, n, retries (in the window)
    latency: dict[str, Histogram]  # provider → scheduled_for → accepted
    duration: dict[str, Histogram]  # provider → provider request time
    paused: bool


_ACTIVE = """
select 'pending' as status, delivery_method as method, count(*) as n
  from notification_jobs where status = 'pending' group by delivery_method
union all
select status, delivery_method, count(*) from notification_jobs
 where status in ('queued', 'processing', 'held') group by status, delivery_method
"""

# notification_jobs_held_idx (digests migration) covers held rows only.
_OLDEST_HELD = """
select extract(epoch from now() - min(created_at))::float8 as oldest
  from notification_jobs where status = 'held'
"""

_FINISHED = """
select status, delivery_method as method, count(*) as n from notification_jobs
 where processed_at >= now() - interval '24 hours' and processed_at is not null
 group by status, delivery_method
"""

_DUE = """
select delivery_method as method, count(*) as n,
       count(*) filter (where coalesce(retry_count, 0) > 0) as awaiting_retry,
       extract(epoch from now() - min(scheduled_for))::float8 as oldest
  from notification_jobs where status = 'pending' and scheduled_for <= now()
 group by delivery_method
"""

_DELIVERIES = """
select coalesce(provider, 'none') as provider, delivery_method as method, status as outcome,
       count(*) as n, count(*) filter (where attempt > 1) as retries
  from notification_delivery_logs
 where delivery_time >= now() - make_interval(secs => %(window)s)
 group by 1, 2, 3
"""

# Cumulative counts per bucket bound, computed in Postgres so only (provider, bucket) rows
# travel. `seconds <= le` matches Prometheus' bucket semantics exactly.
_LATENCY = """
with d as (
  select l.provider, extract(epoch from l.delivery_time - j.scheduled_for)::float8 as seconds
    from notification_delivery_logs l join notification_jobs j on j.id = l.job_id
   where l.delivery_time >= now() - make_interval(secs => %(window)s)
     and l.status = 'delivered' and l.provider is not null
)
select d.provider, b.le, count(*) filter (where d.seconds <= b.le) as n, count(*) as total,
       sum(d.seconds) as seconds
  from d cross join unnest(%(bounds)s::float8[]) as b(le)
 group by d.provider, b.le
"""

_DURATION = """
with d as (
  select provider, (delivery_duration_ms / 1000.0)::float8 as seconds
    from notification_delivery_logs
   where delivery_time >= now() - make_interval(secs => %(window)s)
     and provider is not null and delivery_duration_ms is not null
)
select d.provider, b.le, count(*) filter (where d.seconds <= b.le) as n, count(*) as total,
       sum(d.seconds) as seconds
  from d cross join unnest(%(bounds)s::float8[]) as b(le)
 group by d.provider, b.le
"""


def read_metric_rows(conn: DictConnection, window_seconds: int) -> MetricRows:
    due = conn.execute(_DUE).fetchall()
    oldest = [r["oldest"] for r in due if r["oldest"] is not None]
    window = {"window": window_seconds}
    # A plain read: notifier_claims_paused() locks the row (for claims), a scrape must not.
    paused = conn.execute(
        "select coalesce(bool_or(paused), false) as paused from notifier_control"
    ).fetchone()
    held = conn.execute(_OLDEST_HELD).fetchone()
    return MetricRows(
        active=conn.execute(_ACTIVE).fetchall(),
        finished=conn.execute(_FINISHED).fetchall(),
        due=due,
        oldest_due_seconds=max(oldest) if oldest else None,
        oldest_held_seconds=held["oldest"] if held else None,
        deliveries=conn.execute(_DELIVERIES, window).fetchall(),
        latency=_histograms(conn, _LATENCY, window_seconds, LATENCY_BUCKETS),
        duration=_histograms(conn, _DURATION, window_seconds, DURATION_BUCKETS),
        paused=bool(paused and paused["paused"]),
    )


def _histograms(
    conn: DictConnection, query: str, window_seconds: int, bounds: tuple[float, ...]
) -> dict[str, Histogram]:
    rows = conn.execute(query, {"window": window_seconds, "bounds": list(bounds)}).fetchall()
    by_provider: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_provider.setdefault(row["provider"], []).append(row)
    histograms = {}
    for provider, provider_rows in by_provider.items():
        provider_rows.sort(key=lambda r: r["le"])
        total = int(provider_rows[0]["total"])
        buckets = [(_bound(r["le"]), float(r["n"])) for r in provider_rows]
        buckets.append(("+Inf", float(total)))
        histograms[provider] = Histogram(buckets, total, float(provider_rows[0]["seconds"] or 0.0))
    return histograms


def _bound(value: float) -> str:
    return f"{value:g}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
