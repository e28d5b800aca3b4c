"""What Postgres says about the pipeline, read-only, in one reader for /health, /metrics and
`notifier status` (and the drain of `notifier pause --wait`).

Every reader gets the backlog; the rest is asked for by part, because the callers differ in
how often they run: a health probe reads the backlog only, a scrape adds the flow and the
window's activity, `notifier status` the flow and the overview (a whole-table count, which a
probe must never run). All parts are one call of the SQL function `notifier_read_snapshot`
(one statement, one `now()`), through any `FunctionCaller`: psycopg or the Supabase REST API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from notifier.store.base import FunctionCaller

# Histogram bucket bounds (seconds).
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOP_REASONS = 10
SNAPSHOT_FUNCTION = "notifier_read_snapshot"  # 20261201000900_snapshot_feedback_and_control.sql
T = TypeVar("T")

# (status, method) → jobs, in the order Postgres answered.
Counts = dict[tuple[str, str], int]


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
    # Paused by `notifier handback`: the original worker owns the queue (resume is refused).
    handed_back: bool = False
    # Active digest schedules the pass parked (digest_settings.last_error): never due.
    parked_digest_schedules: int = 0

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


@dataclass(frozen=True)
class Due:
    """Pending jobs of one delivery method that are due now."""

    method: str
    count: int
    awaiting_retry: int  # failed at least one attempt already
    oldest_seconds: float


@dataclass(frozen=True)
class Flow:
    """What is due now and what finished in the last 24 h, by method (metrics and status)."""

    due: tuple[Due, ...]
    finished_24h: Counts


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (`le` → count, `+Inf` last), count and sum, for one label."""

    buckets: list[tuple[str, float]]
    count: int
    total: float


@dataclass(frozen=True)
class Delivery:
    """Delivery attempts of one provider, method and outcome (the delivery log's status)."""

    provider: str
    method: str
    outcome: str
    count: int
    retries: int  # attempt 2 or later


@dataclass(frozen=True)
class Feedback:
    """Provider events (webhooks) of one method, event and the log status they added."""

    method: str
    event: str
    status: str
    count: int


@dataclass(frozen=True)
class Activity:
    """The jobs not finished now and the deliveries over a recent window (for /metrics)."""

    unfinished: Counts  # pending, queued, processing, held
    oldest_held_seconds: float | None  # the oldest job held for a digest
    deliveries: tuple[Delivery, ...]
    latency: dict[str, Histogram]  # provider → scheduled_for → accepted
    duration: dict[str, Histogram]  # provider → provider request time
    feedback: tuple[Feedback, ...] = ()  # provider events in the window
    suppressions: dict[tuple[str, str], int] | None = None  # (channel, source) → addresses


@dataclass(frozen=True)
class FailureReason:
    reason: str
    count: int


@dataclass(frozen=True)
class DeliveryTimes:
    """Over the last 24 h's deliveries, in milliseconds; None when there were none."""

    provider_avg_ms: float | None
    provider_p95_ms: float | None
    latency_avg_ms: float | None  # scheduled_for → delivered
    latency_p95_ms: float | None


@dataclass(frozen=True)
class Overview:
    """The whole job table by status and method, why jobs failed, how fast deliveries were,
    what the providers reported back in 24 h and how many addresses are suppressed."""

    jobs: Counts
    top_failure_reasons: tuple[FailureReason, ...]
    delivery_times: DeliveryTimes
    feedback_24h: tuple[Feedback, ...] = ()
    suppressions: dict[tuple[str, str], int] | None = None


@dataclass(frozen=True)
class Snapshot:
    """One reading. A part that was not asked for raises when used, instead of reading as
    zeros."""

    backlog: Backlog
    flow_part: Flow | None = None
    activity_part: Activity | None = None
    overview_part: Overview | None = None

    @property
    def flow(self) -> Flow:
        return _asked(self.flow_part, "flow=True")

    @property
    def activity(self) -> Activity:
        return _asked(self.activity_part, "window_seconds=...")

    @property
    def overview(self) -> Overview:
        return _asked(self.overview_part, "overview=True")


def read_snapshot(
    caller: FunctionCaller,
    *,
    flow: bool = False,
    window_seconds: int | None = None,
    overview: bool = False,
    top_reasons: int = TOP_REASONS,
) -> Snapshot:
    """The backlog, plus the flow, the activity over the last `window_seconds` and the
    overview when asked for: one call of `notifier_read_snapshot`, so one statement."""
    rows = caller.call(
        SNAPSHOT_FUNCTION,
        {
            "p_flow": flow,
            "p_window_seconds": window_seconds,
            "p_overview": overview,
            "p_top_reasons": top_reasons,
            "p_latency_bounds": list(LATENCY_BUCKETS),
            "p_duration_bounds": list(DURATION_BUCKETS),
        },
    )
    parts: dict[str, Any] = rows[0]["snapshot"]
    return Snapshot(
        backlog=_backlog(parts["backlog"]),
        flow_part=_flow(parts) if flow else None,
        activity_part=None if window_seconds is None else _activity(parts),
        overview_part=_overview(parts) if overview else None,
    )


def _backlog(row: dict[str, Any]) -> Backlog:
    return Backlog(
        due_now=int(row["due_now"]),
        oldest_due_seconds=_float(row["oldest_due_seconds"]),
        queued=int(row["queued"]),
        processing=int(row["processing"]),
        failed_24h=int(row["failed_24h"]),
        paused=bool(row["paused"]),
        paused_at=_timestamp(row["paused_at"]),
        paused_by=row["paused_by"],
        paused_reason=row["paused_reason"],
        handed_back=bool(row.get("handed_back")),
        parked_digest_schedules=int(row.get("parked_digest_schedules") or 0),
    )


def _flow(parts: dict[str, Any]) -> Flow:
    due = tuple(
        Due(row["method"], int(row["n"]), int(row["awaiting_retry"]), row["oldest_seconds"])
        for row in parts["due_by_method"]
    )
    return Flow(due=due, finished_24h=_counts(parts["finished_24h"]))


def _activity(parts: dict[str, Any]) -> Activity:
    deliveries = tuple(
        Delivery(r["provider"], r["method"], r["outcome"], int(r["n"]), int(r["retries"]))
        for r in parts["deliveries"]
    )
    return Activity(
        unfinished=_counts(parts["unfinished"]),
        oldest_held_seconds=_float(parts["oldest_held_seconds"]),
        deliveries=deliveries,
        latency=_histograms(parts["latency"]),
        duration=_histograms(parts["duration"]),
        feedback=_feedback(parts["feedback"]),
        suppressions=_suppressions(parts["suppressions"]),
    )


def _overview(parts: dict[str, Any]) -> Overview:
    times = parts["delivery_times"] or {}
    return Overview(
        jobs=_counts(parts["job_counts"]),
        top_failure_reasons=tuple(
            FailureReason(r["reason"], int(r["n"])) for r in parts["top_failure_reasons"]
        ),
        delivery_times=DeliveryTimes(
            provider_avg_ms=_float(times.get("provider_avg_ms")),
            provider_p95_ms=_float(times.get("provider_p95_ms")),
            latency_avg_ms=_float(times.get("latency_avg_ms")),
            latency_p95_ms=_float(times.get("latency_p95_ms")),
        ),
        feedback_24h=_feedback(parts["feedback_24h"]),
        suppressions=_suppressions(parts["suppressions"]),
    )


def _feedback(rows: list[dict[str, Any]]) -> tuple[Feedback, ...]:
    return tuple(Feedback(r["method"], r["event"], r["status"], int(r["n"])) for r in rows)


def _suppressions(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(str(r["channel"]), str(r["source"])): int(r["n"]) for r in rows}


def _counts(rows: list[dict[str, Any]]) -> Counts:
    return {(str(row["status"]), str(row["method"])): int(row["n"]) for row in rows}


def _histograms(rows: list[dict[str, Any]]) -> dict[str, Histogram]:
    by_provider: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_provider.setdefault(row["provider"], []).append(row)
    histograms = {}
    for provider, provider_rows in by_provider.items():
        provider_rows.sort(key=lambda r: float(r["le"]))
        total = int(provider_rows[0]["total"])
        buckets = [(f"{float(r['le']):g}", float(r["n"])) for r in provider_rows]
        buckets.append(("+Inf", float(total)))
        histograms[provider] = Histogram(buckets, total, float(provider_rows[0]["seconds"] or 0.0))
    return histograms


def _timestamp(value: Any) -> datetime | None:
    """jsonb carries timestamps as ISO text."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _asked(part: T | None, how: str) -> T:
    if part is None:
        raise LookupError(f"this snapshot was read without this part: read_snapshot(..., {how})")
    return part


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
