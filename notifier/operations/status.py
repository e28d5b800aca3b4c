"""`notifier status`: is it flowing? One screen (or one JSON document) from Postgres and Redis.

Postgres: jobs by status and method, the backlog due now, failed jobs and their top reasons,
the last 24 h (success rate, provider time and scheduled-to-sent latency: average and p95),
paused or not and what is still in flight. Redis: workers and heartbeats, breakers, queues.
Each side is read on its own, so one unreachable server still leaves the other's figures.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notifier.config import Settings, plain_secret
from notifier.operations.probes import configured_providers, describe_error
from notifier.operations.redis_state import (
    RECENT_FAILURE_SECONDS,
    RedisState,
    probe_client,
    read_redis_state,
)
from notifier.redaction import endpoint
from notifier.store.backend import endpoint as backend_endpoint
from notifier.store.backend import short_caller
from notifier.store.model import DeliveryMethod, JobStatus
from notifier.store.snapshot import Snapshot, read_snapshot

CLI_CONNECT_TIMEOUT = 5.0
CLI_STATEMENT_TIMEOUT = 60.0
CLI_REDIS_TIMEOUT = 3.0


def collect(settings: Settings) -> dict[str, Any]:
    """Everything `notifier status` shows, as plain JSON-able data; `errors` lists what failed."""
    now = datetime.now(UTC)
    report: dict[str, Any] = {
        "timestamp": now.isoformat(),
        "database": {
            "endpoint": backend_endpoint(settings),
            "backend": settings.resolved_backend,
        },
        "redis": {"endpoint": endpoint(plain_secret(settings.redis_url))},
        "errors": [],
    }
    if settings.resolved_backend is not None:
        name = "Supabase REST API" if settings.resolved_backend == "supabase" else "PostgreSQL"
        try:
            with short_caller(
                settings,
                application_name="notifier-status",
                connect_timeout=CLI_CONNECT_TIMEOUT,
                statement_timeout=CLI_STATEMENT_TIMEOUT,
            ) as reader:
                snapshot = read_snapshot(reader, flow=True, overview=True)
            report.update(_database_part(snapshot))
        except Exception as error:
            report["errors"].append(f"{name}: {describe_error(error)}")
    else:
        report["errors"].append(
            "DATABASE_URL is not set (nor SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY)"
        )
    redis_url = plain_secret(settings.redis_url)
    if redis_url:
        client = probe_client(redis_url, CLI_REDIS_TIMEOUT)
        try:
            state = read_redis_state(
                client,
                providers=configured_providers(settings),
                reset_timeout=settings.breaker_reset_timeout,
                now=now,
            )
            report.update(_redis_part(state, now))
        except Exception as error:
            report["errors"].append(f"Redis: {describe_error(error)}")
        finally:
            client.close()
    else:
        report["errors"].append("REDIS_URL is not set")
    return report


def _database_part(snapshot: Snapshot) -> dict[str, Any]:
    backlog, flow, overview = snapshot.backlog, snapshot.flow, snapshot.overview
    jobs: dict[str, dict[str, int]] = {s: dict.fromkeys(DeliveryMethod, 0) for s in JobStatus}
    for (status, method), count in overview.jobs.items():
        jobs.setdefault(status, dict.fromkeys(DeliveryMethod, 0))[method] = count
    due = {
        d.method: {"due": d.count, "oldest_seconds": round(d.oldest_seconds, 1)} for d in flow.due
    }
    day = {
        status: sum(n for (s, _method), n in flow.finished_24h.items() if s == status)
        for status in (JobStatus.SENT, JobStatus.FAILED, JobStatus.SKIPPED)
    }
    finished = day[JobStatus.SENT] + day[JobStatus.FAILED]
    times = overview.delivery_times
    return {
        "paused": backlog.paused,
        "pause": {
            "paused_at": backlog.paused_at.isoformat() if backlog.paused_at else None,
            "paused_by": backlog.paused_by,
            "reason": backlog.paused_reason,
        },
        "handed_back": backlog.handed_back,
        "parked_digest_schedules": backlog.parked_digest_schedules,
        "in_flight": {"queued": backlog.queued, "processing": backlog.processing},
        "jobs": jobs,
        "backlog": {
            "due_now": backlog.due_now,
            "oldest_due_seconds": backlog.as_dict()["oldest_due_seconds"],
            "by_method": due,
        },
        "failed": {
            "total": sum(jobs.get(JobStatus.FAILED, {}).values()),
            "last_24h": backlog.failed_24h,
            "top_reasons": [
                {"reason": r.reason, "count": r.count} for r in overview.top_failure_reasons
            ],
        },
        "last_24h": {
            "sent": day[JobStatus.SENT],
            "failed": day[JobStatus.FAILED],
            "skipped": day[JobStatus.SKIPPED],
            "success_rate": round(day[JobStatus.SENT] / finished, 4) if finished else None,
            "provider_ms": _avg_p95(times.provider_avg_ms, times.provider_p95_ms),
            "scheduled_to_sent_ms": _avg_p95(times.latency_avg_ms, times.latency_p95_ms),
        },
        "feedback_24h": _feedback(overview.feedback_24h),
        "suppressed": _by_channel(overview.suppressions or {}),
    }


def _feedback(items: tuple[Any, ...]) -> dict[str, dict[str, int]]:
    """Provider events of the last 24 h, method → event → count (bounce, spamreport, ...)."""
    by_method: dict[str, dict[str, int]] = {}
    for item in items:
        events = by_method.setdefault(item.method, {})
        events[item.event] = events.get(item.event, 0) + item.count
    return by_method


def _by_channel(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (channel, _source), count in counts.items():
        totals[channel] = totals.get(channel, 0) + count
    return totals


def _redis_part(state: RedisState, now: datetime) -> dict[str, Any]:
    return {
        "workers": [
            {
                "name": w.name,
                "state": w.state,
                "current_job": w.current_job,
                "last_heartbeat": w.last_heartbeat.isoformat() if w.last_heartbeat else None,
                "heartbeat_age_seconds": _round(w.heartbeat_age(now)),
                "hostname": w.hostname,
                "pid": w.pid,
            }
            for w in state.workers
        ],
        "breakers": {
            b.provider: {
                "state": b.state,
                "failure_count": b.failure_count,
                "opened_at": b.opened_at.isoformat() if b.opened_at else None,
                "next_retry": b.next_retry.isoformat() if b.next_retry else None,
            }
            for b in state.breakers.values()
        },
        "queues": {name: counts.as_dict() for name, counts in state.queues.items()},
        "rq_failures_recent": state.recent_rq_failures,
    }


def render(report: dict[str, Any]) -> str:
    """The report as a few readable tables for a terminal."""
    lines = [f"notifier status at {report['timestamp']}"]
    lines.append(f"database {report['database']['endpoint']}, redis {report['redis']['endpoint']}")
    if "paused" in report:
        flight = report["in_flight"]
        in_flight = f"{flight['queued']} queued, {flight['processing']} processing"
        if report["paused"]:
            pause = report["pause"]
            by = f" by {pause['paused_by']}" if pause["paused_by"] else ""
            why = f" ({pause['reason']})" if pause["reason"] else ""
            handed = " (handed back to the original worker)" if report["handed_back"] else ""
            lines.append(f"claiming: PAUSED since {pause['paused_at']}{by}{why}{handed}")
            lines.append(f"still in flight (draining): {in_flight}")
        else:
            lines.append(f"claiming: active; in flight: {in_flight}")
        if report["parked_digest_schedules"]:
            lines.append(
                f"digest schedules parked: {report['parked_digest_schedules']} "
                "(digest_settings.last_error; see docs/digests.md)"
            )
        lines += ["", *_table(report["jobs"])]
        backlog = report["backlog"]
        due = ", ".join(
            f"{m} {v['due']} (oldest {v['oldest_seconds']:.0f} s)"
            for m, v in sorted(backlog["by_method"].items())
        )
        lines += ["", f"backlog due now: {backlog['due_now']}" + (f" — {due}" if due else "")]
        failed = report["failed"]
        lines.append(f"failed jobs: {failed['total']} ({failed['last_24h']} in the last 24 h)")
        lines += [f"  {r['count']:>7}  {r['reason']}" for r in failed["top_reasons"]]
        day = report["last_24h"]
        rate = "n/a" if day["success_rate"] is None else f"{day['success_rate'] * 100:.1f} %"
        lines += [
            "",
            f"last 24 h: {day['sent']} sent, {day['failed']} failed, {day['skipped']} skipped; "
            f"success rate {rate}",
            f"  provider time      avg {_fmt_ms(day['provider_ms']['avg'])}, "
            f"p95 {_fmt_ms(day['provider_ms']['p95'])}",
            f"  scheduled → sent   avg {_fmt_ms(day['scheduled_to_sent_ms']['avg'])}, "
            f"p95 {_fmt_ms(day['scheduled_to_sent_ms']['p95'])}",
        ]
        for method, events in sorted(report["feedback_24h"].items()):
            told = ", ".join(f"{n} {event}" for event, n in sorted(events.items()))
            lines.append(f"  provider events ({method}): {told}")
        suppressed = report["suppressed"]
        total = sum(suppressed.values())
        lines.append(
            f"suppressed addresses: {total}"
            + (
                " (" + ", ".join(f"{c} {n}" for c, n in sorted(suppressed.items())) + ")"
                if total
                else ""
            )
        )
    if "workers" in report:
        lines += ["", f"workers: {len(report['workers'])}"]
        for w in report["workers"]:
            age = w["heartbeat_age_seconds"]
            lines.append(
                f"  {w['name']:<34} {w['state']:<10} heartbeat "
                f"{'never' if age is None else f'{age:.0f} s ago'}"
                f"{'  job ' + w['current_job'] if w['current_job'] else ''}"
            )
        for provider, b in sorted(report["breakers"].items()):
            retry = f", next try {b['next_retry']}" if b["state"] == "open" else ""
            lines.append(f"breaker {provider}: {b['state']} ({b['failure_count']} failures{retry})")
        if report["rq_failures_recent"]:
            lines.append(
                f"RQ jobs failed inside a worker in the last {RECENT_FAILURE_SECONDS // 60} min: "
                f"{report['rq_failures_recent']} (a worker may be unable to deliver; `rq info`)"
            )
        for name, q in report["queues"].items():
            lines.append(
                f"queue {name}: {q['queued']} waiting, {q['started']} started, "
                f"{q['failed']} failed, {q['deferred']} deferred, {q['scheduled']} scheduled"
            )
    if report["errors"]:
        lines += ["", *(f"error: {e}" for e in report["errors"])]
    return "\n".join(lines)


def _table(jobs: dict[str, dict[str, int]]) -> list[str]:
    header = f"{'jobs':<11}" + "".join(f"{m:>10}" for m in DeliveryMethod) + f"{'total':>10}"
    rows = [header]
    for status, by_method in jobs.items():
        cells = "".join(f"{by_method.get(m, 0):>10}" for m in DeliveryMethod)
        rows.append(f"{status:<11}{cells}{sum(by_method.values()):>10}")
    return rows


def _avg_p95(avg: float | None, p95: float | None) -> dict[str, float | None]:
    return {"avg": _ms(avg), "p95": _ms(p95)}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
